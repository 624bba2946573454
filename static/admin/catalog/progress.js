/* Catalog change page: keep "Embedding progress" current while items embed, without a reload.
 * Polls the REST progress endpoint (same session cookie) every few seconds while anything is
 * pending, and stops once nothing is. */
(function () {
  "use strict";
  const node = document.getElementById("embedding-progress");
  if (!node || !node.dataset.url) return;
  const PERIOD_MS = 3000;

  function render(c) {
    node.textContent =
      c.total + " items: " + c.pending + " pending, " + c.embedded + " embedded, " +
      c.failed + " failed, " + c.stale + " stale (active encoder: " +
      (c.encoder || "unknown until the first embedding job") + ")";
    node.dataset.pending = String(c.pending);
  }

  async function poll() {
    try {
      const response = await fetch(node.dataset.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const counts = await response.json();
        render(counts);
        if (!counts.pending) return; // done: no more requests
      }
    } catch (err) {
      /* a dropped request: try again next period */
    }
    window.setTimeout(poll, PERIOD_MS);
  }
  window.setTimeout(poll, PERIOD_MS);
})();
