// The built-in dashboard: fetches the JSON API and renders it. Every piece of document text
// is written with textContent (never innerHTML), and only http(s) URLs become links.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = { ticker: (params.get("ticker") || "").toUpperCase(), range: params.get("range") || "" };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
    return body;
  }

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 16) + "Z";
  }

  function number(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "–";
  }

  function link(url, text) {
    if (url && /^https?:\/\//i.test(url)) {
      return el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, text);
    }
    return el("span", {}, text);
  }

  function emptyRow(columns, text) {
    const tr = el("tr");
    tr.appendChild(el("td", { colspan: columns, class: "empty-row" }, text));
    return tr;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function syncUrl() {
    const query = new URLSearchParams();
    if (state.ticker) query.set("ticker", state.ticker);
    if (state.range) query.set("range", state.range);
    history.replaceState(null, "", `?${query}`);
  }

  async function loadTickers() {
    // The ticker list spans the longest range whatever is chosen, so a quiet ticker stays selectable.
    const { tickers } = await api(`/api/tickers?range=30d`);
    const select = $("ticker");
    const known = tickers.map((t) => t.ticker);
    if (state.ticker && !known.includes(state.ticker)) known.unshift(state.ticker);
    if (!state.ticker && known.length) state.ticker = known[0];
    const counts = Object.fromEntries(tickers.map((t) => [t.ticker, t.count]));
    select.replaceChildren(...known.map((t) => el("option", { value: t },
      counts[t] ? `${t} (${counts[t]})` : t)));
    select.value = state.ticker;
  }

  function renderTimeline(data) {
    $("chart-title").textContent = `${data.ticker}, last ${data.range} in ${data.interval} intervals (UTC)`;
    FinsentChart.render($("chart"), data.points);
  }

  function renderDocuments(data) {
    const body = $("documents");
    if (!data.documents.length) {
      body.replaceChildren(emptyRow(6, `No scored documents in the last ${data.range}.`));
      return;
    }
    body.replaceChildren(...data.documents.map((doc) => {
      const tr = el("tr");
      tr.appendChild(el("td", { class: "num" }, when(doc.ingested_at)));
      const label = el("td");
      label.appendChild(el("span", { class: `label label-${doc.label}` }, doc.label || "?"));
      tr.appendChild(label);
      tr.appendChild(el("td", { class: "num" }, number(doc.score, 3)));
      tr.appendChild(el("td", {}, doc.source));
      const title = el("td", { class: "title" });
      title.appendChild(link(doc.url, doc.title || doc.text.slice(0, 120)));
      if (doc.title && doc.text) title.appendChild(el("span", { class: "text" }, doc.text));
      tr.appendChild(title);
      tr.appendChild(el("td", {}, (doc.tickers || []).join(", ")));
      return tr;
    }));
  }

  function renderAlerts(data) {
    const list = $("alerts");
    $("alerts-range").textContent = `(last ${data.range})`;
    if (!data.alerts.length) {
      list.replaceChildren(el("li", { class: "empty-row" }, `No alerts in the last ${data.range}.`));
      return;
    }
    list.replaceChildren(...data.alerts.map((alert) => {
      const li = el("li", { class: alert.ticker === state.ticker ? "current" : null });
      li.appendChild(el("span", { class: "when" }, when(alert.created_at)));
      li.appendChild(el("strong", {}, `${alert.ticker || "—"} ${alert.rule || ""} `));
      li.appendChild(link(alert.dashboard_url, alert.message || alert.kind));
      li.appendChild(el("span", { class: "muted" }, ` (${alert.status || "?"})`));
      return li;
    }));
  }

  function renderModel(data) {
    const facts = $("model");
    const rows = [
      ["Champion", data.champion ? data.champion.version : "none registered"],
      ["Promoted", data.champion ? when(data.champion.promoted_at) : "–"],
      ["Scoring now", data.scoring ? data.scoring.model_version : `no documents in the last ${data.range}`],
      ["Last scored", data.scoring ? when(data.scoring.scored_at) : "–"],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("status-model").textContent = `model: ${data.scoring ? data.scoring.model_version : data.champion ? data.champion.version : "–"}`;
  }

  function renderDrift(data) {
    const pill = $("status-drift");
    const unknown = `no checks in the last ${data.range}`;
    pill.textContent = `drift: ${{ drift: "detected", ok: "none", unknown }[data.status] || data.status}`;
    pill.className = `pill ${data.status}`;
    const body = $("drift");
    if (!data.monitors.length) { body.replaceChildren(emptyRow(4, `No drift checks in the last ${data.range}.`)); return; }
    body.replaceChildren(...data.monitors.map((m) => {
      const tr = el("tr", { class: m.drift_detected ? "detected" : null });
      tr.appendChild(el("td", {}, m.monitor + (m.drift_detected ? " ⚠" : "")));
      tr.appendChild(el("td", { class: "num" }, number(m.statistic, 4)));
      tr.appendChild(el("td", { class: "num" }, number(m.threshold, 4)));
      tr.appendChild(el("td", { class: "num" }, when(m.checked_at)));
      return tr;
    }));
  }

  async function refresh() {
    const ticker = encodeURIComponent(state.ticker);
    const range = encodeURIComponent(state.range);
    const jobs = [
      state.ticker ? api(`/api/timeline?ticker=${ticker}&range=${range}`).then(renderTimeline)
        : Promise.resolve(FinsentChart.render($("chart"), [])),
      api(`/api/documents?range=${range}&limit=25${state.ticker ? `&ticker=${ticker}` : ""}`).then(renderDocuments),
      api(`/api/alerts?range=${range}`).then(renderAlerts),
      api(`/api/model?range=${range}`).then(renderModel),
      api(`/api/drift?range=${range}`).then(renderDrift),
    ];
    const results = await Promise.allSettled(jobs);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    showError(failed.length ? `Some panels could not load: ${[...new Set(failed)].join("; ")}` : "");
    $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)}Z`;
  }

  async function start() {
    try {
      const config = await api("/api/config");
      if (!config.ranges.includes(state.range)) state.range = config.default_range;
      $("range").replaceChildren(...config.ranges.map((r) => el("option", { value: r }, r)));
      $("range").value = state.range;
      await loadTickers();
      syncUrl();
      $("ticker").addEventListener("change", (e) => { state.ticker = e.target.value; syncUrl(); refresh(); });
      $("range").addEventListener("change", (e) => { state.range = e.target.value; syncUrl(); refresh(); });
      await refresh();
      setInterval(() => { loadTickers().catch(() => {}); refresh(); }, config.refresh_seconds * 1000);
    } catch (err) {
      showError(`The dashboard could not start: ${err.message}`);
    }
  }

  start();
})();
