// Flotilla's web dashboard: polls api/state every second and draws what it says
// (the document is placement/dashboard.py's). Plain JavaScript, no library.
"use strict";

const POLL_MS = 1000;
const PLOT_RIGHT = 140;   // px right of the heat map's plot area: the shards' axis
const PLOT_BOTTOM = 20;   // px below it: the time axis
const MIN_COLUMNS = 60;   // a column is at most plot width / this wide

const heat = { ring: null, rows: [], samples: [], nextSeq: 0, maxSamples: 600, intervalS: 1 };
let doc = null;
let lastLeaders = {};

// -- small helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtRate(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  if (v < 0.1) return v.toPrecision(2);
  if (v < 10) return v.toFixed(1);
  return Math.round(v).toLocaleString();
}

function fmtBytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function fmtCount(v) { return v === null || v === undefined ? "–" : v.toLocaleString(); }

function fmtSlots(ranges) { return ranges.map(([lo, hi]) => hi - lo === 1 ? `${lo}` : `${lo}–${hi - 1}`).join(", "); }

function fmtTime(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// -- tables -------------------------------------------------------------------------------

function renderHeader(d) {
  const stores = d.nodes.filter(n => n.kind === "store");
  const routers = d.nodes.filter(n => n.kind === "router");
  document.getElementById("summary").textContent = d.cluster_id
    ? `cluster ${d.cluster_id} · map version ${d.map_version} · ${plural(stores.length, "store")} · ${plural(routers.length, "router")} · ${plural(d.shards.length, "shard")} · ${d.slot_count} slots`
    : "cluster not bootstrapped yet";
  const servers = d.placement_servers.map(p => `${p.id}${p.leader ? " (leader)" : ""}`).join(", ");
  const via = d.proxied_by ? ` · served by ${d.proxied_by}, from the leader` : ` · served by ${d.served_by}`;
  const place = document.getElementById("placement");
  place.textContent = `placement: ${servers || "–"}${via}`;
  place.dataset.leader = d.leader_id;
  const w = document.getElementById("warning");
  w.hidden = !d.warning;
  w.textContent = d.warning || "";
}

function stateBadge(n) {
  const s = n.suspect && n.state === "up" ? "suspect" : n.state;
  return el("span", { class: `badge ${s}` }, s);
}

function renderNodes(d) {
  const rows = d.nodes.map(n => el("tr", { "data-node": n.id, "data-state": n.suspect && n.state === "up" ? "suspect" : n.state, "data-replicas": n.replicas, "data-leaders": n.leaders },
    el("td", {}, n.id),
    el("td", {}, n.kind),
    el("td", {}, n.address),
    el("td", {}, n.zone || "–"),
    el("td", {}, stateBadge(n), n.alarms && n.alarms.length ? ` ${n.alarms.join(" ")}` : null),
    el("td", { class: "num" }, n.kind === "store" ? n.replicas + (n.learners ? ` (${n.learners} learner)` : "") : "–"),
    el("td", { class: "num" }, n.kind === "store" ? n.leaders : "–"),
    el("td", { class: "num" }, fmtRate(n.reads_per_s)),
    el("td", { class: "num" }, fmtRate(n.writes_per_s)),
    el("td", { class: "num" }, n.heard_s_ago === null || n.heard_s_ago === undefined ? "–" : `${n.heard_s_ago.toFixed(1)} s ago`),
  ));
  fill(document.querySelector("#nodes tbody"), rows);
}

function renderShards(d) {
  const rows = d.shards.map(s => {
    const replicas = s.replicas.map(r => el("span", { class: `replica${r.node === s.leader ? " leader" : ""}${r.learner ? " learner" : ""}`, title: r.node === s.leader ? "leader" : (r.learner ? "learner" : "voter") },
      `${r.node}${r.node === s.leader ? "★" : ""}${r.learner ? " (learner)" : ""}`));
    const changed = lastLeaders[s.id] !== undefined && lastLeaders[s.id] !== s.leader;
    return el("tr", { "data-shard": s.id, "data-leader": s.leader, "data-slots": fmtSlots(s.slots), "data-replicas": s.replicas.map(r => r.node).join(","), class: changed ? "leader-changed" : null },
      el("td", { class: "shard-id" }, s.id),
      el("td", { class: "slots" }, fmtSlots(s.slots), el("span", { class: "muted" }, ` (${s.slot_count})`)),
      el("td", { class: "replicas" }, ...replicas.flatMap((r, i) => i ? [" ", r] : [r])),
      el("td", { class: "leader" }, s.leader || "none"),
      el("td", {}, s.epoch),
      el("td", { class: "num" }, fmtCount(s.keys)),
      el("td", { class: "num" }, fmtBytes(s.bytes)),
      el("td", { class: "num" }, fmtRate(s.reads_per_s)),
      el("td", { class: "num" }, fmtRate(s.writes_per_s)),
      el("td", {}, s.operator ? el("a", { href: `#op-${s.operator}` }, `#${s.operator}`) : "–"),
    );
  });
  lastLeaders = Object.fromEntries(d.shards.map(s => [s.id, s.leader]));
  fill(document.querySelector("#shards tbody"), rows);
}

function renderOperators(d) {
  // Running ones first, then the recently ended, newest first.
  const ops = [...d.operators].sort((a, b) => (a.state === "running") !== (b.state === "running") ? (a.state === "running" ? -1 : 1) : b.id - a.id);
  const rows = ops.map(o => el("tr", { id: `op-${o.id}`, "data-operator": o.id, "data-kind": o.kind, "data-shard": o.shard, "data-state": o.state, "data-progress": o.progress },
    el("td", {}, o.id),
    el("td", {}, o.kind),
    el("td", {}, o.shards.length > 1 ? o.shards.join(", ") : o.shard),
    el("td", {}, el("span", { class: `badge ${o.state}` }, o.state)),
    el("td", { class: "progress" }, el("progress", { max: o.steps.length || 1, value: o.step }), o.progress),
    el("td", {}, ...o.steps.map((s, i) => el("span", { class: `step${i < o.step ? " done" : ""}${i === o.step && o.state === "running" ? " current" : ""}` }, s))),
    el("td", { class: "num" }, `${o.age_s.toFixed(1)} s`),
    el("td", {}, o.note),
  ));
  fill(document.querySelector("#operators tbody"), rows);
  document.getElementById("no-operators").hidden = rows.length > 0;
}

// -- the heat map -------------------------------------------------------------------------

function takeHeat(h) {
  const sameRows = JSON.stringify(h.rows) === JSON.stringify(heat.rows);
  if (h.ring !== heat.ring || !sameRows || (h.first_seq !== undefined && h.first_seq > heat.nextSeq && heat.samples.length)) {
    heat.ring = h.ring;
    heat.rows = h.rows;
    heat.samples = [];
  }
  heat.maxSamples = h.max_samples || heat.maxSamples;
  heat.intervalS = h.interval_s || heat.intervalS;
  for (const s of h.samples) {
    if (!heat.samples.length || s.seq > heat.samples[heat.samples.length - 1].seq) heat.samples.push(s);
  }
  if (heat.samples.length > heat.maxSamples) heat.samples.splice(0, heat.samples.length - heat.maxSamples);
  heat.nextSeq = h.next_seq !== undefined ? h.next_seq : (heat.samples.length ? heat.samples[heat.samples.length - 1].seq + 1 : 0);
}

// Dark blue through magenta and orange to pale yellow (the Key Visualizer's look).
const STOPS = [[0, [20, 24, 66]], [0.25, [72, 30, 140]], [0.5, [190, 48, 122]], [0.75, [245, 140, 60]], [1, [255, 245, 175]]];

function colour(t) {
  if (t <= 0) return [12, 15, 26];
  t = Math.min(1, t);
  for (let i = 1; i < STOPS.length; i++) {
    const [t1, c1] = STOPS[i];
    const [t0, c0] = STOPS[i - 1];
    if (t <= t1) {
      const f = (t - t0) / (t1 - t0);
      return c0.map((v, k) => Math.round(v + (c1[k] - v) * f));
    }
  }
  return STOPS[STOPS.length - 1][1];
}

function shardOfSlot(d) {
  const owner = new Array(d.slot_count).fill(0);
  for (const s of d.shards) for (const [lo, hi] of s.slots) for (let i = lo; i < hi && i < owner.length; i++) owner[i] = s.id;
  return owner;
}

function rowShards(owner, [lo, hi]) {
  const ids = new Set();
  for (let i = lo; i < hi; i++) if (owner[i]) ids.add(owner[i]);
  return [...ids];
}

function drawHeat(canvas, metric, d) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const plotW = W - PLOT_RIGHT, plotH = H - PLOT_BOTTOM;
  ctx.fillStyle = "#0c0f1a";
  ctx.fillRect(0, 0, W, H);
  const samples = heat.samples, rows = heat.rows;
  let max = 0;
  for (const s of samples) for (const v of s[metric]) if (v > max) max = v;
  canvas.dataset.samples = samples.length;
  canvas.dataset.rows = rows.length;
  canvas.dataset.max = max;
  document.getElementById(`heat-${metric}-max`).textContent = samples.length ? `(max ${fmtRate(max)}/s per slot)` : "(waiting for samples)";
  if (!rows.length) return;
  const slots = d.slot_count || rows[rows.length - 1][1];
  const y = slot => Math.round(slot / slots * plotH);
  const colW = plotW / Math.max(samples.length, MIN_COLUMNS);
  const logMax = Math.log1p(max);
  samples.forEach((s, i) => {
    const x0 = Math.floor(plotW - (samples.length - i) * colW), x1 = Math.floor(plotW - (samples.length - i - 1) * colW);
    s[metric].forEach((v, r) => {
      const [lo, hi] = rows[r];
      const [R, G, B] = colour(max > 0 ? Math.log1p(v) / logMax : 0);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(x0, y(lo), Math.max(1, x1 - x0), Math.max(1, y(hi) - y(lo)));
    });
  });
  // The shards' axis: each slot range of each shard, as the map holds it now.
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  const ranges = [];
  for (const sh of d.shards) for (const [lo, hi] of sh.slots) ranges.push([lo, hi, sh.id]);
  ranges.sort((a, b) => a[0] - b[0]);
  for (const [lo, hi, id] of ranges) {
    const y0 = y(lo), y1 = y(hi);
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.beginPath(); ctx.moveTo(0, y0 + 0.5); ctx.lineTo(plotW + 8, y0 + 0.5); ctx.stroke();
    ctx.fillStyle = "#cfd6e4";
    if (y1 - y0 >= 11) ctx.fillText(`shard ${id}  ${lo}–${hi - 1}`, plotW + 12, (y0 + y1) / 2);
  }
  // The time axis.
  ctx.fillStyle = "#cfd6e4";
  ctx.textBaseline = "alphabetic";
  if (samples.length) {
    const first = samples[0], last = samples[samples.length - 1];
    ctx.textAlign = "right";
    ctx.fillText(fmtTime(last.t_ms), plotW, H - 5);
    ctx.textAlign = "left";
    ctx.fillText(fmtTime(first.t_ms), Math.max(0, Math.floor(plotW - samples.length * colW)), H - 5);
  }
  ctx.textAlign = "left";
}

function drawScale() {
  const c = document.getElementById("heat-scale");
  const ctx = c.getContext("2d");
  for (let x = 0; x < c.width; x++) {
    const [R, G, B] = colour((x + 1) / c.width);
    ctx.fillStyle = `rgb(${R},${G},${B})`;
    ctx.fillRect(x, 0, 1, c.height);
  }
}

function renderHottest(d) {
  // The latest sample's hottest slot ranges: adjacent rows of one shard with the same rate are one range.
  const list = document.getElementById("hottest");
  const last = heat.samples[heat.samples.length - 1];
  if (!last) { list.replaceChildren(el("li", { class: "muted" }, "no samples yet")); return; }
  const owner = shardOfSlot(d);
  const items = [];
  for (const metric of ["writes", "reads"]) {
    const groups = [];
    last[metric].forEach((v, r) => {
      const [lo, hi] = heat.rows[r];
      const shards = rowShards(owner, [lo, hi]).join(",");
      const g = groups[groups.length - 1];
      if (g && g.v === v && g.shards === shards && g.hi === lo) g.hi = hi;
      else groups.push({ v, lo, hi, shards });
    });
    const top = groups.filter(g => g.v > 0).sort((a, b) => b.v - a.v || a.lo - b.lo).slice(0, 3);
    for (const g of top) {
      items.push(el("li", { "data-metric": metric, "data-slots": `${g.lo}-${g.hi - 1}`, "data-shards": g.shards, "data-rate": g.v },
        `${metric}: slots ${g.lo}–${g.hi - 1} (shard ${g.shards.replaceAll(",", ", ") || "?"}): ${fmtRate(g.v)}/s per slot, ${fmtRate(g.v * (g.hi - g.lo))}/s in all`));
    }
  }
  list.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "no reads or writes in the latest sample")]));
}

function wireTooltip(canvas, metric) {
  const tip = document.getElementById("heat-tooltip");
  canvas.addEventListener("mousemove", ev => {
    if (!doc || !heat.samples.length || !heat.rows.length) return;
    const rect = canvas.getBoundingClientRect();
    const sx = canvas.width / rect.width, sy = canvas.height / rect.height;
    const x = (ev.clientX - rect.left) * sx, yy = (ev.clientY - rect.top) * sy;
    const plotW = canvas.width - PLOT_RIGHT, plotH = canvas.height - PLOT_BOTTOM;
    const colW = plotW / Math.max(heat.samples.length, MIN_COLUMNS);
    const i = heat.samples.length - 1 - Math.floor((plotW - x) / colW);
    if (x >= plotW || yy >= plotH || i < 0 || i >= heat.samples.length) { tip.hidden = true; return; }
    const slot = Math.floor(yy / plotH * doc.slot_count);
    const r = heat.rows.findIndex(([lo, hi]) => slot >= lo && slot < hi);
    if (r < 0) { tip.hidden = true; return; }
    const [lo, hi] = heat.rows[r];
    const s = heat.samples[i];
    const shards = rowShards(shardOfSlot(doc), [lo, hi]);
    tip.textContent = `${fmtTime(s.t_ms)} · slots ${lo}–${hi - 1} (shard ${shards.join(", ")}) · ${metric} ${fmtRate(s[metric][r])}/s per slot`;
    tip.style.left = `${canvas.offsetLeft + ev.offsetX + 12}px`;
    tip.style.top = `${canvas.offsetTop + ev.offsetY + 12}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
}

// -- the loop -----------------------------------------------------------------------------

function render(d) {
  renderHeader(d);
  renderNodes(d);
  renderShards(d);
  renderOperators(d);
  takeHeat(d.heat);
  drawHeat(document.getElementById("heat-writes"), "writes", d);
  drawHeat(document.getElementById("heat-reads"), "reads", d);
  renderHottest(d);
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const get = async since => {
      const resp = await fetch(`api/state?since=${since}`, { cache: "no-store" });
      if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
      return resp.json();
    };
    let d = await get(heat.nextSeq);
    // Another ring (a new placement leader): its samples are numbered anew, so take them all.
    if (d.heat.ring !== heat.ring && heat.nextSeq > 0) d = await get(0);
    doc = d;
    render(d);
    status.dataset.state = "live";
    status.dataset.updated = d.now_ms;
    status.textContent = `updated ${fmtTime(d.now_ms)}`;
  } catch (err) {
    status.dataset.state = "error";
    status.textContent = `cannot reach the placement server (${err.message}); retrying`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

drawScale();
wireTooltip(document.getElementById("heat-writes"), "writes");
wireTooltip(document.getElementById("heat-reads"), "reads");
poll();
