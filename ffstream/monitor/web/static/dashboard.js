// The ffstream dashboard: metrics arrive over Server-Sent Events (/events) and are drawn on plain canvases.
"use strict";

const MAX_POINTS = 600;          // per series: 10 minutes at one metrics message per second
const WINDOW_S = 300;            // the charts show the last 5 minutes
const PALETTE = ["#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
const POS = "#1f77b4", NEG = "#e4572e", THETA = "#9aa0a6";

const ALERT = "#d62728", MAX_ALERTS = 50;
const alerts = [];               // novelty alerts, newest last: {t, frame, novelty, threshold, layers}
const series = new Map();        // key -> [[t, value], ...], t in seconds since the epoch
const latest = new Map();        // worker -> its last metrics
const heard = new Map();         // worker -> Date.now() when last heard
let points = 0;                  // metrics messages taken since the page opened
let dirty = true;

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function push(key, t, value) {
  if (typeof value !== "number" || !isFinite(value)) return;
  let s = series.get(key);
  if (!s) series.set(key, s = []);
  if (s.length && t <= s[s.length - 1][0]) return;   // a replayed message (the stream reconnected)
  s.push([t, value]);
  if (s.length > MAX_POINTS) s.shift();
}

function layerNames() {
  return [...latest.keys()].filter(w => latest.get(w).kind === "layer")
    .sort((a, b) => latest.get(a).layer - latest.get(b).layer);
}

function takeMetrics(m) {
  const w = m.worker, t = m.t;
  latest.set(w, m);
  heard.set(w, Date.now());
  if (typeof m.fps === "number" && ["source", "layer", "sink"].includes(m.kind)) push(`fps/${w}`, t, m.fps);
  if (m.kind === "sleep") push("fps/sleep (negatives)", t, m.negatives_per_s);
  if (m.kind === "layer") {
    for (const k of ["goodness_pos", "goodness_neg", "p_pos", "p_neg"]) push(`${k}/${w}`, t, m[k]);
  }
  if (m.kind === "sink") {
    push("accuracy/recent", t, m.accuracy_recent);
    push("accuracy/run", t, m.accuracy);
    // the most novel frame since the sink's last message (a spike between two messages), else the latest frame
    const peak = typeof m.novelty_peak === "number" && Array.isArray(m.novelty_peak_layers);
    push("novelty/max", t, peak ? m.novelty_peak : m.novelty);
    const layers = peak ? m.novelty_peak_layers : m.novelty_layers;
    (Array.isArray(layers) ? layers : []).forEach((z, i) => push(`novelty/layer${i + 1}`, t, z));
    const a = m.novelty_last_alert;   // an alert the page missed (opened after it, and the history has moved on)
    if (a && typeof a.t === "number" && !alerts.some(b => b.frame === a.frame)) takeAlert(a);
  }
  points += 1;
  const counter = document.getElementById("points");
  counter.textContent = points;
  counter.dataset.points = String(points);
  dirty = true;
}

function takeAlert(a) {
  if (typeof a.t !== "number" || alerts.some(b => b.frame === a.frame && b.t === a.t)) return;
  alerts.push(a);
  alerts.sort((x, y) => x.t - y.t);
  if (alerts.length > MAX_ALERTS) alerts.shift();
  const list = document.getElementById("alerts");
  list.innerHTML = alerts.slice().reverse().map(x => {
    const when = new Date(x.t * 1000).toLocaleTimeString();
    const layers = Array.isArray(x.layers) ? ` · per layer ${x.layers.map(z => z.toFixed(1)).join(", ")}` : "";
    return `<li data-frame="${esc(x.frame)}">${esc(when)}: frame ${esc(x.frame)}, novelty ${esc(Number(x.novelty).toFixed(2))}` +
      ` above ${esc(x.threshold)} for ${esc(x.frames_above ?? "?")} frames${esc(layers)}</li>`;
  }).join("");
  list.dataset.alerts = String(alerts.length);
  dirty = true;
}

function takePreview(p) {
  const img = document.getElementById("receptive-fields");
  img.onload = () => {
    const shape = p.tile_shape.join("×");
    const of = p.units ? ` of ${p.units}` : "";
    document.getElementById("rf-caption").textContent =
      `layer ${p.layer ?? 1}: ${p.tiles}${of} units as ${shape} tiles, weights version ${p.weights_version ?? "?"}`;
  };
  img.src = `/receptive-fields.png?v=${p.version}`;
}

// --- charts ---------------------------------------------------------------------------------------------
function niceStep(span, count) {
  const raw = span / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

// A tick label with as many decimals as the tick step needs: 0, 0.25, 0.5 / 0, 20, 40 / 10k, 20k.
function fmt(v, step) {
  if (Math.abs(v) < step / 1e6) return "0";
  if (Math.abs(v) >= 1e6) return +(v / 1e6).toFixed(2) + "M";
  if (Math.abs(v) >= 1e4) return +(v / 1e3).toFixed(1) + "k";
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

// lines: [{label, color, dash, pts}], opts: {hlines: [{value, color}], yMin, yMax, fromZero (default true), empty}
function drawChart(canvas, lines, opts = {}) {
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth, H = canvas.clientHeight;
  if (!W || !H) return;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.font = "11px system-ui, sans-serif";
  const all = lines.flatMap(l => l.pts);
  if (!all.length) {
    g.fillStyle = "#6b7280"; g.textAlign = "center";
    g.fillText(opts.empty || "waiting for data…", W / 2, H / 2);
    return;
  }
  const tMax = Math.max(...all.map(p => p[0])), tMin = Math.max(Math.min(...all.map(p => p[0])), tMax - WINDOW_S);
  const seen = all.filter(p => p[0] >= tMin).map(p => p[1]).concat((opts.hlines || []).map(h => h.value));
  let lo = opts.yMin ?? Math.min(...seen), hi = opts.yMax ?? Math.max(...seen);
  const pad = Math.max(hi - lo, Math.abs(hi) * 0.02, 1e-6) * 0.08;
  if (opts.yMin === undefined) lo = opts.fromZero === false ? lo - pad : Math.min(lo, 0);
  if (opts.yMax === undefined) hi += pad;
  const left = 44, right = 10, bottom = 20;
  // the legend along the top, wrapped into rows that fit the width
  const legend = [];
  let lx = left, ly = 9;
  for (const l of lines.filter(l => l.label)) {
    const width = 28 + g.measureText(l.label).width;
    if (lx > left && lx + width > W - right) { lx = left; ly += 15; }
    legend.push({ l, x: lx, y: ly });
    lx += width;
  }
  const top = ly + 13, pw = W - left - right, ph = H - top - bottom;
  const X = t => left + (tMax === tMin ? pw : (t - tMin) / (tMax - tMin) * pw);
  const Y = v => top + ph - (v - lo) / (hi - lo) * ph;
  // grid and y labels
  g.strokeStyle = "#e3e6eb"; g.fillStyle = "#6b7280"; g.lineWidth = 1; g.textAlign = "right"; g.textBaseline = "middle";
  const step = niceStep(hi - lo, 4);
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) {
    g.beginPath(); g.moveTo(left, Y(v)); g.lineTo(left + pw, Y(v)); g.stroke();
    g.fillText(fmt(v, step), left - 6, Y(v));
  }
  // x labels: seconds before the newest point
  g.textAlign = "center"; g.textBaseline = "top";
  const span = tMax - tMin, xs = Math.max(1, niceStep(Math.max(span, 1), 4));
  for (let a = 0; a <= span + 1e-9; a += xs) g.fillText(a === 0 ? "now" : `−${Math.round(a)} s`, X(tMax - a), top + ph + 5);
  for (const v of opts.vlines || []) {   // events (alerts) inside the window, as full-height bars
    if (v.t < tMin || v.t > tMax) continue;
    g.strokeStyle = v.color; g.lineWidth = 2; g.setLineDash([]);
    g.beginPath(); g.moveTo(X(v.t), top); g.lineTo(X(v.t), top + ph); g.stroke();
  }
  g.lineWidth = 1;
  for (const h of opts.hlines || []) {
    g.strokeStyle = h.color; g.setLineDash([5, 4]); g.beginPath(); g.moveTo(left, Y(h.value)); g.lineTo(left + pw, Y(h.value)); g.stroke();
  }
  g.setLineDash([]);
  for (const l of lines) {
    const pts = l.pts.filter(p => p[0] >= tMin);
    if (!pts.length) continue;
    g.strokeStyle = l.color; g.lineWidth = l.width || 2; g.setLineDash(l.dash ? [6, 4] : []);
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1]))));
    if (pts.length === 1) g.arc(X(pts[0][0]), Y(pts[0][1]), 2, 0, 2 * Math.PI);
    g.stroke();
  }
  g.setLineDash([]);
  g.textAlign = "left"; g.textBaseline = "middle";
  for (const { l, x, y } of legend) {
    g.strokeStyle = l.color; g.lineWidth = 2; g.setLineDash(l.dash ? [4, 3] : []);
    g.beginPath(); g.moveTo(x, y); g.lineTo(x + 16, y); g.stroke(); g.setLineDash([]);
    g.fillStyle = "#1d2430"; g.fillText(l.label, x + 20, y);
  }
}

function goodnessCharts() {
  const box = document.getElementById("goodness");
  const layers = layerNames();
  if (!layers.length) return;
  for (const w of layers) {
    let canvas = box.querySelector(`canvas[data-worker="${CSS.escape(w)}"]`);
    if (!canvas) {
      box.querySelector(".empty")?.remove();
      const fig = document.createElement("figure");
      fig.innerHTML = `<figcaption>${esc(w)}</figcaption><canvas class="chart"></canvas>`;
      canvas = fig.querySelector("canvas");
      canvas.dataset.worker = w;
      box.appendChild(fig);
    }
    const m = latest.get(w);
    drawChart(canvas, [
      { label: "positive", color: POS, pts: series.get(`goodness_pos/${w}`) || [] },
      { label: "negative", color: NEG, pts: series.get(`goodness_neg/${w}`) || [] },
    ], { fromZero: false, hlines: typeof m.threshold === "number" ? [{ value: m.threshold, color: THETA }] : [] });
  }
}

function redraw() {
  goodnessCharts();
  const fpsKeys = [...series.keys()].filter(k => k.startsWith("fps/")).sort((a, b) => order(a) - order(b));
  drawChart(document.getElementById("fps"), fpsKeys.map((k, i) => ({ label: k.slice(4), color: PALETTE[i % PALETTE.length], dash: k.includes("sleep"), pts: series.get(k) })));
  const sink = latest.get("sink");
  const labelled = sink && (sink.accuracy !== null && sink.accuracy !== undefined);
  drawChart(document.getElementById("accuracy"), [
    { label: "recent", color: POS, pts: series.get("accuracy/recent") || [] },
    { label: "whole run", color: "#2ca02c", pts: series.get("accuracy/run") || [] },
  ], { yMin: 0, yMax: 1, empty: sink ? "no labels in this stream: no accuracy" : "waiting for the sink…" });
  document.getElementById("accuracy-note").textContent = labelled ? `${(100 * sink.accuracy).toFixed(2)} % over ${sink.evaluated} labelled frames` : "";
  const prob = [];
  layerNames().forEach((w, i) => {
    const color = PALETTE[i % PALETTE.length];
    prob.push({ label: w, color, pts: series.get(`p_pos/${w}`) || [] });
    prob.push({ label: "", color, dash: true, pts: series.get(`p_neg/${w}`) || [] });
  });
  drawChart(document.getElementById("probability"), prob, { yMin: 0, yMax: 1 });
  noveltyChart(sink);
  table();
}

function noveltyChart(sink) {
  const layerKeys = [...series.keys()].filter(k => k.startsWith("novelty/layer")).sort((a, b) => parseInt(a.slice(13)) - parseInt(b.slice(13)));
  const lines = layerKeys.map((k, i) => ({ label: k.slice(8).replace("layer", "layer "), color: PALETTE[i % PALETTE.length], pts: series.get(k) }));
  lines.push({ label: "largest", color: "#1d2430", pts: series.get("novelty/max") || [], width: 3 });
  const threshold = sink && typeof sink.novelty_threshold === "number" ? sink.novelty_threshold : null;
  drawChart(document.getElementById("novelty"), lines, {
    fromZero: false, hlines: threshold === null ? [] : [{ value: threshold, color: ALERT }],
    vlines: alerts.map(a => ({ t: a.t, color: ALERT })),
    empty: sink ? "the sink is warming up its novelty window…" : "waiting for the sink…",
  });
  const note = document.getElementById("novelty-note");
  note.textContent = sink && typeof sink.novelty === "number"
    ? `latest ${sink.novelty.toFixed(2)} (threshold ${threshold}) · ${sink.novelty_alerts ?? 0} alerts this run` : "";
}

function order(key) {
  const w = key.slice(4), m = latest.get(w);
  if (w === "source") return 0;
  if (m && m.kind === "layer") return m.layer;
  return w === "sink" ? 1000 : 2000;
}

function table() {
  const cell = (v, digits) => (typeof v === "number" && isFinite(v) ? (digits === undefined ? String(v) : v.toFixed(digits)) : "–");
  const rows = [...latest.keys()].sort((a, b) => order("fps/" + a) - order("fps/" + b)).map(w => {
    const m = latest.get(w), ago = (Date.now() - heard.get(w)) / 1000;
    const frames = m.frames ?? m.negatives, fps = m.fps ?? m.negatives_per_s;
    const neg = Array.isArray(m.goodness_neg) ? null : m.goodness_neg;
    return `<tr><td>${esc(w)}</td><td>${cell(frames)}</td><td>${cell(fps, 0)}</td><td>${cell(m.goodness_pos, 1)}</td><td>${cell(neg, 1)}</td>` +
      `<td>${cell(m.p_pos, 3)}</td><td>${cell(m.p_neg, 3)}</td><td>${cell(m.staleness, 1)}</td><td>${cell(m.accuracy, 3)}</td>` +
      `<td>${cell(m.dropped)}</td><td>${ago.toFixed(0)} s ago</td></tr>`;
  });
  document.querySelector("#workers tbody").innerHTML = rows.join("");
  const src = latest.get("source");
  if (src) {
    const total = src.total ? ` of ${src.total}` : "";
    document.getElementById("summary").textContent = `${src.frames}${total} frames · ${cell(src.fps, 0)} frames/s · ${layerNames().length} layers`;
  }
}

// --- the event stream -----------------------------------------------------------------------------------
function connect() {
  const status = document.getElementById("status");
  const events = new EventSource("/events");
  events.addEventListener("metrics", e => takeMetrics(JSON.parse(e.data)));
  events.addEventListener("preview", e => takePreview(JSON.parse(e.data)));
  events.addEventListener("alert", e => takeAlert(JSON.parse(e.data)));
  events.onopen = () => { status.textContent = "live"; status.className = "pill live"; };
  events.onerror = () => { status.textContent = "reconnecting…"; status.className = "pill waiting"; };
}

setInterval(() => { if (dirty) { dirty = false; redraw(); } }, 500);
window.addEventListener("resize", () => { dirty = true; });
connect();
