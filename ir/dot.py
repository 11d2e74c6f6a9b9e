"""Graphviz DOT pictures of a graph: one box per node, fused kernels as coloured clusters."""
from __future__ import annotations

from minicomp.ir.graph import Graph, Node
from minicomp.ir.ops import Role

_PALETTE = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f9f1", "#fce1c8", "#e3f2c1"]


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _label(node: Node) -> str:
    types = ", ".join(str(r.type) for r in node.results)
    return f"{node.op}\\n{_esc(types)}"


_HEADER = ['  rankdir=TB;',
           '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']


def to_dot(graph: Graph, title: str | None = None) -> str:
    """Render ``graph`` as DOT text.

    Each ``fused`` node is drawn as a cluster holding its body's ops, labelled with
    the kernel's kind; inputs are ellipses, constants grey, views dashed.
    """
    return "\n".join([f'digraph "{_esc(title or graph.name)}" {{', *_HEADER, *_body(graph, ""), "}"]) + "\n"


def to_dot_compare(before: Graph, after: Graph, title: str | None = None) -> str:
    """One picture with ``before`` (e.g. the traced graph) and ``after`` (the fused one) side by side."""
    lines = [f'digraph "{_esc(title or after.name)}" {{', *_HEADER]
    for prefix, label, g in (("b_", "before fusion", before), ("a_", "after fusion", after)):
        lines += [f"  subgraph cluster_{prefix}top {{", f'    label="{label}"; style=dashed; color="#aaaaaa";',
                  *("  " + ln for ln in _body(g, prefix)), "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def _body(graph: Graph, p: str) -> list[str]:
    """The DOT statements of one graph, every id prefixed with ``p``."""
    lines: list[str] = []
    ids: dict[int, str] = {}
    for i, v in enumerate(graph.inputs):
        ids[id(v)] = f"{p}in{i}"
        lines.append(f'  {p}in{i} [shape=ellipse, fillcolor="#cfe8ff", label="%{_esc(v.name)}\\n{v.type}"];')
    kernel_no = 0
    for n_idx, node in enumerate(graph.nodes):
        nid = f"{p}n{n_idx}"
        if node.opdef.has_body:
            body: Graph = node.attrs["body"]
            color = _PALETTE[kernel_no % len(_PALETTE)]
            lines.append(f"  subgraph cluster_{p}{n_idx} {{")
            lines.append(f'    label="kernel {kernel_no}: {_esc(str(node.attrs.get("kind", "")))}"; '
                         f'style="filled,rounded"; fillcolor="{color}"; color="#888888";')
            inner: dict[int, str] = {id(v): ids.get(id(node.operands[i]), "") for i, v in enumerate(body.inputs)}
            for b_idx, bnode in enumerate(body.nodes):
                bid = f"{nid}_{b_idx}"
                lines.append(f'    {bid} [label="{_label(bnode)}"];')
                for o in bnode.operands:
                    src = inner.get(id(o))
                    if src:
                        lines.append(f"    {src} -> {bid};")
                for r in bnode.results:
                    inner[id(r)] = bid
            lines.append("  }")
            for i, r in enumerate(node.results):
                ids[id(r)] = inner.get(id(body.outputs[i]), nid)
            kernel_no += 1
            continue
        if node.opdef.role is Role.CONSTANT:
            style = ' fillcolor="#eeeeee", fontcolor="#555555"'
        elif node.opdef.role is Role.VIEW:
            style = ' style="rounded,dashed"'
        else:
            style = ""
        lines.append(f'  {nid} [label="{_label(node)}"{style}];')
        for o in node.operands:
            if id(o) in ids:
                lines.append(f"  {ids[id(o)]} -> {nid};")
        for r in node.results:
            ids[id(r)] = nid
    for i, v in enumerate(graph.outputs):
        lines.append(f'  {p}out{i} [shape=ellipse, fillcolor="#d5f5d5", label="output {i}\\n{v.type}"];')
        if id(v) in ids:
            lines.append(f"  {ids[id(v)]} -> {p}out{i};")
    return lines
