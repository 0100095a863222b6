// The views: nodes (openMosixView's main window), one node's page, jobs
// (openMosixprocs), the migration monitor (openMosixmigmon) and history
// (openMosixanalyzer). They draw from the page's state and act through the
// API; text from the cluster is only ever set as text, never as markup.

import uPlot from "./uPlot.esm.js";
import { api, notice, show } from "./app.js";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return e;
}

const pct = (x) => `${Math.round(x * 100)} %`;
const mib = (kib) => (kib >= 1048576 ? `${(kib / 1048576).toFixed(1)} GiB` : `${Math.round(kib / 1024)} MiB`);
const ago = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
};
const capacity = (l) => Math.max(1, l.cpus) * Math.min(100, Math.max(1, l.cpu_quota)) / 100;
const knobNames = (k) => ["block", "stay", "lstay", "quiet"].filter((n) => k && k[n]);

function bar(fraction, cls, title) {
  const f = Math.max(0, Math.min(1, fraction));
  const fill = el("span", { class: "fill" });
  // Through the CSSOM: the page's policy forbids style attributes.
  fill.style.width = `${(f * 100).toFixed(1)}%`;
  return el("span", { class: `bar ${cls}${fraction > 1 ? " over" : ""}`, title, role: "img", "aria-label": title }, fill);
}

/** Puts `rows` in `tbody`, except that the row holding the keyboard focus
 *  (or a slider being dragged) stays as it is until the focus leaves. */
function replaceRows(tbody, rows, key) {
  const active = document.activeElement;
  const kept = active && tbody.contains(active) ? active.closest("tr") : null;
  if (kept) rows = rows.map((r) => (r.getAttribute(key) === kept.getAttribute(key) ? kept : r));
  tbody.replaceChildren(...rows);
}

// --- actions ---------------------------------------------------------------

async function knob(node, word) {
  try {
    const r = await api("POST", `/api/nodes/${encodeURIComponent(node)}/knob`, { word });
    notice(r.lines.join("; "));
  } catch (e) {
    notice(e.message, true);
  }
}

/** Moves jobs one after the other; says what each did. */
export async function migrate(jobs, to) {
  const lines = [];
  let failed = false;
  for (const job of jobs) {
    notice(`moving ${job} to ${to}…`);
    try {
      const r = await api("POST", `/api/jobs/${encodeURIComponent(job)}/migrate`, { to });
      lines.push(r.line);
    } catch (e) {
      failed = true;
      lines.push(e.message);
    }
  }
  notice(lines.join("; "), failed);
}

/** Sends a signal or a nice value to jobs one after the other; says what
 *  each did. `what` is `{ signal }` or `{ nice }`. */
export async function steerJobs(jobs, what) {
  const path = what.signal ? "signal" : "renice";
  const lines = [];
  let failed = false;
  for (const job of jobs) {
    try {
      const r = await api("POST", `/api/jobs/${encodeURIComponent(job)}/${path}`, what);
      lines.push(r.line);
    } catch (e) {
      failed = true;
      lines.push(e.message);
    }
  }
  notice(lines.join("; "), failed);
}

// --- nodes -----------------------------------------------------------------

function knobButtons(n) {
  const k = n.load?.knobs ?? {};
  const toggle = (name) => el("button", {
    type: "button",
    "aria-pressed": String(!!k[name]),
    title: `turn ${name} ${k[name] ? "off" : "on"} on ${n.name}`,
    onclick: () => knob(n.name, k[name] ? `no${name}` : name),
  }, k[name] ? `un${name}` : name);
  return el("td", { class: "steer actions" },
    toggle("block"), " ", toggle("stay"), " ", toggle("quiet"), " ",
    el("button", { type: "button", title: `send every guest on ${n.name} elsewhere`, onclick: () => knob(n.name, "expel") }, "expel"), " ",
    el("button", { type: "button", title: `bring every job launched from ${n.name} back`, onclick: () => knob(n.name, "bring") }, "bring"));
}

function power(node, word) {
  if (confirm(`${word === "reboot" ? "Reboot" : "Power off"} ${node}? Its guest jobs move away first.`)) knob(node, word);
}

// --- machines at the boot server ---------------------------------------------

const stageNames = { dhcp: "DHCP", tftp: "TFTP (iPXE)", script: "boot script", kernel: "kernel", initrd: "initrd", agent: "agent (up)", admission: "asked to join" };

async function decide(mac, verdict) {
  try {
    const r = await api("POST", `/api/machines/${encodeURIComponent(mac)}/${verdict}`, {});
    notice(r.line);
  } catch (e) {
    notice(e.message, true);
  }
}

function machineRow(m) {
  const since = m.stage_since ? ago(m.stage_since * 1000) : "";
  const actions = m.waiting || m.admission === "rejected"
    ? [el("button", { type: "button", title: `let ${m.name ?? m.mac} into the cluster`, onclick: () => decide(m.mac, "admit") }, "admit"), " "]
    : [];
  if (m.waiting) actions.push(el("button", { type: "button", title: `turn ${m.name ?? m.mac} away`, onclick: () => decide(m.mac, "reject") }, "reject"));
  return el("tr", { "data-mac": m.mac, class: m.waiting ? "waiting" : null },
    el("td", {}, m.name ?? ""),
    el("td", {}, m.mac),
    el("td", { class: "wide" }, m.address ?? ""),
    el("td", {}, m.firmware ?? ""),
    el("td", {}, el("span", { class: `stage ${m.stage}` }, stageNames[m.stage] ?? m.stage)),
    el("td", {}, since),
    el("td", {}, m.admission ?? "not asked yet"),
    el("td", { class: "steer actions" }, actions));
}

function renderMachines(state) {
  const m = state.machines;
  const why = $("#machines-why");
  why.hidden = !!m?.machines;
  why.textContent = m?.why ?? "";
  replaceRows($("#machines tbody"), (m?.machines ?? []).map(machineRow), "data-mac");
}

/** The quota, and for a steering session a slider that sets it
 *  (openMosixView's speed slider): the share of the node's CPUs cluster
 *  jobs may use. */
function quotaCell(node, quota) {
  const label = el("span", { class: "quota-value" }, `${quota} %`);
  const slider = el("input", {
    type: "range", min: 5, max: 100, step: 5, value: quota, class: "steer quota",
    "aria-label": `CPU quota of ${node}, percent`, title: `share of ${node}'s CPUs cluster jobs may use`,
  });
  slider.addEventListener("input", () => { label.textContent = `${slider.value} %`; });
  slider.addEventListener("change", () => knob(node, `quota=${slider.value}`));
  return el("td", {}, slider, " ", label);
}

function nodeRow(n) {
  const l = n.load;
  const cells = [
    el("td", {}, el("span", { class: `state ${n.state}` }, n.state)),
    el("td", {}, el("button", { type: "button", class: "link", title: `the jobs on ${n.name}`, onclick: () => show("node", n.name) }, n.name)),
    el("td", { class: "wide" }, n.addr),
  ];
  if (!l || n.state === "down") {
    cells.push(el("td", { colspan: 7 }, n.state === "down"
      ? `down${n.load_age_ms != null ? `; last heard ${ago(Date.now() - n.load_age_ms)} ago` : ""}`
      : "no load vector yet"));
  } else {
    const load = l.demand / capacity(l);
    const mem = l.mem_total_kib ? 1 - l.mem_free_kib / l.mem_total_kib : 0;
    cells.push(
      el("td", {}, l.cpus),
      el("td", {}, l.speed.toFixed(2)),
      el("td", {}, bar(load, "load", `${l.demand.toFixed(2)} CPUs wanted of ${capacity(l).toFixed(2)}`), " ", pct(load)),
      el("td", {}, bar(mem, "mem", `${mib(l.mem_total_kib - l.mem_free_kib)} of ${mib(l.mem_total_kib)}`), " ", pct(mem)),
      el("td", {}, `${l.jobs} / ${l.guests}`),
      quotaCell(n.name, l.cpu_quota),
      el("td", {}, knobNames(l.knobs).map((k) => el("span", { class: "knob" }, k))),
    );
  }
  cells.push(knobButtons(n));
  return el("tr", { "data-node": n.name }, cells);
}

function clusterRow(status, efficiency) {
  const live = status.nodes.filter((n) => n.state === "alive" && n.load);
  const sum = (f) => live.reduce((a, n) => a + f(n.load), 0);
  const cap = sum(capacity), want = sum((l) => l.demand);
  const total = sum((l) => l.mem_total_kib), free = sum((l) => l.mem_free_kib);
  const row = $("#cluster-row");
  row.replaceChildren(
    el("td", {}, `${live.length} of ${status.nodes.length} up`),
    el("td", {}, "cluster"),
    el("td", { class: "wide" }, efficiency === null ? "" : `balance ${Math.round(efficiency)} %`),
    el("td", {}, sum((l) => l.cpus)),
    el("td", {}, ""),
    el("td", {}, bar(cap ? want / cap : 0, "load", `${want.toFixed(2)} CPUs wanted of ${cap.toFixed(2)}`), " ", pct(cap ? want / cap : 0)),
    el("td", {}, bar(total ? 1 - free / total : 0, "mem", `${mib(total - free)} of ${mib(total)}`), " ", mib(total - free)),
    el("td", {}, `${sum((l) => l.jobs)} / ${sum((l) => l.guests)}`),
    el("td", {}, ""), el("td", {}, ""), el("td", { class: "steer" }, ""));
}

function renderNodes(state) {
  if (!state.status) return;
  replaceRows($("#nodes tbody"), state.status.nodes.map(nodeRow), "data-node");
  clusterRow(state.status, state.efficiency);
  renderMachines(state);
}

// --- jobs ------------------------------------------------------------------

const jobColumns = [
  { key: "job", label: "Job" },
  { key: "command", label: "Command", get: (j) => j.argv.join(" "), cls: "cmd" },
  { key: "uid", label: "User", title: "uid it runs as" },
  { key: "home", label: "Home", title: "the node it was launched from" },
  { key: "node", label: "Node", title: "where it runs now" },
  { key: "pid", label: "PID", get: (j) => j.pid ?? "" },
  { key: "cpu", label: "CPU", title: "CPU over the last second, percent of one CPU", get: (j) => j.usage?.cpu_pct ?? -1, show: (j) => (j.usage ? `${j.usage.cpu_pct} %` : "") },
  { key: "rss", label: "Memory", title: "resident memory of all its processes", get: (j) => j.usage?.rss_bytes ?? -1, show: (j) => (j.usage ? mib(j.usage.rss_bytes / 1024) : "") },
  { key: "state", label: "State", title: "running, sleeping, disk (waiting on I/O), stopped (SIGSTOP) or zombie", get: (j) => j.usage?.state ?? "" },
  { key: "nice", label: "Nice", title: "scheduling priority, -20 (first) to 19 (last)", get: (j) => j.usage?.nice ?? "", show: (j) => (j.usage ? String(j.usage.nice) : "") },
  { key: "since_ms", label: "Here for", get: (j) => j.since_ms, show: (j) => (j.since_ms ? ago(j.since_ms) : "") },
  { key: "moves", label: "Moves" },
  { key: "cantmove", label: "Cannot move because", get: (j) => j.cantmove ?? "", cls: "wide" },
];
const sort = { key: "job", dir: 1 };
const selected = new Set();

function jobValue(c, j) { return c.get ? c.get(j) : j[c.key]; }

function jobHead(table, withSelect) {
  const cells = jobColumns.map((c) => {
    const th = el("th", { "data-key": c.key, title: c.title, class: c.cls === "wide" ? "wide" : null, tabindex: 0 }, c.label);
    if (sort.key === c.key) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
    const go = () => { sort.dir = sort.key === c.key ? -sort.dir : 1; sort.key = c.key; renderJobs(currentState); };
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    return th;
  });
  if (withSelect) cells.unshift(el("th", { class: "steer" }, el("input", { type: "checkbox", "aria-label": "select every job shown", onchange: (e) => {
    for (const cb of table.querySelectorAll("tbody input[type=checkbox]")) { cb.checked = e.target.checked; cb.dispatchEvent(new Event("change")); }
  } })));
  const focused = table.querySelector("thead").contains(document.activeElement) ? document.activeElement.dataset.key : null;
  table.querySelector("thead").replaceChildren(el("tr", {}, cells));
  if (focused) table.querySelector(`thead th[data-key="${focused}"]`)?.focus();
}

function jobRow(j, withSelect) {
  const cells = jobColumns.map((c) => el("td", { class: c.cls }, c.show ? c.show(j) : String(jobValue(c, j))));
  if (withSelect) {
    cells.unshift(el("td", { class: "steer" }, el("input", {
      type: "checkbox", "aria-label": `select job ${j.job}`, checked: selected.has(j.job),
      onchange: (e) => { e.target.checked ? selected.add(j.job) : selected.delete(j.job); },
    })));
  }
  return el("tr", { "data-job": j.job }, cells);
}

/** Rows already drawn, by table and job, with what they show: a table of
 *  a thousand jobs redraws only the rows that changed. */
const rowCache = new Map();

function cachedRow(j, withSelect) {
  const texts = jobColumns.map((c) => (c.show ? c.show(j) : String(jobValue(c, j))));
  const sig = `${texts.join("\u0001")}|${withSelect && selected.has(j.job)}`;
  const key = `${withSelect}:${j.job}`;
  const hit = rowCache.get(key);
  if (hit && hit.sig === sig) return hit.tr;
  const tr = jobRow(j, withSelect);
  rowCache.set(key, { sig, tr });
  return tr;
}

/** Puts `rows` in `tbody` unless they are there already, in that order. */
function placeRows(tbody, rows, key) {
  const cur = tbody.children;
  if (cur.length === rows.length && rows.every((r, i) => cur[i] === r)) return;
  replaceRows(tbody, rows, key);
}

/** One collator for every comparison (`localeCompare` makes one a call). */
const collator = new Intl.Collator(undefined, { numeric: true });

function sortedJobs(jobs) {
  const c = jobColumns.find((c) => c.key === sort.key);
  return [...jobs].sort((a, b) => {
    const x = jobValue(c, a), y = jobValue(c, b);
    return (typeof x === "number" && typeof y === "number" ? x - y : collator.compare(String(x), String(y))) * sort.dir;
  });
}

let currentState = null;

function renderJobs(state) {
  const f = $("#job-filter").value.trim().toLowerCase();
  const shown = sortedJobs(state.jobs).filter((j) => !f ||
    [j.job, j.argv.join(" "), String(j.uid), j.node, j.home].some((s) => s.toLowerCase().includes(f)));
  const running = new Set(state.jobs.map((j) => j.job));
  for (const id of [...selected]) if (!running.has(id)) selected.delete(id);
  for (const k of [...rowCache.keys()]) if (!running.has(k.slice(k.indexOf(":") + 1))) rowCache.delete(k);
  jobHead($("#jobs"), true);
  placeRows($("#jobs tbody"), shown.map((j) => cachedRow(j, true)), "data-job");
  $("#job-count").textContent = `${shown.length} of ${state.jobs.length} jobs`;
  const target = $("#job-target");
  const keep = target.value;
  const names = (state.status?.nodes ?? []).filter((n) => n.state === "alive").map((n) => n.name);
  target.replaceChildren(el("option", { value: "best" }, "the best node"), el("option", { value: "home" }, "its home node"),
    ...names.map((n) => el("option", { value: n }, n)));
  if ([...target.options].some((o) => o.value === keep)) target.value = keep;
}

function renderNode(state) {
  const n = state.status?.nodes.find((x) => x.name === state.node);
  $("#node-title").textContent = n ? `Node ${n.name}` : `Node ${state.node} (not in the cluster)`;
  const facts = [];
  if (n) {
    const l = n.load;
    facts.push(["State", n.state], ["Address", n.addr], ["Number", String(n.number)]);
    if (l) {
      facts.push(["CPUs", `${l.cpus} at speed ${l.speed.toFixed(2)}, quota ${l.cpu_quota} %`],
        ["Load", `${l.demand.toFixed(2)} CPUs wanted (load average ${l.loadavg.toFixed(2)})`],
        ["Memory", `${mib(l.mem_total_kib - l.mem_free_kib)} in use of ${mib(l.mem_total_kib)}`],
        ["Jobs", `${l.jobs}, of them ${l.guests} guests; moved in ${l.moved_in}, out ${l.moved_out} in the last minute`],
        ["Knobs", knobNames(l.knobs).join(", ") || "none"],
        ["Takes moved jobs", l.criu ? "yes (CRIU works)" : "no (CRIU does not work here)"]);
    }
  }
  $("#node-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("#node-power").hidden = !n || n.state !== "alive";
  const jobs = sortedJobs(state.jobs.filter((j) => j.node === state.node));
  jobHead($("#node-jobs"), false);
  $("#node-jobs tbody").replaceChildren(...(jobs.length ? jobs.map((j) => jobRow(j, false))
    : [el("tr", {}, el("td", { colspan: jobColumns.length }, "no cluster job runs here"))]));
}

// --- migration monitor -----------------------------------------------------

const C = 400, R = 290;
let positions = new Map();
const failures = new Map(); // job → [reason, until ms]

function layout(nodes) {
  positions = new Map();
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2;
    positions.set(n.name, [C + R * Math.cos(a), C + R * Math.sin(a)]);
  });
}

function jobSpot(node, i, count) {
  const [x, y] = positions.get(node) ?? [C, C];
  const ring = 58 + 16 * Math.floor(i / 16);
  const a = (2 * Math.PI * (i % 16)) / Math.min(16, Math.max(1, count)) - Math.PI / 2;
  return [x + ring * Math.cos(a), y + ring * Math.sin(a)];
}

function svgPoint(svg, ev) {
  const p = svg.createSVGPoint();
  p.x = ev.clientX; p.y = ev.clientY;
  return p.matrixTransform(svg.getScreenCTM().inverse());
}

function nodeAt(x, y) {
  for (const [name, [nx, ny]] of positions) if (Math.hypot(nx - x, ny - y) < 48) return name;
  return null;
}

let picked = null; // a job chosen by keyboard, waiting for a node
let drag = null; // a job being dragged: { job, dot, from }

function renderMonitor(state) {
  // A dot being dragged stays where the pointer has it.
  if (drag) return;
  const svg = $("#monitor");
  const nodes = state.status?.nodes ?? [];
  layout(nodes);
  const now = Date.now();
  for (const m of state.markers) {
    if (m.kind === "move-failed" && m.job && now - m.at_ms < 15000) failures.set(m.job, [m.text, m.at_ms + 15000]);
  }
  const parts = [];
  for (const n of nodes) {
    const [x, y] = positions.get(n.name);
    const g = el("svg:g", { class: `node ${n.state}`, "data-node": n.name, tabindex: 0, role: "button",
      "aria-label": `node ${n.name}, ${n.state}${picked ? `: press Enter to move ${picked} here` : ""}` },
      el("svg:circle", { cx: x, cy: y, r: 40 }),
      el("svg:text", { x, y: y + 5 }, n.name.length > 9 ? `…${n.name.slice(-8)}` : n.name),
      el("svg:title", {}, `${n.name} (${n.state})`));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && picked && state.access === "steer") { const job = picked; picked = null; migrate([job], n.name); }
    });
    parts.push(g);
  }
  const byNode = new Map();
  for (const j of state.jobs) byNode.set(j.node, [...(byNode.get(j.node) ?? []), j]);
  for (const [node, jobs] of byNode) {
    jobs.forEach((j, i) => {
      const [x, y] = jobSpot(node, i, jobs.length);
      const fail = failures.get(j.job);
      const dot = el("svg:circle", { class: `job${fail && fail[1] > now ? " failed" : ""}`, cx: x, cy: y, r: 9, tabindex: 0,
        "data-job": j.job, role: "button", "aria-label": `job ${j.job} on ${node}: Enter picks it, h sends it home` },
        el("svg:title", {}, `${j.job}: ${j.argv.join(" ")} (on ${node}, home ${j.home})${fail ? `\n${fail[0]}` : ""}`));
      parts.push(dot);
      if (fail && fail[1] > now) parts.push(el("svg:text", { class: "reason", x: x + 12, y: y - 10 }, fail[0].slice(0, 60)));
    });
  }
  for (const t of trails) if (t.until > now) parts.push(t.line);
  svg.replaceChildren(...parts);
}

let trails = [];

/** Draws each move since the last job table: a trail and a dot along it. */
function animateMoves(state, old) {
  const svg = $("#monitor");
  const was = new Map(old.map((j) => [j.job, j.node]));
  const now = Date.now();
  trails = trails.filter((t) => t.until > now);
  for (const j of state.jobs) {
    const from = was.get(j.job);
    if (!from || from === j.node || !positions.has(from) || !positions.has(j.node)) continue;
    const [x1, y1] = positions.get(from), [x2, y2] = positions.get(j.node);
    trails.push({ line: el("svg:line", { class: "trail", x1, y1, x2, y2 }), until: now + 4000 });
    const dot = el("svg:circle", { class: "job moving", r: 9, cx: x1, cy: y1 });
    svg.append(dot);
    const t0 = performance.now();
    const step = (t) => {
      const k = Math.min(1, (t - t0) / 900);
      dot.setAttribute("cx", x1 + (x2 - x1) * k);
      dot.setAttribute("cy", y1 + (y2 - y1) * k);
      if (k < 1) requestAnimationFrame(step); else dot.remove();
    };
    requestAnimationFrame(step);
  }
}

function monitorInput(state) {
  const svg = $("#monitor");
  svg.addEventListener("pointerdown", (e) => {
    const job = e.target.dataset?.job;
    if (!job || state.access !== "steer") return;
    drag = { job, dot: e.target, from: state.jobs.find((j) => j.job === job)?.node };
    e.target.setPointerCapture(e.pointerId);
  });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const p = svgPoint(svg, e);
    drag.dot.setAttribute("cx", p.x);
    drag.dot.setAttribute("cy", p.y);
    const over = nodeAt(p.x, p.y);
    for (const g of svg.querySelectorAll(".node")) g.classList.toggle("drop", g.dataset.node === over && over !== drag.from);
  });
  svg.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const p = svgPoint(svg, e);
    const to = nodeAt(p.x, p.y);
    const { job, from } = drag;
    drag = null;
    if (to && to !== from) migrate([job], to); else renderMonitor(state);
  });
  svg.addEventListener("dblclick", (e) => {
    const job = e.target.dataset?.job;
    if (job && state.access === "steer") migrate([job], "home");
  });
  svg.addEventListener("keydown", (e) => {
    const job = e.target.dataset?.job;
    if (!job || state.access !== "steer") return;
    if (e.key === "h") migrate([job], "home");
    if (e.key === "Enter") { picked = job; notice(`job ${job} picked: focus a node and press Enter to move it there`); }
  });
}

// --- history ---------------------------------------------------------------

let chart = null;
let historySince = 0;
let historyTimer = null;
const palette = ["#3182ce", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#e53e3e", "#4a5568"];

async function loadHistory() {
  const metric = $("#metric").value;
  const range = Number($("#range").value);
  historySince = Math.floor(Date.now() / 1000) - range;
  let d;
  try {
    d = await api("GET", `/api/history?metric=${metric}&since=${historySince}`);
  } catch (e) {
    notice(e.message, true);
    return;
  }
  const s = d.series;
  const names = Object.keys(s.nodes);
  const data = [s.t, ...names.map((n) => s.nodes[n]), s.total];
  const unit = { load: "CPUs", mem: "MiB", jobs: "jobs" }[metric];
  const markers = d.markers;
  const opts = {
    width: Math.max(300, $("#chart").clientWidth || 800),
    height: 320,
    scales: { x: { time: true } },
    axes: [{}, { label: unit }],
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], spanGaps: false })),
      { label: "cluster total", stroke: "#1d1d1b", width: 2, dash: [6, 3] }],
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const m of markers) {
          const x = u.valToPos(m.at_ms / 1000, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = m.kind === "migration" ? "#3182ce88" : m.kind === "down" || m.kind === "move-failed" ? "#c53030aa" : "#6b6b6688";
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
  if (chart) chart.destroy();
  chart = new uPlot(opts, data, $("#chart"));
  $("#markers").replaceChildren(...[...markers].reverse().slice(0, 200).map((m) =>
    el("li", { "data-kind": m.kind }, `${new Date(m.at_ms).toLocaleTimeString()} ${m.text}`)));
  await loadMoment();
}

async function loadMoment() {
  const k = Number($("#moment").value) / 1000;
  const now = Date.now();
  const at = Math.round(historySince * 1000 + k * (now - historySince * 1000));
  $("#moment-label").textContent = new Date(at).toLocaleString();
  try {
    const d = await api("GET", `/api/history/jobs?at=${at}`);
    $("#moment-jobs tbody").replaceChildren(...(d.stays.length
      ? d.stays.map((s) => el("tr", {}, el("td", {}, s.job), el("td", { class: "cmd" }, s.command), el("td", {}, s.node)))
      : [el("tr", {}, el("td", { colspan: 3 }, "no cluster job ran then"))]));
  } catch (e) {
    notice(e.message, true);
  }
}

// --- entry points ----------------------------------------------------------

/** Wires the controls once. */
export function init(state) {
  currentState = state;
  $("#job-filter").addEventListener("input", () => renderJobs(state));
  $("#job-move").addEventListener("click", () => {
    if (!selected.size) { notice("select jobs first", true); return; }
    migrate([...selected], $("#job-target").value);
  });
  for (const b of document.querySelectorAll("#view-jobs button[data-signal]")) {
    b.addEventListener("click", () => {
      if (!selected.size) { notice("select jobs first", true); return; }
      const sig = b.dataset.signal;
      if ((sig === "KILL" || sig === "TERM") && !confirm(`Send SIG${sig} to ${selected.size} job(s)? They will end.`)) return;
      steerJobs([...selected], { signal: sig });
    });
  }
  $("#job-renice").addEventListener("click", () => {
    if (!selected.size) { notice("select jobs first", true); return; }
    steerJobs([...selected], { nice: Number($("#job-nice").value) });
  });
  $("#node-reboot").addEventListener("click", () => power(state.node, "reboot"));
  $("#node-poweroff").addEventListener("click", () => power(state.node, "poweroff"));
  $("#metric").addEventListener("change", loadHistory);
  $("#range").addEventListener("change", loadHistory);
  $("#moment").addEventListener("input", loadMoment);
  monitorInput(state);
}

/** Draws the view shown. */
export function render(state) {
  currentState = state;
  clearInterval(historyTimer);
  historyTimer = null;
  if (!state.status) return;
  if (state.view === "nodes") renderNodes(state);
  if (state.view === "node") renderNode(state);
  if (state.view === "jobs") renderJobs(state);
  if (state.view === "monitor") renderMonitor(state);
  if (state.view === "history") {
    loadHistory();
    historyTimer = setInterval(loadHistory, 5000);
  }
}

/** A `status` event arrived. */
export function statusChanged(state) {
  currentState = state;
  $("#cluster-name").textContent = state.status.cluster;
  const e = state.efficiency;
  $("#efficiency .fill").style.width = `${e ?? 0}%`;
  $("#efficiency .value").textContent = e === null ? "–" : `${Math.round(e)} %`;
  if (state.view === "nodes") renderNodes(state);
  if (state.view === "node") renderNode(state);
  if (state.view === "monitor") renderMonitor(state);
  if (state.view === "history" && !historyTimer) render(state);
}

/** A `jobs` event arrived; `old` is the table before it. */
export function jobsChanged(state, old) {
  currentState = state;
  if (state.view === "jobs") renderJobs(state);
  if (state.view === "node") renderNode(state);
  if (state.view === "monitor") { renderMonitor(state); animateMoves(state, old); }
}
