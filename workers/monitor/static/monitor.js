// The monitor page: one server-sent-events stream carries the view for the current filters;
// every value is written with textContent (event text and ids are user input, never markup).
"use strict";

const query = { kind: "all", q: "", sort: "zscore", desc: "1", key: "", alert_kind: "", user: "" };
let source = null;
let throughputPlot = null;
let sentimentPlot = null;
let sentimentKey = null;

function $(id) { return document.getElementById(id); }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(value, digits = 0, suffix = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  }) + suffix;
}

function signed(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  return (value > 0 ? "+" : "") + value.toFixed(digits);
}

function tone(value) {
  if (value === null || value === undefined) return "";
  return value > 0.05 ? "pos" : value < -0.05 ? "neg" : "";
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ");
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString("en-GB");
}

// --- live connection ----------------------------------------------------------------------
function connect() {
  if (source) source.close();
  const params = new URLSearchParams(query);
  history.replaceState(null, "", "?" + params);  // a link to this page shows this view
  source = new EventSource("/stream?" + params);
  source.onmessage = (message) => render(JSON.parse(message.data));
  source.onerror = () => setConnection("down", "disconnected: retrying");
}

function setConnection(state, text) {
  const pill = $("connection");
  pill.dataset.state = state;
  pill.textContent = text;
}

// --- rendering ------------------------------------------------------------------------------
function render(view) {
  setConnection("live", "live");
  $("updated").textContent = clock(view.now);
  renderHealth(view);
  renderTrends(view.trends);
  renderSelected(view.selected);
  renderAlerts(view.alerts);
}

function renderHealth(view) {
  const m = view.metrics;
  $("model-version").textContent = (m.model_versions || []).join(", ") || "–";
  $("m-in").textContent = fmt(m.in_rate);
  $("m-scored").textContent = fmt(m.scored_rate);
  $("m-p50").textContent = fmt(m.e2e_p50_ms, 1, " ms");
  $("m-p99").textContent = fmt(m.e2e_p99_ms, 1, " ms");
  $("m-lag").textContent = fmt(m.lag_total);
  $("m-lag").title = Object.entries(m.lag || {}).map(([p, n]) => `partition ${p}: ${n}`).join("\n");
  $("m-dlq").textContent = fmt(m.dlq_rate, 1);
  $("m-alerts").textContent = fmt(view.seen.alerts);
  $("m-workers").textContent = `${m.workers_up} / ${m.workers}`;

  const lines = $("feed-status");
  const parts = [];
  for (const [feed, line] of Object.entries(view.status)) {
    if (line.status !== "ok") parts.push(el("span", "bad", `${feed}: ${line.status}  `));
  }
  for (const [url, error] of Object.entries(m.errors || {})) {
    parts.push(el("span", "bad", `${url}: ${error}  `));
  }
  parts.push(el("span", "", `reading ${view.topics.join(" and ")} · ${view.seen.trends} trends, ` +
    `${view.seen.alerts} alerts seen` + (view.seen.skipped ? `, ${view.seen.skipped} off-schema skipped` : "")));
  lines.replaceChildren(...parts);
  renderThroughput(view.throughput);
}

function chartWidth(container) { return Math.max(300, container.clientWidth - 4); }

function renderThroughput(history) {
  const data = [
    history.map((p) => p.at),
    history.map((p) => p.scored_rate),
    history.map((p) => p.in_rate),
    history.map((p) => p.e2e_p99_ms),
  ];
  if (!throughputPlot) {
    const box = $("throughput-chart");
    throughputPlot = new uPlot({
      width: chartWidth(box), height: 150,
      scales: { ms: { distr: 3 } },  // log: a start-up spike does not flatten the rest
      series: [
        {},
        { label: "scored/s", stroke: "#2f5bea", width: 2, scale: "rate" },
        { label: "in/s", stroke: "#9aa7c7", width: 1, scale: "rate" },
        { label: "p99 ms", stroke: "#c62828", width: 1, scale: "ms" },
      ],
      axes: [{}, { scale: "rate", label: "events/s" }, { scale: "ms", side: 1, label: "p99 ms", grid: { show: false } }],
    }, data, box);
  } else {
    throughputPlot.setData(data);
  }
}

function svgNode(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function spark(values, lo, hi, color) {
  const svg = svgNode("svg", { class: "spark", width: 90, height: 20 });
  const finite = values.filter((v) => v !== null);
  if (!finite.length) return svg;
  const min = lo ?? Math.min(...finite), max = hi ?? Math.max(...finite);
  const span = max - min || 1;
  const step = values.length > 1 ? 88 / (values.length - 1) : 0;
  const y = (v) => (19 - ((v - min) / span) * 18).toFixed(1);
  const points = [];
  values.forEach((v, i) => { if (v !== null) points.push([(1 + i * step).toFixed(1), y(v)]); });
  if (lo !== null && hi !== null && lo < 0 && hi > 0) {  // the zero line of a signed scale
    svg.appendChild(svgNode("line", { x1: 0, x2: 90, y1: y(0), y2: y(0), stroke: "#e3e6ec" }));
  }
  svg.appendChild(svgNode("polyline", {
    points: points.map((p) => p.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 1.5,
  }));
  if (finite.length < values.length || finite.length === 1) {  // gaps or one value: dots
    for (const [cx, cy] of points) svg.appendChild(svgNode("circle", { cx, cy, r: 1.8, fill: color }));
  }
  return svg;
}

function cell(text, className) { return el("td", className, text); }

function renderTrends(trends) {
  $("trend-count").textContent = `${trends.rows.length} of ${trends.total} keys`;
  const rows = trends.rows.map((t) => {
    const tr = el("tr", "trend" + (t.key === query.key ? " selected" : ""));
    tr.dataset.key = t.key;
    const sparkVolume = el("td");
    sparkVolume.appendChild(spark(t.spark_volume, 0, null, "#2f5bea"));
    const sparkSentiment = el("td");
    sparkSentiment.appendChild(spark(t.spark_sentiment, -1, 1, "#1a7f37"));
    const key = cell(t.key, "key mono");
    key.title = t.key;
    tr.append(
      key,
      cell(utc(t.window_end)),
      cell(fmt(t.volume)),
      sparkVolume,
      cell(fmt(t.conversion * 100, 1, "%")),
      cell(signed(t.sentiment_mean), "sentiment " + tone(t.sentiment_mean)),
      cell(fmt(t.sentiment_count)),
      cell(signed(t.sentiment_change), tone(t.sentiment_change)),
      sparkSentiment,
      cell(t.zscore.toFixed(2), Math.abs(t.zscore) >= 3 ? "hot" : ""),
    );
    tr.addEventListener("click", () => select(t.key));
    return tr;
  });
  document.querySelector("#trend-table tbody").replaceChildren(...rows);
  for (const th of document.querySelectorAll("#trend-table th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === query.sort);
    th.classList.toggle("asc", th.dataset.sort === query.sort && query.desc === "0");
  }
}

function renderSelected(selected) {
  const box = $("sentiment-chart");
  if (!selected) {
    if (sentimentPlot) { sentimentPlot.destroy(); sentimentPlot = null; sentimentKey = null; }
    $("texts").replaceChildren();
    return;
  }
  $("selected-key").textContent = selected.key;
  const data = [
    selected.points.map((p) => p.window_end),
    selected.points.map((p) => p.sentiment_mean),
    selected.points.map((p) => p.volume),
  ];
  if (sentimentPlot && sentimentKey === selected.key) {
    sentimentPlot.setData(data);
  } else {
    if (sentimentPlot) sentimentPlot.destroy();
    sentimentKey = selected.key;
    sentimentPlot = new uPlot({
      width: chartWidth(box), height: 200,
      scales: { s: { range: [-1, 1] } },
      series: [
        {},
        { label: "sentiment", stroke: "#1a7f37", width: 2, scale: "s", spanGaps: true, points: { show: true } },
        { label: "volume", stroke: "#9aa7c7", width: 1, scale: "v" },
      ],
      axes: [{}, { scale: "s", label: "mean sentiment" }, { scale: "v", side: 1, label: "volume", grid: { show: false } }],
    }, data, box);
  }
  const items = selected.texts.map((t) => {
    const li = el("li");
    li.append(el("span", "score " + tone(t.sentiment), signed(t.sentiment)), el("span", "text", t.text));
    li.title = `event ${t.event_id}, window ending ${utc(t.window_end)} UTC`;
    return li;
  });
  $("texts").replaceChildren(...items);
}

function renderAlerts(alerts) {
  const counts = Object.entries(alerts.counts).map(([k, n]) => `${k} ${n}`).join(", ");
  $("alert-count").textContent = `${alerts.rows.length} shown of ${alerts.total}` + (counts ? ` (${counts})` : "");
  const rows = alerts.rows.map((a) => {
    const tr = el("tr", "alert");
    tr.dataset.kind = a.kind;
    const reasons = el("ul", "reasons");
    for (const r of a.reasons) {
      const parts = [r.type];
      if (r.item_id !== undefined) parts.push(`item ${r.item_id}`);
      if (r.price !== undefined) parts.push(`price ${r.price}`);
      parts.push(`at ${utc(r.ts)}`);
      reasons.appendChild(el("li", "", parts.join(" · ")));
    }
    const why = el("td");
    why.appendChild(reasons);
    tr.append(
      cell(clock(a.ts)),
      cell(a.kind, "kind-" + a.kind),
      cell(`${a.score.toFixed(3)} / ${a.threshold.toFixed(3)}`),
      cell(a.user_id, "mono user"),
      why,
      cell(a.model_version, "mono"),
    );
    return tr;
  });
  document.querySelector("#alert-table tbody").replaceChildren(...rows);
}

// --- controls -------------------------------------------------------------------------------
function select(key) {
  query.key = key;
  connect();
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function bind(id, name, event) {
  const input = $(id);
  input.addEventListener(event, debounce(() => { query[name] = input.value; connect(); }, 250));
}

// Start from the view the address names (a shared link), controls included.
for (const [name, value] of new URLSearchParams(location.search)) {
  if (name in query) query[name] = value.slice(0, 400);
}
for (const [id, name] of [["trend-kind", "kind"], ["trend-filter", "q"], ["alert-kind", "alert_kind"], ["alert-user", "user"]]) {
  $(id).value = query[name];
}
if (query.key) $("selected-key").textContent = query.key;
bind("trend-kind", "kind", "change");
bind("trend-filter", "q", "input");
bind("alert-kind", "alert_kind", "change");
bind("alert-user", "user", "input");
for (const th of document.querySelectorAll("#trend-table th[data-sort]")) {
  th.addEventListener("click", () => {
    const sort = th.dataset.sort;
    query.desc = query.sort === sort ? (query.desc === "1" ? "0" : "1") : (sort === "key" ? "0" : "1");
    query.sort = sort;
    connect();
  });
}
window.addEventListener("resize", debounce(() => {
  for (const [plot, id] of [[throughputPlot, "throughput-chart"], [sentimentPlot, "sentiment-chart"]]) {
    if (plot) plot.setSize({ width: chartWidth($(id)), height: plot.height });
  }
}, 200));
connect();
