// The review page: one click labels a document through the labels API mounted at /review-api/.
// Document text is written with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LABELS = ["negative", "neutral", "positive"];
  // retrain/review.py REVIEW_SOURCE: the performance drift monitor leaves the queue's (hard) documents out.
  const SOURCE = "review";
  let labelled = 0;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function showError(message) { $("error").textContent = message || ""; $("error").hidden = !message; }
  function token() { return sessionStorage.getItem("finsent-label-token"); }
  // Left out when not given: the labels API stamps an annotator's own token's name, or "api" for the shared token.
  function annotator() { return sessionStorage.getItem("finsent-annotator") || undefined; }

  async function call(path, options) {
    const response = await fetch(`/review-api/${path}`, { ...options, headers: {
      Accept: "application/json", "Content-Type": "application/json", Authorization: `Bearer ${token()}` } });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) { sessionStorage.removeItem("finsent-label-token"); askToken("The label token was refused."); }
    // 403: the name is not this token's to use (another annotator's, or a trusted one with the shared token).
    if (response.status === 403) { sessionStorage.removeItem("finsent-annotator"); askToken(body.error); }
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function askToken(message) {
    showError(message || "");
    $("token-form").hidden = false;
    $("queue").replaceChildren();
  }

  async function label(item, choice, node) {
    node.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      await call("labels", { method: "POST", body: JSON.stringify({
        doc_id: item.doc_id, text: item.text, label: choice, annotator: annotator(), source: SOURCE }) });
      node.classList.add("done");
      node.querySelector(".verdict").textContent = `labelled ${choice}`;
      labelled += 1;
      $("progress").textContent = `${labelled} labelled in this session`;
    } catch (err) {
      node.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      showError(`Could not save the label: ${err.message}`);
    }
  }

  function render(items) {
    if (!items.length) { $("queue").replaceChildren(el("p", { class: "muted" }, "Nothing to review right now.")); return; }
    $("queue").replaceChildren(...items.map((item) => {
      const node = el("article", { class: "item" });
      node.appendChild(el("h3", {}, item.title || item.text.slice(0, 120)));
      node.appendChild(el("p", {}, item.text));
      const probs = LABELS.map((l) => `${l} ${((item.probabilities || {})[l] || 0).toFixed(2)}`).join(" · ");
      node.appendChild(el("p", { class: "muted" },
        `model says ${item.predicted} (${probs}); priority ${Number(item.priority).toFixed(2)}; ${(item.tickers || []).join(", ")}`));
      const actions = el("div", { class: "actions" });
      for (const choice of LABELS) {
        const button = el("button", { type: "button", class: `label-${choice}` }, choice);
        button.addEventListener("click", () => label(item, choice, node));
        actions.appendChild(button);
      }
      actions.appendChild(el("span", { class: "verdict muted" }));
      node.appendChild(actions);
      return node;
    }));
  }

  async function load() {
    const config = await fetch("/api/config").then((r) => r.json());
    if (config.review !== "on") { showError(`Labelling is ${config.review}`); return; }
    if (!token()) { askToken(); return; }
    $("token-form").hidden = true;
    try { render((await call("review?limit=30")).items); showError(""); } catch (err) { showError(`Could not load the queue: ${err.message}`); }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("finsent-label-token", $("token").value);
    if ($("annotator").value.trim()) sessionStorage.setItem("finsent-annotator", $("annotator").value.trim());
    load();
  });
  load();
})();
