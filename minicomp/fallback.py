"""Partial fallback: run ``external`` nodes in PyTorch and everything else natively.

:func:`partition` splits a graph (after passes) at its ``external`` nodes into
:class:`Segment` sub-graphs of native nodes and the external nodes between them.
A native node goes into the earliest segment its operands allow: segment
``L`` holds the nodes that depend (through native nodes) on externals of level
below ``L`` only, and the externals of level ``L`` read only graph inputs,
constants and results of segments ``<= L`` and of earlier externals. So a chain
``native -> external -> native`` becomes two segments with the external
between them, and independent externals share a level.

Each segment is a self-contained :class:`~minicomp.ir.graph.Graph`: its inputs
are the values it reads from outside (graph inputs, external results, earlier
segments' results; always declared row-major, as callers pass dense tensors),
constants are copied into it, and its outputs are the values read after it.

:class:`PartitionedProgram` runs the steps in order, passing torch tensors
between compiled segments (any callable ``list[Tensor] -> list[Tensor]``) and
external calls (``torch.ops`` replay, see :mod:`minicomp.frontend.external`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from minicomp.errors import CompileError
from minicomp.ir.graph import Graph, Node, Value

Runner = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


@dataclass
class Segment:
    """A maximal group of native nodes: ``graph`` computes ``outputs`` from ``inputs`` (values of the full graph)."""

    graph: Graph
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)


def describe(node: Node) -> str:
    """``"aten.sort.default at model.py:12"`` for an external node."""
    return node.attrs["target"] + (f" at {node.loc}" if node.loc else "")


def partition(graph: Graph) -> list[Segment | Node]:
    """The execution steps of ``graph``: segments and external nodes, in an order that respects data flow.

    Segments without a non-constant node are left out; the full graph is not modified.
    """
    level: dict[int, int] = {}
    for node in graph.nodes:
        if node.op == "constant":
            continue
        lv = 0
        for o in node.operands:
            p = o.producer
            if p is None or p.op == "constant":
                continue
            lv = max(lv, level[id(p)] + (1 if p.op == "external" and node.op != "external" else 0))
        level[id(node)] = lv
    top = max(level.values(), default=0)
    groups: list[list[Node]] = [[] for _ in range(top + 1)]
    externals: list[list[Node]] = [[] for _ in range(top + 1)]
    for node in graph.nodes:
        if node.op != "constant":
            (externals if node.op == "external" else groups)[level[id(node)]].append(node)
    needed_later = _read_outside(graph, groups, externals)
    steps: list[Segment | Node] = []
    for lv in range(top + 1):
        if groups[lv]:
            steps.append(_segment(graph, groups[lv], needed_later, f"{graph.name}_part{lv}"))
        steps.extend(externals[lv])
    return steps


def _read_outside(graph: Graph, groups: list[list[Node]], externals: list[list[Node]]) -> dict[int, bool]:
    """ids of values read outside the segment that produces them (by externals, other segments, outputs)."""
    owner = {id(n): lv for lv, g in enumerate(groups) for n in g}
    read: dict[int, bool] = {id(v): True for v in graph.outputs}
    for lv, g in enumerate(groups):
        for n in g:
            for o in n.operands:
                if o.producer is not None and owner.get(id(o.producer), lv) != lv:
                    read[id(o)] = True
    for ext in externals:
        for n in ext:
            read.update((id(o), True) for o in n.operands)
    return read


def _segment(graph: Graph, nodes: list[Node], needed_later: dict[int, bool], name: str) -> Segment:
    sub = Graph(name)
    seg = Segment(sub)
    inside = {id(n) for n in nodes}
    env: dict[int, Value] = {}

    def use(v: Value) -> Value:
        if id(v) in env:
            return env[id(v)]
        p = v.producer
        if p is not None and p.op == "constant":
            node = sub.add("constant", [], dict(p.attrs), types=[v.type], names=[v.name], loc=p.loc)
            env[id(v)] = node.results[0]
        else:
            env[id(v)] = sub.add_input(v.type.with_order(None), v.name)
            seg.inputs.append(v)
        return env[id(v)]

    for n in nodes:
        operands = [use(o) for o in n.operands]
        copy = sub.add(n.op, operands, dict(n.attrs), types=[r.type for r in n.results],
                       names=[r.name for r in n.results], loc=n.loc)
        for old, new in zip(n.results, copy.results):
            env[id(old)] = new
    for n in nodes:
        for r in n.results:
            if needed_later.get(id(r)) and all(r is not o for o in seg.outputs):
                seg.outputs.append(r)
    sub.set_outputs([env[id(v)] for v in seg.outputs])
    return seg


def _shares_storage(t: torch.Tensor, others: Sequence[torch.Tensor]) -> bool:
    """True when ``t`` lies in the storage of one of ``others`` (a result that is a view of an operand)."""
    ptr = t.untyped_storage().data_ptr()
    return any(o.untyped_storage().data_ptr() == ptr for o in others)


class PartitionedProgram:
    """Runs partition steps: ``runners[i]`` computes segment ``i``; externals call PyTorch ops.

    Called with the graph's input tensors, returns one tensor per graph output.
    Results of externals are made contiguous before a compiled segment reads them.
    """

    def __init__(self, graph: Graph, steps: Sequence[Segment | Node], runners: Sequence[Runner],
                 device: torch.device):
        from minicomp.frontend.external import check_call, resolve
        self.graph = graph
        self._inputs = [id(v) for v in graph.inputs]
        self._outputs = [id(v) for v in graph.outputs]
        self._consts: dict[int, torch.Tensor] = {}
        plan: list[tuple[Any, ...]] = []
        seg_runners = iter(runners)
        for step in steps:
            if isinstance(step, Segment):
                plan.append(("native", next(seg_runners), [id(v) for v in step.inputs],
                             [id(v) for v in step.outputs]))
                continue
            types = [r.type for r in step.results]
            try:
                op = resolve(step.attrs["target"])
                check_call(op, step.attrs["args"], [o.type for o in step.operands], types)
            except ValueError as e:
                raise CompileError(f"external node {describe(step)}: {e}") from None
            aliases = any(r.alias_info is not None for r in op._schema.returns)
            plan.append(("torch", op, [self._operand(v, device) for v in step.operands],
                         [id(r) for r in step.results], step.attrs["args"], aliases, types, describe(step)))
        for v in graph.outputs:
            self._operand(v, device)
        self._plan = plan
        self._device = device

    def _operand(self, v: Value, device: torch.device) -> int:
        """id(v), remembering a torch tensor for a constant so externals and outputs can read it."""
        from minicomp.runtime import constant_tensor
        p = v.producer
        if p is not None and p.op == "constant" and id(v) not in self._consts:
            self._consts[id(v)] = constant_tensor(p.attrs["value"], p.attrs["dtype"]).to(device)
        return id(v)

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        from minicomp.frontend.external import check_results, decode_args
        env: dict[int, torch.Tensor] = dict(self._consts)
        env.update(zip(self._inputs, inputs))
        for step in self._plan:
            if step[0] == "native":
                _, run, ins, outs = step
                env.update(zip(outs, run([env[i].contiguous() for i in ins])))
                continue
            _, op, ins, outs, text, aliases, types, what = step
            operands = [env[i] for i in ins]
            args, kwargs = decode_args(text, operands)
            try:
                res = check_results(op(*args, **kwargs), types, self._device)
            except ValueError as e:
                raise CompileError(f"external node {what}: {e}") from None
            env.update(zip(outs, (r.clone() if aliases or _shares_storage(r, operands) else r for r in res)))
        fresh = set(self._inputs) | set(self._consts)
        return [env[i].clone() if i in fresh else env[i] for i in self._outputs]
