"""The graph as an SVG picture, kernels as clusters: laid out by Graphviz's ``dot`` when it is
installed (:func:`graph_svgs`), else by the small layered layout here (:func:`graph_svg`).

Every box carries ``data-v`` (the value names it defines) so that the page can
highlight a value in every view; a fused node is drawn as a coloured cluster around
its body's ops, labelled with its kind. The layout is the classic layered one:
each op one layer below its deepest operand, boxes in a layer ordered by the mean
position of their neighbours (a few sweeps down and up, a kernel's boxes kept
together), then placed under their operands and pushed apart where they overlap.
It is meant for reading graphs of up to a few hundred nodes with the page's pan and
zoom, not for print.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import escape

from minicomp.ir.graph import Graph, Node

_VIEW_OPS = frozenset({"reshape", "permute", "expand", "slice", "split"})
_PALETTE = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f9f1", "#fce1c8", "#e3f2c1"]
_CHAR_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 6.6, 34.0, 18.0, 34.0, 10.0


@dataclass
class _Box:
    """One drawn box: an input, an op (top level or inside a kernel), or an output."""

    kind: str
    lines: tuple[str, str]
    names: list[str]
    cluster: int | None = None
    preds: list[int] = field(default_factory=list)
    layer: int = 0
    x: float = 0.0
    width: float = 0.0

    def __post_init__(self) -> None:
        self.width = max(60.0, _CHAR_W * max(len(s) for s in self.lines) + 16)


@dataclass
class _Drawing:
    boxes: list[_Box] = field(default_factory=list)
    clusters: list[tuple[str, list[str]]] = field(default_factory=list)  # (label, names of the fused node)

    def add(self, box: _Box) -> int:
        """Append ``box``; returns its index."""
        self.boxes.append(box)
        return len(self.boxes) - 1


def graph_svg(graph: Graph) -> str:
    """``graph`` as a standalone ``<svg>`` element (see the module docstring)."""
    d = _collect(graph)
    _assign_layers(d.boxes)
    _order_and_place(d.boxes)
    return _svg(d)


def _collect(graph: Graph) -> _Drawing:
    d = _Drawing()
    at: dict[int, int] = {}  # id(value) -> the box that defines it
    for v in graph.inputs:
        at[id(v)] = d.add(_Box("input", (f"%{v.name}", str(v.type)), [v.name]))
    for node in graph.nodes:
        if node.op == "fused":
            _collect_fused(d, node, at)
            continue
        kind = "const" if node.op == "constant" else "view" if node.op in _VIEW_OPS else "op"
        i = d.add(_Box(kind, _lines(node), [r.name for r in node.results],
                       preds=[at[id(o)] for o in node.operands if id(o) in at]))
        at.update((id(r), i) for r in node.results)
    for k, v in enumerate(graph.outputs):
        d.add(_Box("output", (f"output {k}", str(v.type)), [], preds=[at[id(v)]] if id(v) in at else []))
    return d


def _collect_fused(d: _Drawing, node: Node, at: dict[int, int]) -> None:
    body: Graph = node.attrs["body"]
    c = len(d.clusters)
    outer = [r.name for r in node.results]
    d.clusters.append((f"kernel {c}: {node.attrs.get('kind', '')}", outer))
    inner: dict[int, int] = {id(v): at[id(node.operands[i])] for i, v in enumerate(body.inputs)
                             if i < len(node.operands) and id(node.operands[i]) in at}
    for b in body.nodes:
        kind = "const" if b.op == "constant" else "view" if b.op in _VIEW_OPS else "op"
        i = d.add(_Box(kind, _lines(b), [r.name for r in b.results] + outer, cluster=c,
                       preds=[inner[id(o)] for o in b.operands if id(o) in inner]))
        inner.update((id(r), i) for r in b.results)
    for r, out in zip(node.results, body.outputs):
        if id(out) in inner:
            at[id(r)] = inner[id(out)]


def _lines(node: Node) -> tuple[str, str]:
    types = ", ".join(str(r.type) for r in node.results)
    name = ", ".join(f"%{r.name}" for r in node.results)
    return (f"{node.op} {name}"[:48], types[:48])


def _assign_layers(boxes: list[_Box]) -> None:
    """Each box one layer below its deepest operand; inputs and constants just above their first user."""
    for b in boxes:
        b.layer = 1 + max((boxes[p].layer for p in b.preds), default=-1)
    users: dict[int, list[int]] = {}
    for i, b in enumerate(boxes):
        for p in b.preds:
            users.setdefault(p, []).append(i)
    for i, b in enumerate(boxes):
        if not b.preds and users.get(i):
            b.layer = max(b.layer, min(boxes[u].layer for u in users[i]) - 1)


def _order_and_place(boxes: list[_Box]) -> None:
    layers: dict[int, list[int]] = {}
    for i, b in enumerate(boxes):
        layers.setdefault(b.layer, []).append(i)
    succs: dict[int, list[int]] = {}
    for i, b in enumerate(boxes):
        for p in b.preds:
            succs.setdefault(p, []).append(i)
    pos = {i: float(k) for layer in layers.values() for k, i in enumerate(layer)}
    depth = sorted(layers)
    for sweep in range(4):
        order = depth if sweep % 2 == 0 else depth[::-1]
        for L in order:
            nbrs = (lambda i: boxes[i].preds) if sweep % 2 == 0 else (lambda i: succs.get(i, []))
            layers[L] = _sorted_layer(boxes, layers[L], pos, nbrs)
            pos.update((i, float(k)) for k, i in enumerate(layers[L]))
    for L in depth:
        _place_layer(boxes, layers[L])
    for L in depth:  # inputs and constants: over their users, now that those have a place
        moved = False
        for i in layers[L]:
            if not boxes[i].preds and succs.get(i):
                boxes[i].x = sum(boxes[u].x for u in succs[i]) / len(succs[i])
                moved = True
        if moved:
            layers[L].sort(key=lambda i: boxes[i].x)
            _push_apart(boxes, layers[L])
    left = min((b.x - b.width / 2 for b in boxes), default=0.0)
    for b in boxes:
        b.x += _PAD * 2 - left


def _sorted_layer(boxes: list[_Box], layer: list[int], pos: dict[int, float], nbrs) -> list[int]:
    """``layer`` by the mean position of each box's neighbours; a kernel's boxes kept together."""
    def bary(i: int) -> float:
        ns = nbrs(i)
        return sum(pos[n] for n in ns) / len(ns) if ns else pos[i]
    own = {i: bary(i) for i in layer}
    group: dict[int, list[float]] = {}
    for i in layer:
        if boxes[i].cluster is not None:
            group.setdefault(boxes[i].cluster, []).append(own[i])
    key = {i: (sum(group[boxes[i].cluster]) / len(group[boxes[i].cluster]) if boxes[i].cluster is not None
               else own[i], own[i]) for i in layer}
    return sorted(layer, key=lambda i: key[i])


def _place_layer(boxes: list[_Box], layer: list[int]) -> None:
    """Centre each box under its operands, then push boxes right (and back) where they overlap."""
    for k, i in enumerate(layer):
        b = boxes[i]
        placed = [boxes[p].x for p in b.preds if boxes[p].layer < b.layer]
        b.x = sum(placed) / len(placed) if placed else (k * 120.0)
    _push_apart(boxes, layer)


def _push_apart(boxes: list[_Box], layer: list[int]) -> None:
    """Move boxes right where they overlap their left neighbour (``layer`` is in left-to-right order)."""
    for a, c in zip(layer, layer[1:]):
        lo = boxes[a].x + boxes[a].width / 2 + _GAP_X + boxes[c].width / 2
        if boxes[c].x < lo:
            boxes[c].x = lo


def _svg(d: _Drawing) -> str:
    width = max((b.x + b.width / 2 for b in d.boxes), default=100.0) + _PAD * 2
    height = (max((b.layer for b in d.boxes), default=0) + 1) * (_BOX_H + _GAP_Y) + _PAD * 2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph own" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}">']
    parts += _clusters(d)
    for b in d.boxes:
        for p in b.preds:
            a = d.boxes[p]
            x1, y1, x2, y2 = a.x, _top(a) + _BOX_H, b.x, _top(b)
            parts.append(f'<path class="ge" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 18:.1f} {x2:.1f},{y2 - 18:.1f} '
                         f'{x2:.1f},{y2:.1f}"/>')
    for b in d.boxes:
        names = escape(" ".join(b.names))
        k = f' data-k="{b.cluster}"' if b.cluster is not None else ""
        shape = (f'<rect x="{b.x - b.width / 2:.1f}" y="{_top(b):.1f}" width="{b.width:.1f}" height="{_BOX_H}" '
                 f'rx="{_BOX_H / 2 if b.kind in ("input", "output") else 5}"/>')
        parts.append(f'<g class="gn g-{b.kind}" data-v="{names}"{k}>{shape}'
                     f'<text x="{b.x:.1f}" y="{_top(b) + 14:.1f}">{escape(b.lines[0])}</text>'
                     f'<text class="ty" x="{b.x:.1f}" y="{_top(b) + 27:.1f}">{escape(b.lines[1])}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _clusters(d: _Drawing) -> list[str]:
    out = []
    for c, (label, names) in enumerate(d.clusters):
        members = [b for b in d.boxes if b.cluster == c]
        if not members:
            continue
        x0 = min(b.x - b.width / 2 for b in members) - _PAD
        x1 = max(b.x + b.width / 2 for b in members) + _PAD
        y0 = min(_top(b) for b in members) - _PAD - 12
        y1 = max(_top(b) for b in members) + _BOX_H + _PAD
        out.append(f'<g class="gk" data-k="{c}" data-v="{escape(" ".join(names))}">'
                   f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="8" '
                   f'fill="{_PALETTE[c % len(_PALETTE)]}"/>'
                   f'<text x="{x0 + 6:.1f}" y="{y0 + 13:.1f}">{escape(label)}</text></g>')
    return out


def _top(b: _Box) -> float:
    return _PAD + 12 + b.layer * (_BOX_H + _GAP_Y)


# -- Graphviz ------------------------------------------------------------------------------
_FILL = {"input": "#cfe8ff", "output": "#d5f5d5", "const": "#eeeeee", "view": "white", "op": "white"}
_SVG_START = re.compile(r"^.*?(?=<svg)", re.S)
_GV_NODE = re.compile(r'<g id="b(\d+)" class="node">')
_GV_CLUSTER = re.compile(r'<g id="k(\d+)" class="cluster">')


def graph_svgs(graphs: list[Graph], drawing: str = "auto") -> tuple[list[str], str | None]:
    """Drawings of ``graphs`` and a note when Graphviz was wanted but not used.

    ``drawing``: "dot" (Graphviz, required), "builtin" (the layout here), or "auto"
    (Graphviz when ``dot`` is installed). The ``dot`` runs go in parallel, one per graph.
    """
    exe = shutil.which("dot") if drawing != "builtin" else None
    if exe is None:
        note = "Graphviz's dot is not installed: graphs drawn by the built-in layout" if drawing == "dot" else None
        return [graph_svg(g) for g in graphs], note
    with ThreadPoolExecutor(max_workers=max(1, min(len(graphs), os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda g: _dot_svg(exe, g), graphs))
    failed = [why for _, why in results if why]
    svgs = [svg if svg is not None else graph_svg(g) for (svg, _), g in zip(results, graphs)]
    return svgs, (f"dot failed ({failed[0]}): built-in layout used" if failed else None)


def _dot_svg(exe: str, graph: Graph) -> tuple[str | None, str | None]:
    d = _collect(graph)
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=_dot_text(d), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"status {proc.returncode}"
    return _mark(proc.stdout, d), None


def _quote(text: str) -> str:
    """A DOT string literal; a newline becomes DOT's centred line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_text(d: _Drawing) -> str:
    """The drawing as DOT: ids ``b<i>`` (boxes) and ``k<c>`` (clusters) for :func:`_mark`."""
    lines = ["digraph g {", "  rankdir=TB; nodesep=0.2; ranksep=0.3;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=9, height=0.3, '
             'margin="0.08,0.03"];', '  edge [color="#78909c", arrowsize=0.5];']
    for c, (label, _) in enumerate(d.clusters):
        lines.append(f'  subgraph cluster_k{c} {{ id="k{c}"; label={_quote(label)}; style="filled,rounded"; '
                     f'fillcolor="{_PALETTE[c % len(_PALETTE)]}"; color="#999999"; fontname="Helvetica"; fontsize=9;')
        lines += [f"    b{i};" for i, b in enumerate(d.boxes) if b.cluster == c]
        lines.append("  }")
    for i, b in enumerate(d.boxes):
        shape = "shape=ellipse, " if b.kind in ("input", "output") else ""
        style = 'style="rounded,filled,dashed", ' if b.kind == "view" else ""
        label = _quote(b.lines[0] + "\n" + b.lines[1])
        lines.append(f'  b{i} [id="b{i}", {shape}{style}fillcolor="{_FILL[b.kind]}", label={label}];')
        lines += [f"  b{p} -> b{i};" for p in b.preds]
    return "\n".join(lines + ["}"]) + "\n"


def _mark(svg: str, d: _Drawing) -> str:
    """Graphviz's SVG with the page's classes and ``data-v`` on every box and cluster."""
    svg = _SVG_START.sub("", svg, count=1).replace("<svg ", '<svg class="graph gv" ', 1)

    def node(m: re.Match) -> str:
        b = d.boxes[int(m.group(1))]
        k = f' data-k="{b.cluster}"' if b.cluster is not None else ""
        return f'<g id="b{m.group(1)}" class="node gn g-{b.kind}" data-v="{escape(" ".join(b.names))}"{k}>'

    def cluster(m: re.Match) -> str:
        c = int(m.group(1))
        return f'<g id="k{c}" class="cluster gk" data-k="{c}" data-v="{escape(" ".join(d.clusters[c][1]))}">'
    return _GV_CLUSTER.sub(cluster, _GV_NODE.sub(node, svg))
