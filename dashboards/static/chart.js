// A small dependency-free SVG chart: volume bars stacked by label (right axis) and the mean
// sentiment score as a line (left axis, -1..1). Text goes in with textContent only.
"use strict";

const FinsentChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const LABELS = ["negative", "neutral", "positive"];

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  function timeLabel(iso, spanMs) {
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    if (spanMs <= 36 * 3600e3) return hm;
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` + (spanMs <= 8 * 86400e3 ? ` ${hm}` : "");
  }

  // points: [{t, count, labels: {negative, neutral, positive}, score}]
  function render(container, points) {
    const width = Math.max(container.clientWidth || 0, 320);
    const height = Math.max(container.clientHeight || 0, 200);
    const m = { top: 16, right: 48, bottom: 28, left: 44 };
    const w = width - m.left - m.right;
    const h = height - m.top - m.bottom;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    const withData = points.filter((p) => p.count > 0).length;
    container.dataset.points = String(withData);
    container.replaceChildren(root);
    if (!points.length || !withData) {
      root.appendChild(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
        "No scored documents for this ticker in the range"));
      return;
    }
    const n = points.length;
    const band = w / n;
    const x = (i) => m.left + i * band;
    const maxVolume = niceMax(Math.max(...points.map((p) => p.count)));
    // Bars use the lower half, so the score line above them stays readable.
    const yVol = (v) => m.top + h - (v / maxVolume) * h * 0.5;
    const yScore = (s) => m.top + h / 2 - (s * h) / 2;

    for (const s of [-1, -0.5, 0, 0.5, 1]) {
      root.appendChild(svg("line", { x1: m.left, x2: m.left + w, y1: yScore(s), y2: yScore(s),
        class: s === 0 ? "zero" : "gridline" }));
      root.appendChild(svg("text", { x: m.left - 6, y: yScore(s) + 4, "text-anchor": "end", class: "axis" },
        s.toFixed(1)));
    }
    for (const v of [0, maxVolume / 2, maxVolume]) {
      root.appendChild(svg("text", { x: m.left + w + 6, y: yVol(v) + 4, class: "axis" }, String(Math.round(v))));
    }
    root.appendChild(svg("text", { x: 4, y: 11, class: "axis" }, "score"));
    root.appendChild(svg("text", { x: width - 4, y: 11, "text-anchor": "end", class: "axis" }, "docs"));

    const bars = svg("g", {});
    points.forEach((p, i) => {
      let base = 0;
      for (const label of LABELS) {
        const value = (p.labels && p.labels[label]) || 0;
        if (!value) continue;
        const rect = svg("rect", { x: x(i) + band * 0.12, width: Math.max(band * 0.76, 1),
          y: yVol(base + value), height: Math.max(yVol(base) - yVol(base + value), 0.5), class: `bar-${label}` });
        rect.appendChild(svg("title", {}, `${p.t}: ${value} ${label}`));
        bars.appendChild(rect);
        base += value;
      }
    });
    root.appendChild(bars);

    let path = "";
    let pen = false;
    points.forEach((p, i) => {
      if (p.score === null || p.score === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${(x(i) + band / 2).toFixed(1)},${yScore(p.score).toFixed(1)}`;
      pen = true;
    });
    if (path) root.appendChild(svg("path", { d: path, class: "score-line" }));
    points.forEach((p, i) => {
      if (p.score === null || p.score === undefined) return;
      const dot = svg("circle", { cx: x(i) + band / 2, cy: yScore(p.score), r: 3, class: "score-dot" });
      dot.appendChild(svg("title", {}, `${p.t}: mean score ${p.score.toFixed(3)} over ${p.count} documents`));
      root.appendChild(dot);
    });

    const spanMs = new Date(points[n - 1].t) - new Date(points[0].t);
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(w / 90))));
    for (let i = 0; i < n; i += every) {
      root.appendChild(svg("text", { x: x(i) + band / 2, y: height - 8, "text-anchor": "middle", class: "axis" },
        timeLabel(points[i].t, spanMs)));
    }
  }

  return { render };
})();
