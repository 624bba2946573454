/* Conversational search page: a websocket client for /ws/search/<session>/.
 *
 * The server is the source of truth: on every (re)connect it sends a "state" event built from the
 * database, and the page re-renders from it, so a dropped connection loses nothing. Live events
 * then update the chat, the progress steps, the refined description, the previews and the grid.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("search-config").textContent);
  const storageKey = "dar.search." + config.catalog;
  const $ = (id) => document.getElementById(id);
  const els = {
    log: $("chat-log"),
    form: $("composer"),
    input: $("message"),
    send: $("send"),
    count: $("char-count"),
    formError: $("composer-error"),
    status: $("composer-status"),
    progress: $("progress"),
    refined: $("refined"),
    refinedSection: $("refined-section"),
    refinedUpdating: $("refined-updating"),
    fallback: $("refined-fallback"),
    editRefined: $("edit-refined"),
    editor: $("refined-editor"),
    editorInput: $("refined-input"),
    editorCancel: $("refined-cancel"),
    prompts: $("prompts"),
    previews: $("previews"),
    results: $("results"),
    resultsKind: $("results-kind"),
    timings: $("timings"), // only on staff users' pages
    connection: $("connection"),
    newSearch: $("new-search"),
    chips: $("filter-chips"),
    filterNotice: $("filter-notice"),
    filterForm: $("filter-form"),
    filterKey: $("filter-key"),
    filterValue: $("filter-value"),
    filterValuesField: $("filter-values-field"),
    filterPriceField: $("filter-price-field"),
    filterMin: $("filter-min"),
    filterMax: $("filter-max"),
    filterCurrency: $("filter-currency"),
    filterError: $("filter-error"),
  };
  const STEPS = ["text", "refine", "paint", "rank", "done"];

  let sessionId = null;
  let socket = null;
  let retryDelay = 1000;
  let retryTimer = null;
  let outbox = []; // frames typed while the socket was down; sent on open
  let currentTurn = -1;
  let feedback = {}; // item id -> 1 | -1
  // One turn at a time: while a turn runs the composer keeps what is typed but Send waits, so a
  // second message cannot overtake the first one's question.
  let busy = false;
  let queued = null; // the last turn.queued event of the current turn (overload), if any
  // The text of the last message sent: a refused message (busy, rate limited) is not stored by
  // the server, so the page puts it back into the composer for the shopper to send again.
  let lastSent = "";
  let lastSentRestates = false; // whether it was a rewrite of "what I understood"
  // While a turn runs the page expects events; after this long without any it asks for the
  // state again (a turn that ended while an event was lost, or one stuck in line, is then shown
  // as it is: the server fails turns past their time limit when the page restores).
  const QUIET_RESTORE_MS = 30000;
  let quietTimer = null;

  // --- small DOM helpers ---------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function scrollChat() {
    els.log.scrollTop = els.log.scrollHeight;
  }

  function setConnection(state, label) {
    els.connection.dataset.state = state;
    els.connection.querySelector(".connection-label").textContent = label;
  }

  // No session yet is the normal start, not a failure: the page opens one on the first message.
  function setReady() {
    setConnection("idle", "Ready");
  }

  function showFormError(message) {
    els.formError.textContent = message || "";
    els.formError.hidden = !message;
  }

  // --- session id: kept in the URL (shareable, survives reload) and in localStorage ------------

  function validId(value) {
    return /^[0-9a-f-]{36}$/i.test(value || "");
  }

  function loadSessionId() {
    const fromUrl = new URLSearchParams(window.location.search).get("session");
    if (validId(fromUrl)) return fromUrl;
    const stored = window.localStorage.getItem(storageKey);
    return validId(stored) ? stored : null;
  }

  function rememberSession(id) {
    sessionId = id;
    const url = new URL(window.location.href);
    if (id) {
      window.localStorage.setItem(storageKey, id);
      url.searchParams.set("session", id);
    } else {
      window.localStorage.removeItem(storageKey);
      url.searchParams.delete("session");
    }
    window.history.replaceState(null, "", url.toString());
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function createSession() {
    const response = await fetch(config.createSessionUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ catalog: config.catalog }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || "Could not start a search session.");
    return body.id;
  }

  // --- websocket with reconnect and backoff ----------------------------------------------------

  function connect() {
    if (!sessionId) return;
    clearTimeout(retryTimer);
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const url = scheme + window.location.host + config.socketPath.replace("SESSION", sessionId);
    setConnection("connecting", "connecting…");
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      retryDelay = 1000;
      setConnection("open", "live");
      const pending = outbox;
      outbox = [];
      pending.forEach((frame) => ws.send(frame));
    };
    ws.onmessage = (message) => {
      watchQuiet();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      handle(event);
    };
    ws.onclose = (closed) => {
      if (socket !== ws) return; // replaced by a newer socket (new search)
      socket = null;
      if (closed.code === 4403 || closed.code === 4404) {
        // Not ours (or gone): forget it and start fresh rather than retrying forever.
        rememberSession(null);
        setReady();
        addBubble("system", "That search session is not available; starting a new one.");
        return;
      }
      setConnection("retry", "reconnecting in " + Math.round(retryDelay / 1000) + " s");
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    };
  }

  function sendFrame(payload) {
    const frame = JSON.stringify(payload);
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame);
    else outbox.push(frame);
  }

  // --- events ----------------------------------------------------------------------------------

  function watchQuiet() {
    clearTimeout(quietTimer);
    quietTimer = null;
    if (!busy) return;
    quietTimer = setTimeout(() => {
      quietTimer = null;
      if (busy && socket && socket.readyState === WebSocket.OPEN) {
        sendFrame({ type: "restore" });
        watchQuiet();
      }
    }, QUIET_RESTORE_MS);
  }

  function handle(event) {
    switch (event.type) {
      case "state":
        renderState(event.session);
        break;
      case "turn.accepted":
        addTurnBubble(event.turn, event.message, event.filters, event.restates);
        if (event.filters && event.turn >= currentTurn) renderFilters(event.filters);
        startTurn(event.turn);
        setStep("text", "active", event.turn);
        setBusy(true);
        break;
      case "turn.queued":
        // Sent under overload: where this turn waits and for about how long.
        if (!isCurrent(event.turn)) break;
        startTurn(event.turn);
        queued = event;
        setBusy(true);
        break;
      case "turn.started":
        startTurn(event.turn);
        queued = null;
        setStep("text", "active", event.turn);
        setBusy(true);
        break;
      case "results":
        if (!isCurrent(event.turn)) break;
        renderResults(event.items, event.final, event.turn);
        if (event.final) {
          // Text-only results do not wait in line; the rest of the turn may still (turn.started).
          queued = null;
          updateComposer();
          setStep("rank", "done", event.turn);
          // The question is part of the turn: the chat shows it being written, and "Done" waits
          // for it (turn.done) rather than spinning.
          if (config.askQuestions) {
            els.progress.dataset.stage = "asking";
            showAsking(event.turn);
          }
        } else {
          setStep("text", "done", event.turn);
          setStep("refine", "active", event.turn);
        }
        break;
      case "query.refined":
        if (!isCurrent(event.turn)) break;
        renderRefined(event.description, event.prompts, event.fallback, event.note);
        setStep("refine", "done", event.turn);
        setStep("paint", "active", event.turn);
        break;
      case "previews":
        if (!isCurrent(event.turn)) break;
        renderPreviews(event.images);
        setStep("paint", "done", event.turn);
        setStep("rank", "active", event.turn);
        break;
      case "question":
        // A question about an earlier turn, arriving after the shopper's next message, would
        // answer nothing: it is dropped.
        if (event.turn < currentTurn) break;
        hideAsking();
        addBubble("assistant question", event.question, event.turn);
        break;
      case "notice":
        // E.g. a message in a language the configured models do not read.
        if (!isCurrent(event.turn)) break;
        addBubble("system notice", event.message, event.turn);
        break;
      case "turn.done":
        if (!isCurrent(event.turn)) break;
        hideAsking();
        STEPS.forEach((step) => setStep(step, "done", event.turn));
        renderTimings(event.timings);
        setRefinedUpdating(false);
        setBusy(false);
        break;
      case "feedback":
        if (event.value) feedback[event.item] = event.value;
        else delete feedback[event.item];
        refreshFeedbackButtons();
        break;
      case "error":
        handleError(event);
        break;
      default:
        break;
    }
  }

  function isCurrent(turn) {
    return turn === currentTurn || turn > currentTurn;
  }

  function startTurn(turn) {
    if (turn < currentTurn) return;
    if (turn > currentTurn) {
      currentTurn = turn;
      resetProgress();
      // What is shown is the previous turn's until this one's query.refined arrives.
      setRefinedUpdating(true);
    }
  }

  function handleError(event) {
    const text = event.message || "Something went wrong.";
    if (event.turn === null || event.turn === undefined) {
      // The message was refused (too long, too fast, too busy...): nothing was stored and no turn
      // runs; the text goes back where it was typed (unless something new was typed meanwhile).
      if (lastSent && lastSentRestates) {
        openEditor(lastSent);
      } else if (lastSent && !els.input.value.trim()) {
        els.input.value = lastSent;
        updateCount();
      }
      lastSent = "";
      showFormError(text);
      setRefinedUpdating(false);
      setBusy(false);
      return;
    }
    addBubble("system error", text, event.turn);
    if (event.turn >= currentTurn) {
      hideAsking();
      // Results shown so far stay; they will not be refined any more.
      if (els.results.dataset.final !== "true" && !els.resultsKind.hidden) {
        els.resultsKind.textContent = "from your words";
      }
      const active = els.progress.querySelector("[data-state='active']");
      if (active) active.dataset.state = "failed";
      els.progress.dataset.stage = "failed";
      // The earlier description stays, no longer marked as about to change.
      setRefinedUpdating(false);
      setBusy(false);
    }
  }

  // --- rendering ---------------------------------------------------------------------------

  function renderState(session) {
    feedback = {};
    Object.keys(session.feedback || {}).forEach((id) => (feedback[id] = session.feedback[id]));
    els.log.querySelectorAll(".bubble:not(.intro)").forEach((node) => node.remove());
    currentTurn = -1;
    setBusy(false);
    resetProgress();
    clearUnderstanding();
    const turns = session.turns || [];
    // Before the first message: what was picked waits for it.
    if (!turns.length) renderPicked(session.filters);
    turns.forEach((turn) => {
      addTurnBubble(turn.index, turn.message, turn.filters, turn.restates);
      if (turn.question) addBubble("assistant question", turn.question, turn.index);
      if (turn.error) addBubble("system error", turn.error.message, turn.index);
    });
    if (!turns.length) return;
    const last = turns[turns.length - 1];
    currentTurn = last.index;
    renderFilters(last.filters);
    // Show the latest turn that produced anything, so a failed last turn keeps earlier results.
    const shown = [...turns].reverse().find((t) => t.results.length || t.refined_query) || last;
    if (shown.refined_query) renderRefined(shown.refined_query, shown.prompts, shown.fallback);
    if (shown.previews.length) renderPreviews(shown.previews);
    if (shown.results.length) renderResults(shown.results, shown.final, shown.index);
    restoreProgress(last);
    if (last.timings && last.status === "done") renderTimings(last.timings);
    if (last.status === "failed" && !shown.final && shown.results.length) {
      els.resultsKind.textContent = "from your words";
    }
    const running = last.status === "queued" || last.status === "running";
    setRefinedUpdating(running && !last.refined_query);
    setBusy(running);
    if (last.queue) {
      queued = last.queue;
      updateComposer();
    }
  }

  function restoreProgress(turn) {
    if (turn.status === "done") {
      STEPS.forEach((step) => setStep(step, "done", turn.index));
      return;
    }
    if (turn.status === "failed") {
      els.progress.dataset.stage = "failed";
      return;
    }
    // Queued or running: mark what the stored output proves finished, the next step active.
    const finished = [];
    if (turn.results.length) finished.push("text");
    if (turn.refined_query) finished.push("refine");
    if (turn.previews.length || (turn.refined_query && !config.previewsPerTurn)) finished.push("paint");
    if (turn.final) finished.push("rank");
    finished.forEach((step) => setStep(step, "done", turn.index));
    const next = STEPS.find((step) => !finished.includes(step));
    if (next === "done") {
      // Final results are out: what is left is the question (or the turn's last write).
      els.progress.dataset.stage = "asking";
      if (config.askQuestions) showAsking(turn.index);
    } else if (next) {
      setStep(next, "active", turn.index);
    }
  }

  // A turn that searches the latest message again with changed filters said nothing new.
  function addTurnBubble(turn, message, filters, restates) {
    if (filters && filters.again) {
      if (els.log.querySelector(".bubble.again[data-turn='" + turn + "']")) return;
      addBubble("system again", "Searching again with the filters changed.", turn);
    } else {
      addUserBubble(turn, message, restates);
    }
  }

  function addUserBubble(turn, message, restates) {
    if (els.log.querySelector(".bubble.user[data-turn='" + turn + "']")) return;
    const node = addBubble("user", message, turn);
    if (restates) {
      // A rewrite of what the search understood: the dialogue starts again from it.
      node.prepend(el("span", "restated-label", "Corrected description:"));
    }
  }

  function addBubble(kind, text, turn) {
    const node = el("li", "bubble " + kind, text);
    if (turn !== undefined && turn !== null) node.dataset.turn = turn;
    els.log.appendChild(node);
    scrollChat();
    return node;
  }

  function resetProgress() {
    els.progress.dataset.stage = "idle";
    els.progress.querySelectorAll("li").forEach((li) => delete li.dataset.state);
    if (els.timings) els.timings.textContent = "";
    hideAsking();
  }

  function showAsking(turn) {
    if ($("asking")) return;
    const node = addBubble("assistant typing", "Thinking of a question…", turn);
    node.id = "asking";
  }

  function hideAsking() {
    const node = $("asking");
    if (node) node.remove();
  }

  function setStep(step, state, turn) {
    if (turn !== undefined && turn < currentTurn) return;
    const li = els.progress.querySelector("[data-step='" + step + "']");
    if (!li) return;
    // Steps only move forward: an earlier step finishing implies nothing about later ones.
    if (li.dataset.state === "done" && state === "active") return;
    li.dataset.state = state;
    // The last step is active while the LLM thinks of a question: the stage says "asking" then,
    // and "done" only once the turn is really over.
    if (state === "active") els.progress.dataset.stage = step;
    if (step === "done" && state === "done") els.progress.dataset.stage = "done";
  }

  function clearUnderstanding() {
    setRefinedUpdating(false);
    els.refined.textContent = "Nothing yet.";
    els.refined.classList.add("muted");
    els.fallback.hidden = true;
    els.editRefined.hidden = true;
    closeEditor();
    els.prompts.replaceChildren();
    els.previews.replaceChildren(el("div", "preview placeholder", "no preview yet"));
    els.results.replaceChildren(
      el("p", "empty", "Results appear here as soon as you send a description.")
    );
    els.results.dataset.final = "false";
    els.results.dataset.turn = "";
    els.resultsKind.hidden = true;
  }

  // While a new turn runs the previous description stays readable but is marked as about to be
  // replaced (muted, "Updating…"); aria-busy holds the polite announcement until it is.
  function setRefinedUpdating(value) {
    els.refinedSection.dataset.updating = value ? "true" : "false";
    els.refinedUpdating.hidden = !value;
    els.refined.setAttribute("aria-busy", value ? "true" : "false");
  }

  function renderRefined(description, prompts, fallback, note) {
    setRefinedUpdating(false);
    els.refined.textContent = description || "";
    els.refined.classList.toggle("muted", !description);
    els.editRefined.hidden = !description;
    els.fallback.hidden = !fallback;
    // Why the language model's description was not used (invented words, dropped the latest
    // message, too long, another language): the page says so.
    els.fallback.title = note || "";
    // A prompt that only repeats the description (the shopper's own words searched) says nothing
    // new: shown once, above, is enough.
    els.prompts.replaceChildren(
      ...(prompts || []).filter((p) => !sameText(p, description)).map((p) => el("li", null, p))
    );
  }

  function sameText(a, b) {
    return (a || "").trim().toLowerCase() === (b || "").trim().toLowerCase();
  }

  function renderPreviews(images) {
    if (!images || !images.length) {
      els.previews.replaceChildren(el("div", "preview placeholder", "no preview this turn"));
      return;
    }
    els.previews.replaceChildren(
      ...images.map((image) => {
        const img = el("img", "preview");
        img.src = image.url;
        img.alt = "Generated preview: " + (image.prompt || "");
        img.title = image.prompt || "";
        return img;
      })
    );
  }

  function renderResults(items, final, turn) {
    els.results.dataset.final = final ? "true" : "false";
    els.results.dataset.turn = String(turn);
    els.resultsKind.hidden = false;
    els.resultsKind.textContent = final ? "final" : "from your words, refining…";
    els.resultsKind.classList.toggle("provisional", !final);
    if (!items.length) {
      els.results.replaceChildren(el("p", "empty", "No indexed items match yet."));
      return;
    }
    els.results.replaceChildren(...items.map(resultCard));
    refreshFeedbackButtons();
  }

  function resultCard(item) {
    const card = el("article", "result-card");
    card.dataset.itemId = item.id;
    const figure = el("div", "result-image");
    const img = el("img");
    img.src = item.image;
    img.alt = item.title;
    img.loading = "lazy";
    figure.appendChild(img);
    figure.appendChild(el("span", "rank", "#" + item.rank));
    const body = el("div", "result-body");
    const title = el("h3", "result-title", item.title);
    title.title = item.title;
    body.appendChild(title);
    const offer = productLine(item);
    if (offer) body.appendChild(offer);
    // Scores mean something to staff tuning the search, not to shoppers.
    if (config.showTimings) {
      body.appendChild(el("span", "score small muted", "score " + Number(item.score).toFixed(3)));
    }
    const meta = el("div", "result-meta");
    // The product page when the shop gave one, else the item's picture.
    const open = el("a", "result-open", "Open");
    open.href = item.url || item.image;
    open.target = "_blank";
    open.rel = "noopener";
    open.setAttribute("aria-label", "Open " + item.title);
    // The link opens on its own (no preventDefault, so it works as a plain link); the click is
    // recorded alongside it for the analysts' funnel.
    open.addEventListener("click", () => recordClick(item.id));
    meta.appendChild(open);
    const actions = el("div", "feedback");
    actions.appendChild(feedbackButton(item.id, 1, "♥", "Like " + item.title + ": more like this"));
    actions.appendChild(feedbackButton(item.id, -1, "✕", "Dislike " + item.title + ": less like this"));
    meta.appendChild(actions);
    body.appendChild(meta);
    card.appendChild(figure);
    card.appendChild(body);
    return card;
  }

  const AVAILABILITY = {
    in_stock: "In stock",
    out_of_stock: "Out of stock",
    preorder: "Pre-order",
    backorder: "Backorder",
  };

  // Price (in the shopper's locale, in the item's currency) and availability, when the item is
  // a product; nothing for a plain picture.
  function productLine(item) {
    if (item.price == null && !item.brand) return null;
    const line = el("p", "result-offer small");
    if (item.price != null) {
      let text = item.price + (item.currency ? " " + item.currency : "");
      if (item.currency) {
        try {
          text = new Intl.NumberFormat(undefined, { style: "currency", currency: item.currency })
            .format(Number(item.price));
        } catch (e) { /* an unknown code: shown as given */ }
      }
      line.appendChild(el("strong", "result-price", text));
    }
    if (item.availability && AVAILABILITY[item.availability]) {
      line.appendChild(el("span", "result-availability availability-" + item.availability,
        " · " + AVAILABILITY[item.availability]));
    }
    if (item.brand) line.appendChild(el("span", "result-brand muted", " · " + item.brand));
    return line;
  }

  function recordClick(itemId) {
    if (!sessionId) return;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "click", item: itemId }));
      return;
    }
    // No socket: a keep-alive POST survives the page being left, like navigator.sendBeacon, but
    // unlike a beacon it can carry the CSRF header the API requires.
    fetch(config.clickUrl.replace("SESSION", sessionId), {
      method: "POST",
      credentials: "same-origin",
      keepalive: true,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ item: itemId }),
    }).catch(() => {});
  }

  function feedbackButton(itemId, value, label, title) {
    const button = el("button", "feedback-button", label);
    button.type = "button";
    button.title = title;
    button.setAttribute("aria-label", title);
    button.dataset.value = value;
    button.setAttribute("aria-pressed", feedback[itemId] === value ? "true" : "false");
    button.addEventListener("click", () => {
      // Clicking the active opinion again takes it back.
      sendFrame({ type: "feedback", item: itemId, value: feedback[itemId] === value ? 0 : value });
    });
    return button;
  }

  function refreshFeedbackButtons() {
    els.results.querySelectorAll(".result-card").forEach((card) => {
      const value = feedback[card.dataset.itemId];
      card.dataset.feedback = value === 1 ? "like" : value === -1 ? "dislike" : "";
      card.querySelectorAll(".feedback-button").forEach((button) => {
        button.setAttribute("aria-pressed", Number(button.dataset.value) === value ? "true" : "false");
      });
    });
  }

  function renderTimings(timings) {
    if (!timings || !els.timings) return;
    const parts = ["text", "refine", "generate", "rank", "ask"]
      .filter((k) => timings[k] !== undefined)
      .map((k) => k + " " + formatMs(timings[k]));
    els.timings.textContent =
      (timings.total !== undefined ? "took " + formatMs(timings.total) + " · " : "") + parts.join(" · ");
  }

  function formatMs(ms) {
    return ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms) + " ms";
  }

  // --- filters: chips of what the turn ranks with, and the facet picker ------------------------

  function renderFilters(filters) {
    const active = (filters && filters.active) || [];
    const relaxed = (filters && filters.relaxed) || [];
    const chips = active.map((f) => filterChip(f, true)).concat(relaxed.map((f) => filterChip(f, false)));
    els.chips.replaceChildren(...(chips.length ? chips : [noFilters()]));
    const notice = (filters && filters.notice) || "";
    els.filterNotice.textContent = notice;
    els.filterNotice.hidden = !notice;
  }

  function renderPicked(state) {
    const picked = (state && state.picked) || [];
    renderFilters({ active: picked, relaxed: [], notice: "" });
  }

  function noFilters() {
    return el("li", "filter-empty small muted", "None: say “under 40 euros” or “in stock”, or pick one below.");
  }

  function filterChip(filter, removable) {
    const chip = el("li", "chip" + (removable ? "" : " relaxed"));
    chip.dataset.key = filter.key;
    chip.dataset.source = filter.source;
    chip.appendChild(el("span", "chip-label", filter.label));
    if (!removable) {
      chip.title = "Let go: nothing matched every filter";
      return chip;
    }
    chip.title = filter.source === "picked" ? "You picked this" : "From what you said";
    const remove = el("button", "chip-remove", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", "Remove filter: " + filter.label);
    remove.addEventListener("click", () => changeFilters({ remove: [filter.key] }));
    chip.appendChild(remove);
    return chip;
  }

  function showFilterError(message) {
    els.filterError.textContent = message || "";
    els.filterError.hidden = !message;
  }

  // Picked or removed filters search the latest message again (a new turn whose events arrive on
  // the socket); before the first message they wait for it.
  async function changeFilters(change) {
    if (busy) {
      showFilterError("Wait until this search is done, then change the filters.");
      return;
    }
    showFilterError("");
    try {
      if (!sessionId) {
        rememberSession(await createSession());
        connect();
      }
      const response = await fetch(config.filtersUrl.replace("SESSION", sessionId), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(change),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.message || "Could not change the filters.");
      if (body.turn) {
        setBusy(true);
        renderFilters(body.turn.filters);
      } else {
        renderPicked(body.filters);
      }
    } catch (err) {
      showFilterError(err.message);
    }
  }

  const facets = config.facets || { values: {}, currencies: [], availability: [] };

  function option(value, label) {
    const node = el("option", null, label);
    node.value = value;
    return node;
  }

  function setupPicker() {
    const keys = [];
    if (facets.currencies.length) keys.push(option("price", "price"));
    keys.push(option("availability", "availability"));
    Object.keys(facets.values).forEach((key) => keys.push(option(key, key.replace(/_/g, " "))));
    els.filterKey.replaceChildren(...keys);
    els.filterCurrency.replaceChildren(...facets.currencies.map((c) => option(c, c)));
    els.filterKey.addEventListener("change", pickerKeyChanged);
    els.filterForm.addEventListener("submit", applyPicked);
    pickerKeyChanged();
  }

  function pickerKeyChanged() {
    const key = els.filterKey.value;
    const price = key === "price";
    els.filterPriceField.hidden = !price;
    els.filterValuesField.hidden = price;
    if (price) return;
    const values = key === "availability" ? facets.availability : facets.values[key] || [];
    els.filterValue.replaceChildren(
      ...values.map((v) => option(v, key === "availability" ? AVAILABILITY[v] || v : v))
    );
  }

  function applyPicked(event) {
    event.preventDefault();
    const key = els.filterKey.value;
    let filter;
    if (key === "price") {
      filter = { key: key, currency: els.filterCurrency.value };
      // The server checks the numbers (a clear message for a negative or missing one).
      if (els.filterMin.value !== "") filter.min = els.filterMin.value;
      if (els.filterMax.value !== "") filter.max = els.filterMax.value;
    } else {
      filter = { key: key, values: [els.filterValue.value] };
    }
    changeFilters({ set: [filter] });
  }

  // --- composing -----------------------------------------------------------------------------

  // What the server would refuse, said before sending: empty or too long (nothing is cut).
  function textProblem(text) {
    if (!text) return "Describe what you are looking for.";
    if (text.length > config.maxChars) return tooLongMessage(text.length);
    return "";
  }

  async function submit(event) {
    event.preventDefault();
    const text = els.input.value.trim();
    const problem = textProblem(text);
    if (problem) {
      showFormError(problem);
      return;
    }
    if (busy) {
      updateComposer();
      return;
    }
    showFormError("");
    setBusy(true);
    try {
      if (!sessionId) {
        rememberSession(await createSession());
        connect();
      }
      sendFrame({ type: "message", text: text });
      setRefinedUpdating(true);
      lastSent = text;
      lastSentRestates = false;
      els.input.value = "";
      updateCount();
    } catch (err) {
      // The server could not be reached (fetch rejects with a TypeError; a refusal it answered
      // is only said in the form): that is a failed connection, not a page waiting to start.
      if (err instanceof TypeError) setConnection("failed", "not connected");
      showFormError(err.message);
      setBusy(false);
    } finally {
      els.input.focus();
    }
  }

  // --- correcting "what I understood" -----------------------------------------------------------

  function openEditor(text) {
    els.editorInput.value = text;
    els.editor.hidden = false;
    els.refined.hidden = true;
    els.editRefined.setAttribute("aria-expanded", "true");
    els.editorInput.focus();
  }

  function closeEditor() {
    els.editor.hidden = true;
    els.refined.hidden = false;
    els.editRefined.setAttribute("aria-expanded", "false");
  }

  function submitCorrection(event) {
    event.preventDefault();
    const text = els.editorInput.value.trim();
    const problem = textProblem(text);
    if (problem) {
      showFormError(problem);
      return;
    }
    if (busy || !sessionId) return;
    showFormError("");
    setBusy(true);
    sendFrame({ type: "message", text: text, restate: true });
    setRefinedUpdating(true);
    lastSent = text;
    lastSentRestates = true;
    closeEditor();
    els.editRefined.focus();
  }

  function tooLongMessage(length) {
    return (
      "Your message has " + length + " characters; at most " + config.maxChars +
      " are sent. Shorten it before sending (nothing has been cut)."
    );
  }

  function setBusy(value) {
    busy = value;
    if (!value) queued = null;
    watchQuiet();
    updateComposer();
  }

  function updateComposer() {
    const length = els.input.value.length;
    const over = length > config.maxChars;
    els.form.dataset.busy = busy ? "true" : "false";
    els.send.disabled = busy || over;
    els.editRefined.disabled = busy;
    $("refined-send").disabled = busy;
    els.send.textContent = busy ? "Searching…" : "Send";
    let status = "";
    if (busy && queued) {
      const wait = queued.expected_wait_s;
      status = "Busy: refining waits in line (position " + queued.position +
        (wait ? ", about " + Math.max(1, Math.round(wait)) + " s" : "") + "). ";
    } else if (busy) {
      status = "Searching… ";
    }
    if (busy) status += "You can type your next message and send it once this turn is done.";
    els.status.textContent = status;
    els.status.hidden = !status;
    if (over) showFormError(tooLongMessage(length));
    else if (els.formError.textContent.indexOf("characters; at most") !== -1) showFormError("");
  }

  function updateCount() {
    const length = els.input.value.length;
    els.count.textContent = length + " / " + config.maxChars;
    // Warn from 90 % on, before anything would be refused.
    els.count.dataset.state =
      length > config.maxChars ? "over" : length >= config.maxChars * 0.9 ? "near" : "ok";
    updateComposer();
  }

  function newSearch() {
    const old = socket;
    socket = null;
    if (old) old.close();
    clearTimeout(retryTimer);
    outbox = [];
    rememberSession(null);
    feedback = {};
    currentTurn = -1;
    els.log.querySelectorAll(".bubble:not(.intro)").forEach((node) => node.remove());
    resetProgress();
    clearUnderstanding();
    renderFilters(null);
    showFilterError("");
    setBusy(false);
    setReady();
    els.input.focus();
  }

  els.form.addEventListener("submit", submit);
  els.input.addEventListener("input", updateCount);
  els.input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter starts a new line.
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      els.form.requestSubmit();
    }
  });
  els.newSearch.addEventListener("click", newSearch);
  setupPicker();
  els.editRefined.addEventListener("click", () => openEditor(els.refined.textContent));
  els.editorCancel.addEventListener("click", () => {
    closeEditor();
    els.editRefined.focus();
  });
  els.editor.addEventListener("submit", submitCorrection);
  els.editorInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      els.editor.requestSubmit();
    }
    if (event.key === "Escape") {
      closeEditor();
      els.editRefined.focus();
    }
  });

  sessionId = loadSessionId();
  if (sessionId) {
    rememberSession(sessionId);
    connect();
  }
})();
