// The vmseal verifier's web page: VMs, their trust score over time, the pages that changed in
// the latest snapshot, and the open alerts. Read-only; every request is made with the browser's
// client certificate (admin or viewer). Built with the DOM API only: every string from the
// server becomes text, never markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = { vms: [], selected: null };

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function get(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${path}: ${r.status} ${body.code || ""} ${body.message || ""}`);
  return body;
}

function tier(t) {
  return el("span", { class: `tier ${t || "none"}` }, t || "not appraised");
}

function when(t) {
  return t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "-";
}

function renderVms() {
  const body = document.querySelector("#vms tbody");
  body.replaceChildren();
  for (const v of state.vms) {
    const row = el("tr", { "data-vm": v.vm_id },
      el("td", {}, v.vm_id), el("td", {}, v.host_id), el("td", {}, tier(v.tier)),
      el("td", { class: "num" }, v.score ?? "-"), el("td", { class: "num" }, v.threshold),
      el("td", { class: "num" }, v.last_seq == null ? "-" : `#${v.last_seq}`),
      el("td", { class: "num" }, v.baseline_version == null ? "none" : `v${v.baseline_version}`));
    if (v.vm_id === state.selected) row.classList.add("selected");
    row.addEventListener("click", () => { state.selected = v.vm_id; refresh(); });
    body.append(row);
  }
  if (!state.vms.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no VMs registered yet")));
}

function renderChart(vm, appraisals) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  document.getElementById("detail-title").textContent = `Trust score over time: ${vm.vm_id}`;
  const W = 640, H = 200, L = 36, R = 12, T = 12, B = 26;
  const y = (s) => T + (H - T - B) * (1 - s / 100);
  for (const s of [0, 25, 50, 75, 100]) {
    svg.append(el("svg:line", { class: "grid", x1: L, x2: W - R, y1: y(s), y2: y(s) }));
    svg.append(el("svg:text", { x: 4, y: y(s) + 4 }, s));
  }
  svg.append(el("svg:line", { class: "threshold", x1: L, x2: W - R, y1: y(vm.threshold), y2: y(vm.threshold) }));
  svg.append(el("svg:text", { x: W - R - 90, y: y(vm.threshold) - 4 }, `threshold ${vm.threshold}`));
  const pts = appraisals.slice().reverse();
  if (!pts.length) {
    svg.append(el("svg:text", { x: L + 10, y: H / 2 }, "no appraisals yet"));
    return;
  }
  const x = (i) => pts.length === 1 ? (L + W - R) / 2 : L + (W - L - R) * i / (pts.length - 1);
  svg.append(el("svg:polyline", { class: "line", points: pts.map((a, i) => `${x(i)},${y(a.score)}`).join(" ") }));
  pts.forEach((a, i) => {
    const dot = el("svg:circle", { cx: x(i), cy: y(a.score), r: 4, fill: `var(--${a.tier})`, "data-seq": a.seq });
    dot.append(el("svg:title", {}, `#${a.seq}: ${a.score} (${a.tier})`));
    svg.append(dot);
  });
  const step = Math.max(1, Math.ceil(pts.length / 10));
  pts.forEach((a, i) => {
    if (i % step === 0 || i === pts.length - 1) svg.append(el("svg:text", { x: x(i) - 6, y: H - 8 }, `#${a.seq}`));
  });
}

// One cell per page, or per run of pages when a region has more than MAX_CELLS.
const MAX_CELLS = 1024, COLS = 48, CELL = 12;

function renderPages(latest) {
  const box = document.getElementById("pages");
  box.replaceChildren();
  const caption = document.getElementById("pages-caption");
  if (!latest) { caption.textContent = "no appraisal yet"; return; }
  const changes = new Map((latest.changes || []).map((c) => [c.region, c]));
  const total = [...changes.values()].reduce((n, c) => n + c.changed_pages, 0);
  caption.textContent = `snapshot #${latest.seq}, score ${latest.score} (${latest.tier}): ` +
    (total ? `${total} page(s) differ from baseline v${latest.baseline_version}` : "no page differs from the baseline");
  for (const r of latest.regions || []) {
    const ch = changes.get(r.name);
    const per = Math.max(1, Math.ceil(r.pages / MAX_CELLS));
    const cells = Math.ceil(r.pages / per);
    const hit = new Set();
    for (const [a, b] of (ch && ch.changed_ranges) || []) {
      for (let c = Math.floor(a / per); c <= Math.floor((b - 1) / per); c++) hit.add(c);
    }
    const rows = Math.ceil(cells / COLS);
    const svg = el("svg:svg", { width: Math.min(cells, COLS) * CELL, height: rows * CELL, "data-region": r.name });
    for (let c = 0; c < cells; c++) {
      const rect = el("svg:rect", { x: (c % COLS) * CELL, y: Math.floor(c / COLS) * CELL, width: CELL - 1, height: CELL - 1 });
      if (hit.has(c)) rect.setAttribute("class", "changed");
      svg.append(rect);
    }
    const what = ch ? `${ch.changed_pages} of ${r.pages} page(s) changed` : `${r.pages} page(s), unchanged`;
    const scale = per > 1 ? ` · one cell = ${per} pages` : "";
    box.append(el("div", { class: "region" },
      el("div", { class: "label" }, el("b", {}, r.name), ` · ${r.class} · ${r.severity} — ${what}${scale}`), svg));
  }
}

// What the verifier found in the guest kernel's own structures: hidden processes and modules,
// hooked system calls and gates, new processes (docs/kernel-objects.md).
function renderKernel(latest) {
  const list = document.getElementById("kernel");
  list.replaceChildren();
  const caption = document.getElementById("kernel-caption");
  const k = latest && latest.kernel;
  if (!k) { caption.textContent = "the latest snapshot carries no kernel objects"; return; }
  caption.textContent = `${k.processes} process(es), ${k.modules} module(s)` +
    (k.golden ? "" : "; no golden kernel state to compare with yet") +
    (k.findings.length ? `: ${k.findings.length} finding(s), ${k.penalty} point(s)` : ": nothing found");
  for (const f of k.findings) {
    list.append(el("li", { "data-kind": f.kind, "data-severity": f.severity },
      el("span", { class: `sev ${f.severity}` }, f.severity), ` ${f.kind.replaceAll("_", " ")} ${f.subject}: ${f.detail}`));
  }
}

function renderAlerts(alerts) {
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren();
  for (const a of alerts) {
    body.append(el("tr", { "data-alert": a.alert_id },
      el("td", { class: "num" }, a.alert_id), el("td", {}, when(a.created_at)), el("td", {}, a.vm_id),
      el("td", { class: "kind" }, a.kind), el("td", {}, a.state + (a.silenced ? " (silenced)" : "")), el("td", {}, a.message)));
  }
  if (!alerts.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no open alerts")));
}

async function refresh() {
  try {
    const [vms, alerts] = await Promise.all([get("/v1/vms"), get("/v1/alerts?state=active&limit=50")]);
    state.vms = vms.vms;
    if (!state.vms.some((v) => v.vm_id === state.selected)) {
      // The VM most in need of attention first.
      const worst = state.vms.slice().sort((a, b) => (a.score ?? 101) - (b.score ?? 101))[0];
      state.selected = worst ? worst.vm_id : null;
    }
    renderVms();
    renderAlerts(alerts.alerts);
    const vm = state.vms.find((v) => v.vm_id === state.selected);
    if (vm) {
      const list = await get(`/v1/vms/${encodeURIComponent(vm.vm_id)}/appraisals?limit=100`);
      renderChart(vm, list.appraisals);
      renderPages(list.appraisals[0]);
      renderKernel(list.appraisals[0]);
    }
    document.getElementById("status").textContent = `updated ${when(Math.floor(Date.now() / 1000))}`;
    document.body.dataset.ready = "true";
  } catch (e) {
    document.getElementById("status").textContent = `error: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 10000);
// New alerts refresh the page at once.
if (window.EventSource) new EventSource("/v1/alerts/stream").addEventListener("alert", refresh);
