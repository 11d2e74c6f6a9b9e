"""The explorer page: one self-contained HTML document (styles and script inlined, no network).

:func:`render_page` embeds the record as JSON (``--html``); :func:`render_shell` leaves
it out, and the script then reads ``api/report.json`` from the server that sent the page
and polls it while parts are still pending. The script is in
:mod:`minicomp.explore.page_js`; ``docs/explore.md`` describes each view.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

from minicomp.explore.page_js import SCRIPT

CSS = """
*{box-sizing:border-box}
body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;background:#fafafa}
header{padding:6px 12px;background:#263238;color:#eceff1;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:16px;margin:0}
header .muted{color:#b0bec5}
#status.pending{color:#ffe082}
#notes{color:#ffab91}
main{display:grid;grid-template-columns:minmax(420px,31%) 1fr minmax(240px,21%);height:calc(100vh - 34px)}
#left,#center,#side{overflow:auto;border-right:1px solid #ddd}
#left table{border-collapse:collapse;width:100%}
#left th,#left td{padding:3px 4px;font-size:12px;text-align:right;white-space:nowrap;border-bottom:1px solid #eee}
#left th{position:sticky;top:0;background:#eceff1;font-weight:600}
#left td.nm,#left th.nm{text-align:left}
#left tr.pass{cursor:pointer}
#left tr.pass:hover{background:#f1f8e9}
#left tr.sel{background:#c8e6c9}
#left tr.same td.nm{color:#888}
#left tr.err td{background:#ffcdd2}
#left tr.fail td.num{color:#c62828;font-weight:600}
#left tr.firstfail{outline:2px solid #c62828;outline-offset:-2px}
#left .ok{color:#2e7d32}
#left .bad{color:#c62828}
.tag{display:inline-block;font-size:11px;padding:0 4px;border-radius:3px;background:#c62828;color:#fff;margin-left:4px}
#tabs{display:flex;gap:2px;padding:4px 8px 0;background:#eceff1;position:sticky;top:0;z-index:2}
#tabs button{border:1px solid #cfd8dc;border-bottom:none;background:#f5f5f5;padding:4px 10px;cursor:pointer;border-radius:4px 4px 0 0}
#tabs button.on{background:#fff;font-weight:600}
.view{display:none;padding:8px}
.view.on{display:block}
pre,.code{font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:0}
.code div{white-space:pre;padding:0 4px}
.code .add{background:#e8f5e9}
.code .add::before{content:"+ ";color:#2e7d32}
.code .del{background:#ffebee;text-decoration:line-through;color:#8e2424}
.code .del::before{content:"- ";color:#c62828}
.code .ctx::before{content:"  "}
.code .fold{color:#888;font-style:italic}
.v{cursor:pointer;color:#1565c0}
.v:hover{text-decoration:underline}
.hl,.v.hl{background:#fff176 !important;outline:1px solid #f9a825}
#graphbox{position:relative;border:1px solid #ddd;background:#fff;height:calc(100vh - 120px);overflow:hidden;cursor:grab}
#graphbox svg{width:100%;height:100%;display:block}
#graphtools{margin-bottom:4px}
svg.graph text{pointer-events:none}
svg.own text{font:11px ui-monospace,Menlo,Consolas,monospace;text-anchor:middle;fill:#222}
svg.own text.ty{fill:#666;font-size:10px}
svg.own .gk text{text-anchor:start;font-weight:600;fill:#444}
svg.own .gk rect{stroke:#999}
svg.gv .gn.hl>:is(path,polygon,ellipse),svg.gv .gk.hl>:is(path,polygon){stroke:#f57f17;stroke-width:3;fill:#fff59d}
svg.graph .gn rect{fill:#fff;stroke:#607d8b}
svg.graph .gn.g-input rect{fill:#cfe8ff}
svg.graph .gn.g-output rect{fill:#d5f5d5}
svg.graph .gn.g-const rect{fill:#eee;stroke:#bbb}
svg.graph .gn.g-view rect{stroke-dasharray:4 2}
svg.graph .gn{cursor:pointer}
svg.graph .gn.hl rect,svg.graph .gk.hl>rect{stroke:#f57f17;stroke-width:3;fill:#fff59d}
svg.graph path.ge{fill:none;stroke:#78909c;stroke-width:1.2}
#rwhead{margin-bottom:6px}
#rwhead .pat{font-weight:600;color:#6a1b9a}
.kb{font:11px ui-monospace,monospace;border:1px solid #bbb;border-radius:3px;padding:0 3px;background:#fff}
#kerns table{border-collapse:collapse;width:100%}
#kerns td,#kerns th{padding:3px 6px;border-bottom:1px solid #eee;text-align:left}
#kerns tr.k{cursor:pointer}
#kerns tr.sel{background:#c8e6c9}
.bar{display:inline-block;height:9px;background:#7986cb;vertical-align:middle}
#side{padding:8px;border-right:none}
#side h3{margin:10px 0 4px;font-size:13px}
#side .code div{white-space:pre-wrap;overflow-wrap:anywhere}
#side .src .here{background:#fff176}
.numok{color:#2e7d32;font-weight:600}
.numbad{color:#c62828;font-weight:600}
details{margin:4px 0}
.err{color:#c62828;white-space:pre-wrap}
"""


def _json_for_script(data: dict[str, Any]) -> str:
    """``data`` as JSON that cannot close the ``<script>`` element holding it."""
    return json.dumps(data, allow_nan=False, default=str).replace("<", "\\u003c")


def render_page(data: dict[str, Any]) -> str:
    """The page with the record embedded: opens from a file, no server or network needed."""
    return _document(data.get("title", "minicomp"), _json_for_script(_finite(data)))


def render_shell(title: str) -> str:
    """The page without the record: its script fetches ``api/report.json`` from the server."""
    return _document(title, "")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float written as a string ("inf", "nan"): JSON has no such numbers."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def report_json(data: dict[str, Any]) -> str:
    """The record as the server sends it."""
    return json.dumps(_finite(data), allow_nan=False, default=str)


def _document(title: str, data_json: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>minicomp explore: {escape(title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>minicomp explore: <span id="title">{escape(title)}</span></h1>
<span class="muted" id="ref"></span><span id="status"></span><span id="notes"></span>
<span class="muted">keys: <span class="kb">j</span>/<span class="kb">k</span> pass,
<span class="kb">n</span>/<span class="kb">p</span> rewrite, <span class="kb">1</span>-<span class="kb">5</span> views,
<span class="kb">f</span> fit graph, <span class="kb">Esc</span> clear</span></header>
<main>
<section id="left"><table><thead><tr><th>#</th><th class="nm">pass</th><th>nodes</th><th title="kernels">kern.</th>
<th title="estimated bytes moved">bytes</th><th>ms</th><th title="rewrites">rw</th>
<th title="largest difference from the reference">max |diff|</th></tr></thead>
<tbody id="passes"></tbody></table></section>
<section id="center">
<nav id="tabs"><button data-tab="ir">1 IR + diff</button><button data-tab="graph">2 graph</button>
<button data-tab="rw">3 rewrites</button><button data-tab="kern">4 kernels</button>
<button data-tab="dec">5 decisions</button></nav>
<div class="view" id="v-ir"><label><input type="checkbox" id="onlychanges"> only changed lines (with context)</label>
<div class="code" id="ir"></div></div>
<div class="view" id="v-graph"><div id="graphtools"><button id="fit">fit (f)</button> <button id="zin">+</button>
<button id="zout">-</button> <span class="muted">drag to pan, wheel to zoom, click a box to select it</span></div>
<div id="graphbox"></div></div>
<div class="view" id="v-rw"><div id="rwhead"></div><div class="code" id="rwdiff"></div></div>
<div class="view" id="v-kern"><div id="kerns"></div><div id="kdetail"></div></div>
<div class="view" id="v-dec"><div class="code" id="decs"></div></div>
</section>
<aside id="side"><div id="numeric"></div><div id="selection"></div></aside>
</main>
<script type="application/json" id="data">{data_json}</script>
<script>{SCRIPT}</script>
</body></html>
"""
