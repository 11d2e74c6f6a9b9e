"""The IR verifier: checks that a graph is well formed, in one linear sweep.

:func:`verify` raises :class:`VerifyError` naming the graph, the node (its printed
line, with large constants and nested bodies elided) and the problem. It checks:

* the graph has outputs, and every output is defined in it;
* value names are unique and each value is defined once (by an input or a node);
* each operand is defined in this graph *before* its use (a use of a later value
  is reported as a cycle when the uses form one, else as a use before definition);
* each node's op exists, its attributes are exactly the declared ones, of the
  declared kinds, and its result types equal the op's inference (``dtype`` and
  ``shape``; a result's layout is a storage decision and is only compared when
  inference states one);
* nested graphs in attributes (the ``body`` of ``fused`` nodes) are verified
  recursively, and a ``fused`` body's inputs and outputs have the types of the
  node's operands and results.

The pass manager runs it after every pass, so it stays linear in the graph size
(plus the cost of each op's own type inference); networkx is only used to name
the cycle once an error has been found.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import IRError, OpDef, get_op
from minicomp.ir.printer import format_name, node_summary
from minicomp.ir.symbolic import Sym, same_dims
from minicomp.ir.types import TensorType


class VerifyError(IRError):
    """A malformed graph. ``node`` is the offending node (None for graph-level problems)."""

    def __init__(self, message: str, node: Node | None = None):
        self.node = node
        super().__init__(message)


def verify(graph: Graph) -> None:
    """Return if ``graph`` is well formed, else raise :class:`VerifyError`."""
    _Verifier(graph).run()


def _is_int(v: Any) -> bool:
    """An integer attribute: a Python/numpy int or a symbolic size."""
    return isinstance(v, (int, np.integer, Sym)) and not isinstance(v, (bool, np.bool_))


_KIND_CHECKS = {
    "int": _is_int,
    "float": lambda v: _is_int(v) or isinstance(v, (float, np.floating)),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    "str": lambda v: isinstance(v, str),
    "ints": lambda v: isinstance(v, (tuple, list)) and all(_is_int(x) for x in v),
    "dtype": lambda v: isinstance(v, DType),
    "array": lambda v: isinstance(v, np.ndarray),
    "graph": lambda v: isinstance(v, Graph),
}


class _Verifier:
    def __init__(self, graph: Graph, context: str = ""):
        self.graph = graph
        self.where = f"{context}graph {format_name('@', graph.name)}"

    def fail(self, message: str, node: Node | None = None) -> None:
        prefix = f"{self.where}: node '{node_summary(node)}'" if node is not None else self.where
        raise VerifyError(f"{prefix}: {message}", node)

    def run(self) -> None:
        graph = self.graph
        every: set[int] = {id(v) for v in graph.inputs}
        for n in graph.nodes:
            every.update(id(r) for r in n.results)
        defined: set[int] = set()
        names: dict[str, Value] = {}
        for v in graph.inputs:
            self._define(v, names, defined, None)
            if v.producer is not None:
                self.fail(f"input %{v.name} claims to be produced by a node")
        for node in graph.nodes:
            self._check_node(node, names, defined, every)
        if not graph.outputs:
            self.fail("graph has no outputs")
        for v in graph.outputs:
            if id(v) not in every:
                self.fail(f"output {self._name(v)} is not defined in this graph")

    @staticmethod
    def _name(v: Any) -> str:
        return format_name("%", v.name) if isinstance(v, Value) else repr(v)

    def _define(self, v: Value, names: dict, defined: set, node: Node | None) -> None:
        if not isinstance(v, Value) or not isinstance(v.type, TensorType):
            self.fail(f"{v!r} is not a Value with a TensorType", node)
        if id(v) in defined:
            self.fail(f"value %{v.name} is defined twice", node)
        if not isinstance(v.name, str) or not v.name:
            self.fail(f"value {v!r} has no name", node)
        if v.name in names:
            self.fail(f"duplicate value name %{v.name} (two different values carry it)", node)
        names[v.name] = v
        defined.add(id(v))

    def _check_node(self, node: Node, names: dict, defined: set, every: set) -> None:
        try:
            opdef = get_op(node.op)
        except IRError as e:
            self.fail(str(e), node)
        for o in node.operands:
            if not isinstance(o, Value):
                self.fail(f"operand {o!r} is not a Value", node)
            if id(o) not in defined:
                if id(o) in every:
                    self._fail_order(node, o)
                self.fail(f"operand {self._name(o)} is not defined in this graph", node)
        self._check_attrs(node, opdef)
        for i, r in enumerate(node.results):
            self._define(r, names, defined, node)
            if r.producer is not node or r.index != i:
                self.fail(f"result %{r.name} does not point back to this node as result {i}", node)
        try:
            inferred = opdef.infer_types([o.type for o in node.operands], node.attrs)
        except Exception as e:  # noqa: BLE001 - any failure of inference is a verify error
            self.fail(f"type inference failed: {e}", node)
        actual = [r.type for r in node.results]
        if len(inferred) != len(actual) or any(not _same_type(a, b) for a, b in zip(actual, inferred)):
            self.fail(f"result types {', '.join(map(str, actual)) or '()'} differ from the inferred "
                      f"{', '.join(map(str, inferred)) or '()'}", node)

    def _check_attrs(self, node: Node, opdef: OpDef) -> None:
        for key in node.attrs:
            if key not in opdef.attrs:
                self.fail(f"unknown attribute '{key}' (op '{node.op}' has {sorted(opdef.attrs)})", node)
        for key, spec in opdef.attrs.items():
            if key not in node.attrs:
                self.fail(f"missing attribute '{key}'", node)
            value = node.attrs[key]
            check = _KIND_CHECKS.get(spec.kind)
            if check is not None and not check(value) and not (value is None and not spec.required
                                                               and spec.default is None):
                self.fail(f"attribute '{key}' should be of kind {spec.kind}, got {value!r}"[:300], node)
        for key, value in node.attrs.items():
            if isinstance(value, Graph):
                here = f"{self.where}: in attribute '{key}' of node '{node_summary(node)}': "
                _Verifier(value, here).run()
                if node.op == "fused":
                    self._check_body(node, value)

    def _check_body(self, node: Node, body: Graph) -> None:
        ins = [v.type for v in body.inputs]
        outs = [v.type for v in body.outputs]
        if not _same_types(ins, [o.type for o in node.operands]):
            self.fail(f"body inputs ({', '.join(map(str, ins))}) do not match the operand types "
                      f"({', '.join(str(o.type) for o in node.operands)})", node)
        if not _same_types(outs, [r.type for r in node.results]):
            self.fail(f"body outputs ({', '.join(map(str, outs))}) do not match the result types "
                      f"({', '.join(str(r.type) for r in node.results)})", node)

    def _fail_order(self, node: Node, operand: Value) -> None:
        try:
            import networkx as nx  # only to name a cycle once an error is found
            cycle = nx.find_cycle(self.graph.to_networkx(), source=node)
        except nx.NetworkXNoCycle:
            cycle = []
        if cycle:
            names = [", ".join(format_name("%", r.name) for r in edge[0].results) or edge[0].op for edge in cycle]
            self.fail(f"nodes form a cycle: {' -> '.join(names + names[:1])}", node)
        self.fail(f"operand {self._name(operand)} is used before its definition", node)


def _same_type(actual: TensorType, inferred: TensorType) -> bool:
    """Equal dtype and shape (symbolic sizes compared as expressions), and layout when inferred."""
    if actual.dtype != inferred.dtype or not same_dims(actual.shape, inferred.shape):
        return False
    return inferred.order is None or actual.order == inferred.order


def _same_types(a: list[TensorType], b: list[TensorType]) -> bool:
    return len(a) == len(b) and all(_same_type(x, y) and x.order == y.order for x, y in zip(a, b))
