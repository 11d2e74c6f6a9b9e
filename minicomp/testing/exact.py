"""The bit-exact oracle: a pass must not change a single bit of the graph's results.

A tolerance check against PyTorch lets through exactly the bugs rewrites make:
``x * 0 -> 0`` is wrong only for NaN, infinities and negative ``x`` (sign of zero);
a reassociated float sum is wrong in the last bits; a ``max`` that drops NaN is wrong
only where a NaN arrives. So a pass is also judged against the graph *before* it,
both run by the same reference interpreter on the same inputs: outputs must be
bit-identical, where all NaNs count as equal (payloads differ between libraries and
no op here promises one) and ``-0.0`` differs from ``+0.0``.

Passes that may change rounding say so: a ``reassociates = True`` attribute on the
pass (class or instance), or listed in :data:`REASSOCIATING_PASSES` for built-in ones.
Their results are compared at default ``assert_close`` tolerances instead, and the
next pass is judged against their output.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.ir.graph import Graph

#: Built-in passes allowed to change rounding (pass name -> why); every other built-in pass is exact.
REASSOCIATING_PASSES: dict[str, str] = {
    "decompose": "rebuilds composites (batch_norm, ...) from primitives, rounding each step (passes/decompose.py)",
}

EXACT_RULE = "bit-exact: same bits as before the pass (all NaNs equal, -0.0 != +0.0)"


def reassociates(p: Any) -> bool:
    """Whether pass ``p`` declares that it may change rounding (see the module docstring)."""
    return bool(getattr(p, "reassociates", False)) or getattr(p, "name", None) in REASSOCIATING_PASSES


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        import torch
        t = x.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return np.asarray(x)


def _fmt(v: Any) -> str:
    return repr(v.item()) if hasattr(v, "item") else repr(v)


def bit_difference(before: Any, after: Any) -> str | None:
    """None when two arrays hold the same bits (NaNs all equal, signed zeros distinct), else where not."""
    a, b = _np(before), _np(after)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"type changed: {a.dtype}{list(a.shape)} -> {b.dtype}{list(b.shape)}"
    fa, fb = np.array(a, order="C").reshape(-1), np.array(b, order="C").reshape(-1)  # (0-d arrays too)
    if a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(fa), np.isnan(fb)
        bits = f"u{a.dtype.itemsize}"
        bad = (nan_a != nan_b) | (~nan_a & ~nan_b & (fa.view(bits) != fb.view(bits)))
    else:
        bad = fa != fb
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    idx = tuple(int(i) for i in np.unravel_index(first, a.shape)) if a.ndim else ()
    return (f"{int(bad.sum())} / {bad.size} elements changed; first at index {idx}: "
            f"before={_fmt(fa[first])}, after={_fmt(fb[first])}")


def compare_bits(before: Sequence[Any], after: Sequence[Any], graph: Graph) -> str | None:
    """None when every output keeps its bits, else one line per changed output (named as in ``graph``)."""
    if len(before) != len(after):
        return f"expected {len(before)} outputs, got {len(after)}"
    problems = []
    for i, (x, y) in enumerate(zip(before, after)):
        why = bit_difference(x, y)
        if why is not None:
            name = graph.outputs[i].name if i < len(graph.outputs) else "?"
            problems.append(f"output {i} (%{name}) [rule: {EXACT_RULE}]: {why}")
    return "\n".join(problems) or None


def _close(before: Sequence[Any], after: Sequence[Any]) -> str | None:
    import torch
    for i, (x, y) in enumerate(zip(before, after)):
        try:
            torch.testing.assert_close(torch.from_numpy(np.array(_np(y))), torch.from_numpy(np.array(_np(x))),
                                       equal_nan=True)
        except AssertionError as e:
            return f"output {i} [rule: assert_close (the pass declares it reassociates)]: {e}"
    return None


def _fingerprint(g: Graph) -> tuple:
    """The graph's structure: which nodes, wired how, with which attributes (to skip unchanged graphs)."""
    from minicomp.ir.printer import format_attr
    return (tuple(id(v) for v in g.inputs), tuple(id(v) for v in g.outputs),
            tuple((id(n), n.op, tuple(id(o) for o in n.operands), tuple(id(r) for r in n.results),
                   tuple((k, id(v) if k == "value" else format_attr(v)) for k, v in n.attrs.items()))
                  for n in g.nodes))


class _Run:
    """One graph run by the interpreter: every value by name (inputs, constants, results) and the outputs."""

    def __init__(self, g: Graph, inputs: Sequence[np.ndarray]):
        import minicomp
        probe = g.copy()
        values = [r for n in probe.nodes if n.op != "fused" for r in n.results]
        probe.set_outputs(list(probe.outputs) + values)
        got = [np.asarray(a) for a in minicomp.interpret(probe, *inputs)]
        k = len(g.outputs)
        self.outputs = got[:k]
        self.values = {v.name: (str(v.type), a) for v, a in zip(values, got[k:])}
        self.values.update((v.name, (str(v.type), np.asarray(a))) for v, a in zip(g.inputs, inputs))
        self.operands = {n.results[0].name: [(o.name, str(o.type)) for o in n.operands]
                         for n in g.nodes if n.results and n.op != "constant"}


def _pairs(before: _Run, after: _Run) -> list[tuple[str, str, str]]:
    """(what, name before, name after) of values that must keep their bits: values that keep their name and
    type, and replaced operands (a surviving node whose operand changed: the old value vs its replacement)."""
    pairs = [(f"value %{n}", n, n) for n in sorted(set(before.values) & set(after.values), key=lambda n: (len(n), n))
             if before.values[n][0] == after.values[n][0]]
    for node, ops in before.operands.items():
        for (old, t_old), (new, t_new) in zip(ops, after.operands.get(node, [])):
            if old != new and t_old == t_new and old in before.values and new in after.values:
                pairs.append((f"value %{old} (replaced by %{new}, an operand of %{node})", old, new))
    return pairs


def _compare_runs(before: _Run, after: _Run, graph: Graph, tolerant: bool) -> str | None:
    """Outputs (by position, named as in ``graph``), then the pairs of :func:`_pairs`; the first difference."""
    items = [(f"output {i} (%{graph.outputs[i].name})", b, a)
             for i, (b, a) in enumerate(zip(before.outputs, after.outputs))]
    items += [(what, before.values[old][1], after.values[new][1]) for what, old, new in _pairs(before, after)]
    for what, b, a in items:
        if tolerant:
            why = _close([b], [a])
            if why is not None:
                return why.replace("output 0", what, 1)
        else:
            why = bit_difference(b, a)
            if why is not None:
                return f"{what} [rule: {EXACT_RULE}]: {why}"
    return None


def check_passes_exact(graph: Graph, inputs: Sequence[np.ndarray], passes: Sequence[Any],
                       options: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """Run ``passes`` one at a time, interpreting after each; the first pass that changed bits.

    Compared are the outputs, every intermediate value that keeps its name and type
    across the pass, and every value a rewrite replaced against its replacement (a
    wrong rewrite is often masked by the time it reaches an output:
    ``exp(-0.0) == exp(0.0)``). Returns ``("pass <name>", detail)`` for the first pass
    whose values differ from its input graph's (bit for bit, or beyond tolerance for a
    pass that :func:`reassociates`) or that raised, else None. ``graph`` is not
    modified; ``options`` go to the :class:`~minicomp.passes.manager.PassContext`.
    """
    from minicomp.ir.verifier import verify
    from minicomp.passes.manager import PassContext, PassManager, get_pass
    from minicomp.testing.check import crash_text
    passes = [get_pass(p) if isinstance(p, str) else p for p in passes]
    g = graph.copy()
    try:
        before = _Run(g, inputs)
    except Exception:  # noqa: BLE001 - the interpreter itself fails: nothing to judge passes by
        return None
    ctx = PassContext(options=dict(options or {"target": "cpu"}))
    for p in passes:
        try:
            shape, given = _fingerprint(g), g.copy()
            g = PassManager([p], verify=False).run(g, ctx)
            if _fingerprint(g) == shape:
                continue  # the pass changed nothing: its result is the graph before it
            verify(g)  # (only a graph the pass changed can have been broken by it; a failure names the pass)
            after = _Run(g, inputs)
        except Exception as e:  # noqa: BLE001 - a crash on a valid graph is a finding
            return f"pass {p.name}", crash_text(e)
        problem = _compare_runs(before, after, graph, reassociates(p))
        if problem is not None:
            from minicomp.ir.printer import print_graph
            text = print_graph(given, elide_constants=True)
            if text != print_graph(graph, elide_constants=True):  # earlier passes changed it: show p's input
                problem += f"\n--- the graph pass {p.name} was given (after the passes before it) ---\n{text}"
            return f"pass {p.name}", problem
        before = after
    return None
