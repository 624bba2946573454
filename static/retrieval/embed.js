/* DAR search on a shop's own pages: the <dar-search> custom element (shadow DOM).
 *
 *   <script src="https://search.example/static/retrieval/embed.js" data-key="pk_..." async></script>
 *
 * puts the widget where the script tag stands; or define it yourself anywhere on the page:
 *
 *   <dar-search key="pk_..." server="https://search.example"></dar-search>
 *
 * It talks to its server without cookies (they are blocked across sites): each request carries
 * the catalog's publishable key (X-Dar-Key), the browser adds the page's Origin (which the catalog
 * must allow exactly), and the session token answered when the session was created proves the
 * session is this page's (X-Dar-Session-Token; on the websocket, the first "auth" frame).
 * Colours, fonts and sizes come from CSS custom properties (--dar-*, see embed.css), which pass
 * into the shadow DOM: `dar-search { --dar-accent: #0a6; }` on the shop's page re-themes it.
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const SCRIPT_URL = script && script.src ? script.src : "";
  const STYLE_URL = SCRIPT_URL ? new URL("embed.css", SCRIPT_URL).href : "";

  // Where a result links to: the shop's product page when the item has one, else its picture.
  // Items carry no product URL yet; this is the one place to change when they do.
  function productUrl(item, server) {
    return new URL(item.url || item.product_url || item.image, server).href;
  }

  // Called when a shopper opens a result: the place to record the click for the shop's analytics
  // (POST /api/search/sessions/<id>/clicks/ once the server has it). Must never block the link.
  function recordClick(widget, item) {
    // Recorded for the shop's analysts (a ProductClick, as from our own page), over the socket
    // the widget already holds; the shop's page can also listen for the event.
    widget.sendFrame({ type: "click", item: item.id });
    widget.dispatchEvent(
      new CustomEvent("dar-result-click", { bubbles: true, composed: true, detail: { item: item } })
    );
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const UNREACHABLE =
    "Search is not available on this page: the search server refused this site's origin " +
    "or cannot be reached.";

  class DarSearch extends HTMLElement {
    constructor() {
      super();
      this.root = this.attachShadow({ mode: "open" });
      this.session = null; // {id, token}
      this.socket = null;
      this.authed = false;
      this.outbox = [];
      this.busy = false;
      this.maxChars = 1000;
      this.currentTurn = -1;
      this.feedback = {};
      this.retryDelay = 1000;
      this.stopped = false;
    }

    get key() {
      return this.getAttribute("key") || "";
    }

    get server() {
      const given = this.getAttribute("server");
      return new URL(given || SCRIPT_URL || window.location.href).origin;
    }

    get storageKey() {
      return "dar.widget." + this.key;
    }

    connectedCallback() {
      if (this.els) return;
      this.render();
      const stored = this.loadSession();
      if (stored) {
        this.session = stored;
        this.connect();
      }
    }

    disconnectedCallback() {
      this.stopped = true;
      if (this.socket) this.socket.close();
    }

    // --- layout ---------------------------------------------------------------------------

    render() {
      const root = this.root;
      if (STYLE_URL) {
        const link = el("link");
        link.rel = "stylesheet";
        link.href = STYLE_URL;
        root.appendChild(link);
      }
      const box = el("section", "dar");
      box.setAttribute("part", "container");
      box.setAttribute("aria-label", this.getAttribute("label") || "Product search");
      const heading = el("h2", "dar-heading", this.getAttribute("heading") || "Find it by describing it");
      const log = el("ol", "dar-log");
      log.setAttribute("aria-live", "polite");
      log.setAttribute("aria-label", "Conversation");
      const form = el("form", "dar-composer");
      const label = el("label", "dar-label", "Describe what you are looking for");
      label.htmlFor = "dar-input";
      const input = el("textarea", "dar-input");
      input.id = "dar-input";
      input.rows = 2;
      input.placeholder = this.getAttribute("placeholder") || "e.g. a red summer dress with pockets";
      const row = el("div", "dar-row");
      const count = el("span", "dar-count");
      count.setAttribute("aria-live", "polite");
      const send = el("button", "dar-send", "Search");
      send.type = "submit";
      const reset = el("button", "dar-reset", "New search");
      reset.type = "button";
      row.append(count, reset, send);
      const error = el("p", "dar-error");
      error.setAttribute("role", "alert");
      error.hidden = true;
      const status = el("p", "dar-status");
      status.setAttribute("aria-live", "polite");
      status.hidden = true;
      form.append(label, input, row, error, status);
      const refined = el("p", "dar-refined");
      refined.hidden = true;
      const results = el("ul", "dar-results");
      results.setAttribute("aria-label", "Results");
      box.append(heading, log, form, refined, results);
      root.appendChild(box);
      this.els = { box, log, form, input, count, send, reset, error, status, refined, results };

      form.addEventListener("submit", (event) => this.submit(event));
      input.addEventListener("input", () => this.updateComposer());
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      reset.addEventListener("click", () => this.newSearch());
      this.updateComposer();
    }

    // --- session: created over REST, kept for this tab in sessionStorage ----------------------

    loadSession() {
      try {
        const stored = JSON.parse(window.sessionStorage.getItem(this.storageKey) || "null");
        return stored && stored.id && stored.token ? stored : null;
      } catch (err) {
        return null;
      }
    }

    saveSession(session) {
      this.session = session;
      try {
        if (session) window.sessionStorage.setItem(this.storageKey, JSON.stringify(session));
        else window.sessionStorage.removeItem(this.storageKey);
      } catch (err) {
        /* storage may be disabled: the widget then forgets its search on reload */
      }
    }

    async createSession() {
      let response;
      try {
        response = await fetch(this.server + "/api/search/sessions/", {
          method: "POST",
          mode: "cors",
          credentials: "omit",
          headers: { "Content-Type": "application/json", "X-Dar-Key": this.key },
          body: "{}",
        });
      } catch (err) {
        throw new Error(UNREACHABLE);
      }
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.message || "Could not start a search.");
      if (body.max_chars) this.maxChars = body.max_chars;
      return { id: body.id, token: body.token };
    }

    // --- websocket -------------------------------------------------------------------------

    connect() {
      if (!this.session || this.stopped) return;
      clearTimeout(this.retryTimer);
      const url = this.server.replace(/^http/, "ws") + "/ws/search/" + this.session.id + "/";
      const ws = new WebSocket(url);
      this.socket = ws;
      this.authed = false;
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "auth", key: this.key, token: this.session.token }));
      };
      ws.onmessage = (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch (err) {
          return;
        }
        this.handle(event);
      };
      ws.onclose = (closed) => {
        if (this.socket !== ws) return;
        this.socket = null;
        this.authed = false;
        if (closed.code === 4403 || closed.code === 4404) {
          // Refused (wrong key or origin, or a session that is gone): do not retry.
          this.saveSession(null);
          this.setBusy(false);
          return;
        }
        if (closed.code === 1006 && !this.everOpened) {
          this.showError(UNREACHABLE);
          this.setBusy(false);
          return;
        }
        this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, 15000);
      };
    }

    sendFrame(payload) {
      const frame = JSON.stringify(payload);
      if (this.socket && this.authed && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(frame);
      } else {
        this.outbox.push(frame);
      }
    }

    // --- events ----------------------------------------------------------------------------

    handle(event) {
      switch (event.type) {
        case "state": {
          this.authed = true;
          this.everOpened = true;
          this.retryDelay = 1000;
          this.renderState(event.session);
          const pending = this.outbox;
          this.outbox = [];
          pending.forEach((frame) => this.socket.send(frame));
          break;
        }
        case "turn.accepted":
          this.addBubble("user", event.message, event.turn);
          this.startTurn(event.turn);
          this.setBusy(true);
          break;
        case "turn.queued":
          this.setStatus(
            "Waiting in line (position " + event.position + ", about " +
              Math.max(1, Math.round(event.expected_wait_s || 0)) + " s)…"
          );
          break;
        case "results":
          if (event.turn < this.currentTurn) break;
          this.renderResults(event.items, event.final);
          break;
        case "query.refined":
          if (event.turn < this.currentTurn) break;
          this.renderRefined(event.description);
          break;
        case "question":
          this.addBubble("assistant", event.question, event.turn);
          break;
        case "turn.done":
          if (event.turn < this.currentTurn) break;
          this.setBusy(false);
          break;
        case "feedback":
          if (event.value) this.feedback[event.item] = event.value;
          else delete this.feedback[event.item];
          this.refreshFeedback();
          break;
        case "error":
          this.showError(event.message || "Something went wrong.");
          if (event.turn === null || event.turn === undefined || event.turn >= this.currentTurn) {
            this.setBusy(false);
          }
          break;
        default:
          break;
      }
    }

    startTurn(turn) {
      if (turn > this.currentTurn) this.currentTurn = turn;
    }

    renderState(session) {
      this.feedback = Object.assign({}, session.feedback || {});
      this.els.log.replaceChildren();
      const turns = session.turns || [];
      turns.forEach((turn) => {
        this.addBubble("user", turn.message, turn.index);
        if (turn.question) this.addBubble("assistant", turn.question, turn.index);
        if (turn.error) this.addBubble("error", turn.error.message, turn.index);
      });
      if (!turns.length) {
        this.setBusy(this.outbox.length > 0);
        return;
      }
      const last = turns[turns.length - 1];
      this.currentTurn = last.index;
      const shown = [...turns].reverse().find((t) => t.results.length) || last;
      this.renderRefined(shown.refined_query);
      this.renderResults(shown.results, shown.final);
      this.setBusy(last.status === "queued" || last.status === "running");
    }

    addBubble(kind, text, turn) {
      const node = el("li", "dar-bubble dar-" + kind, text);
      if (turn !== undefined && turn !== null) node.dataset.turn = turn;
      this.els.log.appendChild(node);
      this.els.log.scrollTop = this.els.log.scrollHeight;
    }

    renderRefined(description) {
      this.els.refined.hidden = !description;
      this.els.refined.textContent = description ? "Looking for: " + description : "";
    }

    renderResults(items, final) {
      const list = this.els.results;
      list.dataset.final = final ? "true" : "false";
      if (!items.length) {
        list.replaceChildren(el("li", "dar-empty", "Nothing matches yet: try other words."));
        return;
      }
      list.replaceChildren(...items.map((item) => this.card(item)));
      this.refreshFeedback();
    }

    card(item) {
      const server = this.server;
      const li = el("li", "dar-card");
      li.dataset.itemId = item.id;
      const link = el("a", "dar-link");
      link.href = productUrl(item, server);
      link.target = "_blank";
      link.rel = "noopener";
      link.addEventListener("click", () => recordClick(this, item));
      const img = el("img", "dar-image");
      img.src = new URL(item.image, server).href;
      img.alt = "";
      img.loading = "lazy";
      link.append(img, el("span", "dar-title", item.title));
      const actions = el("div", "dar-feedback");
      actions.append(
        this.feedbackButton(item, 1, "♥", "More like " + item.title),
        this.feedbackButton(item, -1, "✕", "Less like " + item.title)
      );
      li.append(link, actions);
      return li;
    }

    feedbackButton(item, value, symbol, label) {
      const button = el("button", "dar-opinion", symbol);
      button.type = "button";
      button.dataset.value = value;
      button.title = label;
      button.setAttribute("aria-label", label);
      button.addEventListener("click", () => {
        const current = this.feedback[item.id];
        this.sendFrame({ type: "feedback", item: item.id, value: current === value ? 0 : value });
      });
      return button;
    }

    refreshFeedback() {
      this.els.results.querySelectorAll(".dar-card").forEach((card) => {
        const value = this.feedback[card.dataset.itemId];
        card.querySelectorAll(".dar-opinion").forEach((button) => {
          button.setAttribute("aria-pressed", Number(button.dataset.value) === value ? "true" : "false");
        });
      });
    }

    // --- composing -------------------------------------------------------------------------

    async submit(event) {
      event.preventDefault();
      const text = this.els.input.value.trim();
      if (!text) {
        this.showError("Describe what you are looking for.");
        return;
      }
      if (text.length > this.maxChars) {
        this.showError(this.tooLong(text.length));
        return;
      }
      if (this.busy) return;
      this.showError("");
      this.setBusy(true);
      try {
        if (!this.session) {
          this.saveSession(await this.createSession());
          this.connect();
        }
        this.sendFrame({ type: "message", text: text });
        this.els.input.value = "";
        this.updateComposer();
      } catch (err) {
        this.showError(err.message);
        this.setBusy(false);
      }
    }

    tooLong(length) {
      return "Your message has " + length + " characters; at most " + this.maxChars +
        " are sent. Please shorten it (nothing has been cut).";
    }

    newSearch() {
      const old = this.socket;
      this.socket = null;
      if (old) old.close();
      this.outbox = [];
      this.saveSession(null);
      this.currentTurn = -1;
      this.feedback = {};
      this.els.log.replaceChildren();
      this.els.results.replaceChildren();
      this.renderRefined("");
      this.showError("");
      this.setBusy(false);
      this.els.input.focus();
    }

    showError(message) {
      this.els.error.textContent = message || "";
      this.els.error.hidden = !message;
    }

    setStatus(message) {
      this.els.status.textContent = message || "";
      this.els.status.hidden = !message;
    }

    setBusy(value) {
      this.busy = value;
      this.els.box.dataset.busy = value ? "true" : "false";
      this.setStatus(value ? "Searching…" : "");
      this.updateComposer();
    }

    updateComposer() {
      const length = this.els.input.value.length;
      const over = length > this.maxChars;
      this.els.send.disabled = this.busy || over;
      this.els.send.textContent = this.busy ? "Searching…" : "Search";
      this.els.count.textContent = length >= this.maxChars * 0.9 ? length + " / " + this.maxChars : "";
      this.els.count.dataset.state = over ? "over" : "ok";
      if (over) this.showError(this.tooLong(length));
      else if (this.els.error.textContent.indexOf("characters; at most") !== -1) this.showError("");
    }
  }

  if (!window.customElements.get("dar-search")) {
    window.customElements.define("dar-search", DarSearch);
  }
  // The one-tag snippet: the widget goes right after its script tag.
  if (script && script.dataset.key && script.parentNode) {
    const widget = document.createElement("dar-search");
    widget.setAttribute("key", script.dataset.key);
    ["server", "heading", "placeholder", "label"].forEach((name) => {
      if (script.dataset[name]) widget.setAttribute(name, script.dataset[name]);
    });
    script.parentNode.insertBefore(widget, script.nextSibling);
  }
})();
