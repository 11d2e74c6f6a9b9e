"""One-screen mismatch reports: the graph, its input values, the guilty layer, the repro command.

A report must let a reader see the bug without running anything: the graph as
printed text IR (output names in the detail are the printed ones), every input
value (inline when small, else a summary with its special values counted), the
first layer that diverged (found by bisection) and how to replay it. Long details
are cut to keep it on one screen; the repro script holds everything.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minicomp.ir.graph import Graph

#: Inputs with at most this many elements are printed in full.
INLINE_LIMIT = 16
#: Lines of detail kept in a report (the repro script prints it all).
DETAIL_LINES = 24
REPRO_CODES = "exit 1: reproduced, 0: did not reproduce, 2: could not run"


def format_value(a: np.ndarray) -> str:
    """A value as one line: every element when small, else shape, range and special-value counts."""
    a = np.asarray(a)
    if a.size <= INLINE_LIMIT:
        text = "[" + ", ".join(repr(x.item()) for x in a.reshape(-1)) + "]"  # repr: -0.0, nan, inf exactly
        if a.ndim == 0:
            return text[1:-1]
        return text if a.ndim == 1 else f"{text}.reshape({list(a.shape)})"
    if a.dtype.kind != "f":
        return f"{a.size} values in [{a.min()}, {a.max()}]"
    finite = a[np.isfinite(a)]
    parts = [f"{a.size} values"]
    if finite.size:
        parts.append(f"finite in [{finite.min():.4g}, {finite.max():.4g}]")
    for label, mask in (("NaN", np.isnan(a)), ("+inf", np.isposinf(a)), ("-inf", np.isneginf(a)),
                        ("-0.0", (a == 0) & np.signbit(a))):
        if mask.any():
            parts.append(f"{int(mask.sum())} {label}")
    return ", ".join(parts)


def format_inputs(graph: Graph, inputs: Sequence[np.ndarray]) -> str:
    """One line per graph input: ``%name: type = values``."""
    return "\n".join(f"%{v.name}: {v.type} = {format_value(a)}" for v, a in zip(graph.inputs, inputs)) or "(none)"


def op_nodes(graph: Graph) -> int:
    """Nodes that compute something (constants not counted): the size of a shrunk graph."""
    return sum(1 for n in graph.nodes if n.op != "constant")


def _cut(text: str, lines: int = DETAIL_LINES) -> str:
    rows = text.rstrip().splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return "\n".join(rows[:lines] + [f"... ({len(rows) - lines} more lines: run the repro)"])


def format_report(headline: str, graph: Graph, inputs: Sequence[np.ndarray], layer: str, detail: str,
                  repro_path: str | None, repro_problem: str | None = None, note: str = "") -> str:
    """The whole report (see the module docstring)."""
    from minicomp.ir.printer import print_graph
    try:
        ir = print_graph(graph, elide_constants=True)
    except Exception:  # noqa: BLE001 - a graph the printer rejects is still reported
        ir = "\n".join(repr(n) for n in graph.nodes)
    lines = [headline, f"--- graph ({op_nodes(graph)} op nodes) ---", ir, "--- inputs ---",
             format_inputs(graph, inputs), f"--- first divergence: {layer} ---", _cut(detail)]
    if note:
        lines.append(note)
    if repro_path:
        lines.append(f"--- repro: python {repro_path}  ({REPRO_CODES})")
    if repro_problem:
        lines.append(f"    the repro cannot replay this: {repro_problem}")
    return "\n".join(lines)
