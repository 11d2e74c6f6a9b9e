"""The explorer page's script (plain JavaScript, no libraries), inlined by :mod:`minicomp.explore.page`.

State is one object ``S``; every view is redrawn from it by ``render()``. Elements
that stand for a value carry ``data-v`` (its name): clicking one selects the value,
and every element of every view with that name is highlighted. ``window.explorer``
exposes the state and the step functions for the browser tests.
"""
from __future__ import annotations

SCRIPT = r"""
"use strict";
const S = {data: null, pass: 0, step: 0, tab: "ir", sel: null, kernel: null, vb: null, svgShown: null, follow: true};
const $ = (id) => document.getElementById(id);
function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
function valueSpans(line) {
  return esc(line).replace(/%([A-Za-z0-9_.]+)/g, (m, n) => `<span class="v" data-v="${n}">%${n}</span>`);
}
function fmtNum(x) {
  if (x === null || x === undefined) return "-";
  if (typeof x === "string") return x;
  if (x === 0) return "0";
  return Math.abs(x) >= 1e-3 && Math.abs(x) < 1e4 ? x.toPrecision(3) : x.toExponential(2);
}
function fmtBytes(b) {
  if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
  if (b >= 1 << 10) return (b / (1 << 10)).toFixed(1) + " KiB";
  return b + " B";
}
function cur() { return S.data.passes[S.pass]; }

async function load() {
  const el = $("data");
  if (el && el.textContent.trim()) {
    S.data = JSON.parse(el.textContent);
  } else {
    S.data = await fetchReport();
  }
  S.pass = Math.max(0, S.data.passes.length - 1);
  fromHash();
  S.follow = S.data.pending.includes("passes") && !new URLSearchParams(location.hash.slice(1)).has("pass");
  setupEvents();
  render();
  if (S.data.pending.length) setTimeout(poll, 250);
}
async function fetchReport() {
  const r = await fetch("api/report.json", {cache: "no-store"});
  if (!r.ok) throw new Error("api/report.json: HTTP " + r.status);
  return r.json();
}
async function poll() {
  try {
    S.data = await fetchReport();
  } catch (e) {
    $("status").textContent = "lost the server: " + e.message;
    return;
  }
  if (S.follow) S.pass = Math.max(0, S.data.passes.length - 1);  // show each pass as it comes
  if (!S.data.pending.includes("passes")) S.follow = false;
  render();
  if (S.data.pending.length) setTimeout(poll, 300);
}

function render() {
  const d = S.data;
  $("ref").textContent = "target " + d.target + "; numbers checked against " + d.reference;
  const st = $("status");
  st.className = d.pending.length ? "pending" : "";
  st.textContent = d.pending.length ? "computing: " + d.pending.join(", ") + "..." : "";
  $("notes").textContent = d.notes.join("; ");
  renderPasses();
  renderTabs();
  if (!d.passes.length) return;  // still tracing: nothing to show yet
  renderNumeric();
  renderView();
  renderSelection();
  highlight();
  toHash();
}

function renderPasses() {
  const d = S.data;
  const rows = d.passes.map((p, i) => {
    const n = p.numeric;
    let num = "...";
    let cls = "pass";
    if (n) {
      if (n.ok === null) num = "-";
      else num = `<span class="${n.ok ? "ok" : "bad"}">${n.ok ? "&#10003;" : "&#10007;"} ${fmtNum(n.max_abs)}</span>`;
      if (n.ok === false) cls += " fail";
    }
    if (i === d.first_failure) { cls += " firstfail"; num += '<span class="tag">first beyond tolerance</span>'; }
    if (i === S.pass) cls += " sel";
    if (p.error) cls += " err";
    if (!p.changed && i > 0) cls += " same";
    const rw = p.rewrites.length ? p.rewrites.length : "";
    return `<tr class="${cls}" data-pass="${i}"><td>${i}</td><td class="nm">${esc(p.name)}${p.error ? " (failed)" : ""}</td>` +
      `<td>${p.nodes}</td><td>${p.kernels}</td><td>${fmtBytes(p.bytes)}</td><td>${p.ms.toFixed(2)}</td>` +
      `<td>${rw}</td><td class="num">${num}</td></tr>`;
  });
  $("passes").innerHTML = rows.join("");
}

function renderTabs() {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === S.tab);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("on", v.id === "v-" + S.tab);
}

function renderView() {
  if (S.tab === "ir") renderIR();
  else if (S.tab === "graph") renderGraph();
  else if (S.tab === "rw") renderRewrite();
  else if (S.tab === "kern") renderKernels();
  else renderDecisions();
}

function diffHTML(diff, only) {
  const keep = new Array(diff.length).fill(!only);
  if (only) {
    diff.forEach(([t], i) => {
      if (t !== " ") for (let j = Math.max(0, i - 3); j <= Math.min(diff.length - 1, i + 3); j++) keep[j] = true;
    });
  }
  const out = [];
  let folded = 0;
  diff.forEach(([t, line], i) => {
    if (!keep[i]) { folded++; return; }
    if (folded) { out.push(`<div class="fold">... ${folded} unchanged line(s)</div>`); folded = 0; }
    const cls = t === "+" ? "add" : t === "-" ? "del" : "ctx";
    out.push(`<div class="${cls}">${valueSpans(line)}</div>`);
  });
  if (folded) out.push(`<div class="fold">... ${folded} unchanged line(s)</div>`);
  return out.join("");
}

function renderIR() {
  const p = cur();
  let html = p.error ? `<div class="err">pass failed: ${esc(p.error)}</div>` : "";
  if (S.pass > 0 && !p.changed && !p.error) html += '<div class="fold">(this pass left the graph unchanged)</div>';
  $("ir").innerHTML = html + diffHTML(p.diff, $("onlychanges").checked);
}

function renderGraph() {
  const box = $("graphbox"), svg = cur().svg;
  if (S.svgShown !== svg) {
    box.innerHTML = svg || `<p class="fold">${S.data.pending.includes("passes") ? "drawing..." : "(no drawing)"}</p>`;
    S.svgShown = svg;
    fitGraph();
  }
}
function svgEl() { return $("graphbox").querySelector("svg"); }
function fitGraph() {
  const svg = svgEl();
  if (!svg) return;
  const w = parseFloat(svg.getAttribute("width")), h = parseFloat(svg.getAttribute("height"));
  S.vb = [0, 0, w, h];
  applyVB();
}
function applyVB() {
  const svg = svgEl();
  if (svg && S.vb) svg.setAttribute("viewBox", S.vb.map((x) => x.toFixed(1)).join(" "));
}
function zoom(factor, cx, cy) {
  if (!S.vb) return;
  const [x, y, w, h] = S.vb;
  const px = cx === undefined ? x + w / 2 : cx, py = cy === undefined ? y + h / 2 : cy;
  S.vb = [px - (px - x) * factor, py - (py - y) * factor, w * factor, h * factor];
  applyVB();
}

function renderRewrite() {
  const p = cur();
  const steps = p.rewrites;
  if (!steps.length) {
    const what = p.decisions.length ? "Its decisions are under 5 (decisions)." : "";
    $("rwhead").innerHTML = `<b>${esc(p.name)}</b>: no pattern rewrites recorded in this pass. ${what}`;
    $("rwdiff").innerHTML = diffHTML(p.diff, true);
    return;
  }
  S.step = Math.min(Math.max(S.step, 0), steps.length - 1);
  const s = steps[S.step];
  const added = s.added.length ? "; new: " + s.added.map((n) => `<span class="v" data-v="${esc(n)}">%${esc(n)}</span>`).join(", ") : "";
  $("rwhead").innerHTML = `<b>${esc(p.name)}</b> rewrite <b id="stepno">${S.step + 1}</b> of ${steps.length} ` +
    `(<span class="kb">n</span>/<span class="kb">p</span>): pattern <span class="pat">${esc(s.pattern)}</span> ` +
    `fired on <code>${valueSpans(s.node)}</code>${added}` + (s.loc ? ` <span class="muted">at ${esc(s.loc)}</span>` : "");
  $("rwdiff").innerHTML = s.diff ? diffHTML(s.diff, true) :
    `<div class="fold">(${esc(s.missing || "graph text not kept")})</div>`;
  if (s.matched.length) S.sel = s.matched[0];
}

function kernelsOf() { return S.data.kernels && S.data.kernels.kernels ? S.data.kernels.kernels : []; }
function renderKernels() {
  const K = S.data.kernels;
  if (!K) { $("kerns").innerHTML = '<p class="fold">compiling the kernels...</p>'; $("kdetail").innerHTML = ""; return; }
  if (K.error) { $("kerns").innerHTML = `<p class="err">${esc(K.error)}</p>`; $("kdetail").innerHTML = ""; return; }
  const timing = K.timing_error ? `<p class="err">no times: ${esc(K.timing_error)}</p>` :
    `<p>one call of the compiled program: <b>${fmtNum(K.call_us)} &micro;s</b> (each kernel timed alone, data hot in cache)</p>`;
  const rows = K.kernels.map((k) => {
    const node = k.node ? k.node.map((n) => `<span class="v" data-v="${esc(n)}">%${esc(n)}</span>`).join(", ") : "-";
    const share = k.share !== undefined && k.share !== null ? k.share : 0;
    const sharePct = k.share !== undefined && k.share !== null ? (100 * share).toFixed(1) + "%" : "-";
    return `<tr class="k${S.kernel === k.index ? " sel" : ""}" data-kernel="${k.index}" data-v="${esc((k.node || []).join(" "))}">` +
      `<td>${esc(k.name)}</td><td>${esc(k.kind)}</td><td>${node}</td><td>${fmtNum(k.us)}</td>` +
      `<td><span class="bar" style="width:${Math.min(100, 100 * share).toFixed(0)}px"></span> ${sharePct}</td></tr>`;
  });
  $("kerns").innerHTML = timing + "<table><thead><tr><th>kernel</th><th>kind</th><th>graph node</th>" +
    "<th>&micro;s</th><th>share of the call</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>";
  renderKernelDetail();
}
function kernelDecisions(k) {
  const names = new Set([...(k.node || []), ...k.outputs]);
  const out = [];
  for (const p of S.data.passes) {
    for (const line of p.decisions) {
      const used = line.match(/%([A-Za-z0-9_.]+)/g) || [];
      if (used.some((u) => names.has(u.slice(1)))) out.push(`[${p.name}] ${line}`);
    }
  }
  return out;
}
function renderKernelDetail() {
  const k = kernelsOf().find((x) => x.index === S.kernel);
  if (!k) { $("kdetail").innerHTML = '<p class="fold">click a kernel for its fusion decisions and code</p>'; return; }
  const dec = kernelDecisions(k);
  $("kdetail").innerHTML = `<h3>${esc(k.name)} (${esc(k.kind)})</h3>` +
    `<details open><summary>fusion decisions (explain)</summary><div class="code">` +
    (dec.length ? dec.map((l) => `<div>${valueSpans(l)}</div>`).join("") : '<div class="fold">none recorded for its values</div>') +
    `</div></details><details><summary>${esc(k.language)} (${k.source.split("\n").length} lines)</summary><pre>${esc(k.source)}</pre></details>` +
    (k.asm ? `<details><summary>assembly (${k.asm.split("\n").length} lines)</summary><pre>${esc(k.asm)}</pre></details>` : "");
}

function renderDecisions() {
  const p = cur();
  $("decs").innerHTML = p.decisions.length ? p.decisions.map((l) => `<div>${valueSpans(l)}</div>`).join("") :
    '<div class="fold">no decisions recorded by this pass</div>';
}

function renderNumeric() {
  const p = cur(), n = p.numeric, d = S.data;
  let html = `<h3>numeric check after ${esc(p.name)}</h3>`;
  if (!n) html += '<p class="fold">running the interpreter...</p>';
  else if (n.ok === null) html += `<p class="fold">${esc(n.skipped || "not checked")}</p>`;
  else {
    html += `<p class="${n.ok ? "numok" : "numbad"}" id="numverdict">${n.ok ? "within tolerance" : "BEYOND TOLERANCE"}</p>` +
      `<p>largest |difference| vs ${esc(d.reference)}: <b id="maxabs">${fmtNum(n.max_abs)}</b>` +
      ` (relative ${fmtNum(n.max_rel)})</p>`;
    if (n.vs_previous !== undefined && n.vs_previous !== null) html += `<p>moved by this pass: ${fmtNum(n.vs_previous)}</p>`;
    if (n.same_graph) html += '<p class="fold">same graph as the previous pass</p>';
    if (n.why) html += `<p class="err">${esc(n.why)}</p>`;
  }
  if (d.first_failure !== null && d.first_failure !== undefined) {
    html += `<p class="numbad">first pass beyond tolerance: #${d.first_failure} ${esc(d.passes[d.first_failure].name)}</p>`;
  }
  $("numeric").innerHTML = html;
}

function definingLine(name) {
  if (!S.data.passes.length) return null;
  const re = new RegExp("%" + name.replace(/[.]/g, "\\.") + "(?![A-Za-z0-9_.])[^=]*= ");
  const p = cur(), step = S.tab === "rw" && p.rewrites.length ? p.rewrites[S.step] : null;
  const diffs = step && step.diff ? [step.diff, p.diff] : [p.diff];
  for (const diff of diffs) for (const [t, line] of diff) if (t !== "-" && re.test(line)) return line;
  for (const diff of diffs) for (const [, line] of diff) if (re.test(line)) return line;
  return null;
}
function renderSelection() {
  const el = $("selection");
  if (!S.sel) { el.innerHTML = '<h3>selection</h3><p class="fold">click a value, a box or a kernel</p>'; return; }
  const line = definingLine(S.sel);
  let html = `<h3>selected: <span class="v" data-v="${esc(S.sel)}">%${esc(S.sel)}</span></h3>`;
  html += line ? `<div class="code"><div>${valueSpans(line.trim().slice(0, 400))}</div></div>` :
    '<p class="fold">not defined in this pass\'s graph</p>';
  const m = line ? line.match(/loc\("([^"]+)"\)/) : null;
  const src = m ? S.data.sources[m[1]] : null;
  if (src) {
    html += `<h3>source: ${esc(src.file)}:${src.line}</h3><div class="code src">` +
      src.lines.map((l, i) => `<div class="${src.first + i === src.line ? "here" : ""}">${String(src.first + i).padStart(4)}  ${esc(l)}</div>`).join("") + "</div>";
    if (src.rel && !$("data").textContent.trim()) {
      html += `<p><button id="wholefile" data-rel="${esc(src.rel)}" data-line="${src.line}">show the whole file</button></p>`;
    }
  } else if (m) {
    html += `<p>source: ${esc(m[1])}</p>`;
  }
  const k = kernelsOf().find((x) => (x.node || []).includes(S.sel) || x.outputs.includes(S.sel));
  if (k) html += `<p>kernel: <b>${esc(k.name)}</b> (${esc(k.kind)})</p>`;
  el.innerHTML = html;
}

async function showFile(rel, line) {
  const r = await fetch("api/source?path=" + encodeURIComponent(rel));
  const text = r.ok ? await r.text() : "HTTP " + r.status + ": " + (await r.text());
  const lines = text.split("\n").map((l, i) => `<div class="${i + 1 === line ? "here" : ""}">${String(i + 1).padStart(4)}  ${esc(l)}</div>`);
  $("selection").insertAdjacentHTML("beforeend", `<h3>${esc(rel)}</h3><div class="code src" id="filetext">${lines.join("")}</div>`);
  const here = document.querySelector("#filetext .here");
  if (here) here.scrollIntoView({block: "center"});
}

function highlight() {
  for (const e of document.querySelectorAll(".hl")) e.classList.remove("hl");
  if (!S.sel) return;
  for (const e of document.querySelectorAll("[data-v]")) {
    if (e.dataset.v.split(" ").includes(S.sel)) e.classList.add("hl");
  }
}

function fromHash() {
  // #pass=N (or a pass name: its first occurrence that changed the graph) &tab=ir|graph|rw|kern|dec &sel=VALUE &step=K
  const h = new URLSearchParams(location.hash.slice(1));
  const P = S.data.passes, want = h.get("pass");
  if (want !== null) {
    const i = /^[0-9]+$/.test(want) ? +want : P.findIndex((p) => p.name === want && p.changed);
    if (i >= 0 && i < P.length) S.pass = i;
  }
  if (["ir", "graph", "rw", "kern", "dec"].includes(h.get("tab"))) S.tab = h.get("tab");
  if (h.get("sel")) S.sel = h.get("sel");
  if (h.get("step")) S.step = Math.max(0, +h.get("step") - 1);
}
function toHash() {
  const h = `pass=${S.pass}&tab=${S.tab}` + (S.sel ? `&sel=${encodeURIComponent(S.sel)}` : "") + (S.tab === "rw" ? `&step=${S.step + 1}` : "");
  history.replaceState(null, "", "#" + h);
}

function select(name) { S.sel = name; renderSelection(); highlight(); toHash(); }
function setPass(i) {
  S.follow = false;
  const n = S.data.passes.length;
  S.pass = Math.min(Math.max(i, 0), n - 1);
  S.step = 0;
  render();
}
function setStep(delta) {
  // Within the pass's rewrites; past its last (first) one, on to the next (previous) pass that has rewrites.
  S.tab = "rw";
  const P = S.data.passes, steps = cur().rewrites.length, next = S.step + delta;
  if (steps && next >= 0 && next < steps) {
    S.step = next;
  } else {
    let i = S.pass + (delta > 0 ? 1 : -1);
    while (i >= 0 && i < P.length && !P[i].rewrites.length) i += delta > 0 ? 1 : -1;
    if (i >= 0 && i < P.length) {
      S.pass = i;
      S.step = delta > 0 ? 0 : P[i].rewrites.length - 1;
    }
  }
  render();
}
function setTab(t) { S.tab = t; render(); }

function setupEvents() {
  $("passes").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-pass]");
    if (tr) setPass(parseInt(tr.dataset.pass, 10));
  });
  $("tabs").addEventListener("click", (e) => { if (e.target.dataset.tab) setTab(e.target.dataset.tab); });
  $("onlychanges").addEventListener("change", () => { renderIR(); highlight(); });
  document.body.addEventListener("click", (e) => {
    const kr = e.target.closest("tr[data-kernel]");
    if (kr) { S.kernel = parseInt(kr.dataset.kernel, 10); renderKernels(); }
    const v = e.target.closest(".v, g.gn, g.gk, tr[data-kernel]");
    if (v && v.dataset.v) select(v.dataset.v.split(" ")[0]);
  });
  $("selection").addEventListener("click", (e) => { if (e.target.id === "wholefile") showFile(e.target.dataset.rel, +e.target.dataset.line); });
  $("fit").addEventListener("click", fitGraph);
  $("zin").addEventListener("click", () => zoom(0.8));
  $("zout").addEventListener("click", () => zoom(1.25));
  const box = $("graphbox");
  box.addEventListener("wheel", (e) => {
    e.preventDefault();
    const svg = svgEl();
    if (!svg || !S.vb) return;
    const r = svg.getBoundingClientRect();
    const cx = S.vb[0] + (e.clientX - r.left) / r.width * S.vb[2];
    const cy = S.vb[1] + (e.clientY - r.top) / r.height * S.vb[3];
    zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, cx, cy);
  }, {passive: false});
  let drag = null;
  box.addEventListener("mousedown", (e) => { drag = {x: e.clientX, y: e.clientY, vb: S.vb ? S.vb.slice() : null}; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    const svg = svgEl();
    if (!drag || !drag.vb || !svg) return;
    const r = svg.getBoundingClientRect();
    const s = Math.max(drag.vb[2] / r.width, drag.vb[3] / r.height);
    S.vb = [drag.vb[0] - (e.clientX - drag.x) * s, drag.vb[1] - (e.clientY - drag.y) * s, drag.vb[2], drag.vb[3]];
    applyVB();
  });
  document.addEventListener("keydown", onKey);
}
function onKey(e) {
  if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey || !S.data.passes.length) return;
  const k = e.key;
  if (k === "j" || k === "ArrowDown") setPass(S.pass + 1);
  else if (k === "k" || k === "ArrowUp") setPass(S.pass - 1);
  else if (k === "n" || k === "ArrowRight") setStep(1);
  else if (k === "p" || k === "ArrowLeft") setStep(-1);
  else if (k >= "1" && k <= "5") setTab(["ir", "graph", "rw", "kern", "dec"][parseInt(k, 10) - 1]);
  else if (k === "f") fitGraph();
  else if (k === "Escape") select(null);
  else return;
  e.preventDefault();
}

window.explorer = {state: S, setPass, setStep, setTab, select};
load().catch((e) => {
  console.error("minicomp explore: " + e.message);
  document.body.insertAdjacentHTML("afterbegin", `<p class="err">${esc(e.message)}</p>`);
});
"""
