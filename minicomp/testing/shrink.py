"""A delta-debugging reducer for failing cases: the smallest graph and inputs that still fail.

Hypothesis shrinks the *draws* of a ``@given`` test; this shrinks the *graph*, and
works on any :class:`~minicomp.testing.graphs.Case` (one from a deep run, a user's
model, a repro). Steps, repeated until none makes progress or the time budget ends:

1. keep one output, or drop one (dead nodes and unused inputs go with it);
2. isolate: the graph of one node alone (then with its producers one and two levels up),
   every operand from outside it a graph input holding the value it had (constants stay
   constants: rewrites match them), so a failure that lives in one or two nodes of a
   large graph is found in a few tries;
3. bypass a node (its uses take an operand of the same type instead);
4. replace a node by a graph input holding the value it computed (the interpreter's);
5. shrink shapes: a constant's or an input's dim to 1 or to half, every node
   re-inferred (attributes that no longer fit reject the candidate);
6. simplify values: an input to all zeros or all ones, or its ordinary values to 1
   (NaN, infinities and signed zeros kept).

A candidate is kept only when it fails *the same way*: the same blamed layer under
the same oracle (:attr:`~minicomp.testing.check.Failure.key`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from minicomp.ir.graph import Graph, constant
from minicomp.ir.types import TensorType
from minicomp.testing.graphs import Case

Candidate = Callable[[], "Case | None"]


def _clean(g: Graph, inputs: list[np.ndarray]) -> Case:
    """Remove dead nodes and unused inputs (outputs may be inputs: those stay)."""
    from minicomp.passes.canonicalize import remove_dead
    remove_dead(g)
    used = {id(o) for n in g.nodes for o in n.operands} | {id(o) for o in g.outputs}
    keep = [i for i, v in enumerate(g.inputs) if id(v) in used]
    g.inputs = [g.inputs[i] for i in keep]
    return Case(g, [inputs[i] for i in keep])


def _valid(case: Case) -> Case | None:
    from minicomp.ir import verify
    try:
        verify(case.graph)
    except Exception:  # noqa: BLE001 - an invalid candidate is simply not taken
        return None
    return case if case.graph.outputs else None


def _edit(case: Case, change: Callable[[Graph, list], Any]) -> Case | None:
    g, inputs = case.graph.copy(), list(case.inputs)
    try:
        if change(g, inputs) is False:
            return None
    except Exception:  # noqa: BLE001
        return None
    return _valid(_clean(g, inputs))


def _output_candidates(case: Case) -> Iterator[Candidate]:
    n = len(case.graph.outputs)
    if n > 1:
        for i in range(n):
            yield lambda i=i: _edit(case, lambda g, _: g.set_outputs([g.outputs[i]]))
        for i in range(n):
            yield lambda i=i: _edit(case, lambda g, _: g.set_outputs(g.outputs[:i] + g.outputs[i + 1:]))


def _bypass(g: Graph, index: int, j: int) -> bool:
    node = g.nodes[index]
    if len(node.results) != 1 or j >= len(node.operands) or node.operands[j].type != node.result.type:
        return False
    g.replace_uses(node.result, node.operands[j])
    return True


def _to_input(g: Graph, inputs: list, index: int) -> bool:
    import minicomp
    node = g.nodes[index]
    probe = g.copy()
    probe.set_outputs(probe.nodes[index].results)
    values = minicomp.interpret(probe, *inputs)
    for r, v in zip(node.results, values):
        new = g.add_input(r.type)
        inputs.append(np.array(np.asarray(v), order="C"))
        g.replace_uses(r, new)
    return True


def _node_candidates(case: Case) -> Iterator[Candidate]:
    nodes = case.graph.nodes
    for index in reversed(range(len(nodes))):
        if nodes[index].op == "constant":
            continue
        for j in range(len(nodes[index].operands)):
            yield lambda i=index, j=j: _edit(case, lambda g, _: _bypass(g, i, j))
        yield lambda i=index: _edit(case, lambda g, ins: _to_input(g, ins, i))


def _all_values(case: Case) -> dict[int, np.ndarray]:
    """Every node result of ``case`` computed by the interpreter, by ``id`` of the value (cached per case)."""
    cached = _VALUES.get(id(case))
    if cached is not None and cached[0] is case:
        return cached[1]
    import minicomp
    probe = case.graph.copy()
    results = [r for n in case.graph.nodes for r in n.results]
    probe.set_outputs([r for n in probe.nodes for r in n.results])
    values = dict(zip(map(id, results), minicomp.interpret(probe, *case.inputs)))
    _VALUES.clear()
    _VALUES[id(case)] = (case, values)
    return values


_VALUES: dict[int, tuple[Case, dict]] = {}


def _isolated(case: Case, index: int, levels: int) -> Case | None:
    """Node ``index`` with its non-constant producers up to ``levels`` up, alone: operands from outside become
    graph inputs holding their values, constants are copied; the node's results are the outputs."""
    g = case.graph
    keep, frontier = {id(g.nodes[index])}, [g.nodes[index]]
    for _ in range(levels):
        frontier = [o.producer for n in frontier for o in n.operands
                    if o.producer is not None and o.producer.op != "constant" and id(o.producer) not in keep]
        keep.update(id(n) for n in frontier)
    values = _all_values(case)
    ng, m, inputs = Graph(g.name), {}, []
    for v, a in zip(g.inputs, case.inputs):
        m[id(v)] = (v, a)
    new: dict[int, Any] = {}
    try:
        for n in g.nodes:
            if id(n) not in keep:
                continue
            operands = []
            for o in n.operands:
                if id(o) not in new:
                    p = o.producer
                    if p is not None and p.op == "constant":
                        new[id(o)] = constant(ng, p.attrs["value"], p.attrs["dtype"], name=o.name)
                    else:
                        new[id(o)] = ng.add_input(o.type, name=o.name)
                        inputs.append(np.array(np.asarray(m[id(o)][1] if id(o) in m else values[id(o)]), order="C"))
                operands.append(new[id(o)])
            made = ng.add(n.op, operands, dict(n.attrs), names=[r.name for r in n.results]).results
            new.update((id(r), v) for r, v in zip(n.results, made))
        ng.set_outputs([new[id(r)] for r in g.nodes[index].results])
    except Exception:  # noqa: BLE001 - a candidate that cannot be built is not taken
        return None
    small = _valid(_clean(ng, inputs))
    return small if small is not None and _op_nodes(small.graph) < _op_nodes(g) else None


def _op_nodes(g: Graph) -> int:
    return sum(n.op != "constant" for n in g.nodes)


def _isolate_candidates(case: Case) -> Iterator[Candidate]:
    nodes = case.graph.nodes
    ops = [i for i in reversed(range(len(nodes))) if nodes[i].op != "constant"]
    if len(ops) <= 1:
        return
    for levels in (0, 1, 2):
        for index in ops:
            yield lambda i=index, k=levels: _isolated(case, i, k)


def rebuild(graph: Graph, input_types: Sequence[TensorType], constants: dict[int, np.ndarray] | None = None) -> Graph:
    """``graph`` with new input types (and constant values by node index), every node's types inferred
    again; raises where attributes no longer fit."""
    ng, m = Graph(graph.name), {}
    for v, t in zip(graph.inputs, input_types):
        m[id(v)] = ng.add_input(t, name=v.name)
    for i, n in enumerate(graph.nodes):
        if n.op == "constant":
            value = (constants or {}).get(i, n.attrs["value"])
            vals = [constant(ng, value, n.attrs["dtype"], name=n.result.name)]
        else:
            vals = ng.add(n.op, [m[id(o)] for o in n.operands], dict(n.attrs),
                          names=[r.name for r in n.results]).results
        if len(vals) != len(n.results):
            raise ValueError("result count changed")
        m.update((id(r), v) for r, v in zip(n.results, vals))
    ng.set_outputs([m[id(o)] for o in graph.outputs])
    return ng


def _reshaped(case: Case, i: int, dim: int, size: int) -> Case | None:
    v = case.graph.inputs[i]
    shape = list(v.type.shape)
    shape[dim] = size
    types = [w.type for w in case.graph.inputs]
    types[i] = TensorType(v.type.dtype, tuple(shape))
    try:
        g = rebuild(case.graph, types)
    except Exception:  # noqa: BLE001
        return None
    inputs = list(case.inputs)
    inputs[i] = np.array(np.take(inputs[i], range(size), axis=dim), order="C")
    return _valid(Case(g, inputs))


def _const_reshaped(case: Case, index: int, dim: int, size: int) -> Case | None:
    value = np.asarray(case.graph.nodes[index].attrs["value"])
    try:
        g = rebuild(case.graph, [w.type for w in case.graph.inputs],
                    {index: np.array(np.take(value, range(size), axis=dim), order="C")})
    except Exception:  # noqa: BLE001
        return None
    return _valid(Case(g, list(case.inputs)))


def _shape_candidates(case: Case) -> Iterator[Candidate]:
    for index, n in enumerate(case.graph.nodes):  # constants first: they often pin the inputs' shapes
        if n.op == "constant":
            for dim, side in enumerate(n.result.type.shape):
                for size in sorted({1, side // 2} - {0}):
                    if size < side:
                        yield lambda i=index, d=dim, s=size: _const_reshaped(case, i, d, s)
    for i, v in enumerate(case.graph.inputs):
        for dim, side in enumerate(v.type.shape):
            for size in sorted({1, side // 2} - {0}):
                if size < side:
                    yield lambda i=i, d=dim, s=size: _reshaped(case, i, d, s)


def _with_value(case: Case, i: int, value: np.ndarray) -> Case | None:
    if np.array_equal(value, case.inputs[i], equal_nan=value.dtype.kind == "f"):
        return None
    inputs = list(case.inputs)
    inputs[i] = value
    return Case(case.graph, inputs)


def _value_candidates(case: Case) -> Iterator[Candidate]:
    for i, a in enumerate(case.inputs):
        a = np.asarray(a)
        if a.size == 0:
            continue
        yield lambda i=i, a=a: _with_value(case, i, np.zeros_like(a))
        yield lambda i=i, a=a: _with_value(case, i, np.ones_like(a))
        if a.dtype.kind == "f":
            special = ~np.isfinite(a) | (a == 0)
            yield lambda i=i, a=a, s=special: _with_value(case, i, np.where(s, a, np.ones_like(a)))


STEPS = (_output_candidates, _isolate_candidates, _node_candidates, _shape_candidates, _value_candidates)


def shrink(case: Case, still_fails: Callable[[Case], bool], budget_s: float = 30.0) -> Case:
    """The smallest case found (within ``budget_s`` seconds) for which ``still_fails`` holds.

    ``still_fails(case)`` is True for ``case`` itself; exceptions inside it count as False.
    """
    deadline = time.monotonic() + budget_s
    progress = True
    while progress and time.monotonic() < deadline:
        progress = False
        for step in STEPS:
            skip = 0  # candidates before the last success failed already: start after them
            while True:
                taken = False
                for i, candidate in enumerate(step(case)):
                    if time.monotonic() >= deadline:
                        return case
                    if i < skip:
                        continue
                    smaller = candidate()
                    if smaller is not None and _holds(still_fails, smaller):
                        case, progress, taken, skip = smaller, True, True, i
                        break  # candidates were made from the old case: make them again
                if not taken:
                    break
    return case


def _holds(still_fails: Callable[[Case], bool], case: Case) -> bool:
    try:
        return bool(still_fails(case))
    except Exception:  # noqa: BLE001 - a candidate that breaks the check is not kept
        return False


def shrink_case(case: Case, failure: Any, targets: Sequence[str], passes: Any, check_interpreter: bool = True,
                exact: bool = True, budget_s: float = 30.0) -> tuple[Case, Any]:
    """Shrink a case that :func:`~minicomp.testing.check.find_failure` reported as ``failure``.

    Returns the smallest case with the same failure key (blamed layer and oracle) and its failure.
    """
    from minicomp.testing.check import InvalidCaseError, find_failure
    only = () if failure.target == "interpreter" else (failure.target,)
    last = {"failure": failure}
    bits = failure.mode == "exact"

    def still_fails(c: Case) -> bool:
        try:
            f = find_failure(c, only, passes, check_interpreter=failure.layer == "interpreter",
                             exact=bits, differential=not bits)
        except InvalidCaseError:
            return False
        if f is not None and f.key == failure.key:
            last["failure"] = f
            return True
        return False

    small = shrink(case, still_fails, budget_s)
    if small is not case:
        still_fails(small)  # the detail of the final case
    return small, last["failure"]
