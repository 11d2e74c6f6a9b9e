"""The graph IR: SSA values, nodes and graphs, with one small mutation API.

A :class:`Graph` has explicit inputs, an ordered list of nodes (always kept in a
topological order) and explicit outputs. Each :class:`Node` applies one op from
the registry to operand :class:`Value`s, carries attributes, and defines one or
more result values. Weights are ``constant`` nodes holding a numpy array.

Passes change a graph only through :meth:`Graph.add`, :meth:`Graph.replace_uses`,
:meth:`Graph.remove` and :meth:`Graph.set_outputs`, so use lists stay correct.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from minicomp.ir.types import TensorType

if TYPE_CHECKING:
    import networkx as nx


class Value:
    """An SSA value: defined once (by a graph input or a node), used many times."""

    __slots__ = ("type", "name", "producer", "index")

    def __init__(self, type: TensorType, name: str, producer: "Node | None" = None, index: int = 0):
        self.type = type
        self.name = name
        self.producer = producer
        self.index = index

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. ``attrs`` is treated as immutable once the node is built."""

    __slots__ = ("op", "operands", "attrs", "results", "loc")

    def __init__(self, op: str, operands: Sequence[Value], attrs: dict[str, Any], results: list[Value],
                 loc: str | None = None):
        self.op = op
        self.operands = list(operands)
        self.attrs = dict(attrs)
        self.results = results
        self.loc = loc

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"node {self.op} has {len(self.results)} results, not one")
        return self.results[0]

    @property
    def opdef(self):
        from minicomp.ir.ops import get_op
        return get_op(self.op)

    def __repr__(self) -> str:
        res = ", ".join(f"%{r.name}" for r in self.results)
        return f"<{res} = {self.op} {', '.join('%' + o.name for o in self.operands)}>"


class Graph:
    """A function in SSA form: inputs, nodes in topological order, outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._names: set[str] = set()
        self._counter = itertools.count()

    # -- construction -----------------------------------------------------------------
    def fresh_name(self, hint: str | None = None) -> str:
        """A value name not used in this graph yet (``hint`` if free, else numbered)."""
        if hint is not None and hint not in self._names:
            self._names.add(hint)
            return hint
        while True:
            name = str(next(self._counter)) if hint is None else f"{hint}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_input(self, type: TensorType, name: str | None = None) -> Value:
        value = Value(type, self.fresh_name(name if name is not None else f"arg{len(self.inputs)}"))
        self.inputs.append(value)
        return value

    def add(self, op: str, operands: Sequence[Value] = (), attrs: dict[str, Any] | None = None,
            types: Sequence[TensorType] | None = None, names: Sequence[str] | None = None,
            before: Node | None = None, loc: str | None = None) -> Node:
        """Append (or insert ``before`` a node) an application of ``op``.

        Result types are inferred from the op's rule unless ``types`` is given (the
        parser passes them; the verifier checks them against inference).
        """
        from minicomp.ir.ops import get_op
        attrs = dict(attrs or {})
        opdef = get_op(op)
        opdef.check_attrs(attrs)
        if types is None:
            types = opdef.infer_types([v.type for v in operands], attrs)
        node = Node(op, operands, attrs, [], loc)
        node.results = [Value(t, self.fresh_name(names[i] if names else None), node, i)
                        for i, t in enumerate(types)]
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    # -- mutation -----------------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every use of ``old`` (operands and outputs) use ``new`` instead."""
        if old is new:
            return
        for node in self.nodes:
            if any(o is old for o in node.operands):
                node.operands = [new if o is old else o for o in node.operands]
        self.outputs = [new if o is old else o for o in self.outputs]

    def replace_uses_many(self, mapping: dict[Value, Value]) -> None:
        """:meth:`replace_uses` for every ``old -> new`` of ``mapping`` in one sweep over the graph
        (a pass merging thousands of values would otherwise sweep once per value)."""
        if not mapping:
            return
        for node in self.nodes:
            if any(o in mapping for o in node.operands):
                node.operands = [mapping.get(o, o) for o in node.operands]
        self.outputs = [mapping.get(o, o) for o in self.outputs]

    def remove(self, node: Node) -> None:
        """Delete a node whose results are no longer used."""
        for r in node.results:
            if self.uses(r) or any(o is r for o in self.outputs):
                raise ValueError(f"cannot remove {node!r}: %{r.name} is still used")
        self.nodes.remove(node)

    # -- queries ------------------------------------------------------------------------
    def uses(self, value: Value) -> list[Node]:
        return [n for n in self.nodes if any(o is value for o in n.operands)]

    def users_map(self) -> dict[int, list[Node]]:
        """id(value) -> nodes using it, computed in one sweep."""
        users: dict[int, list[Node]] = {}
        for n in self.nodes:
            for o in n.operands:
                lst = users.setdefault(id(o), [])
                if not lst or lst[-1] is not n:
                    lst.append(n)
        return users

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.results

    def constants(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "constant"]

    def to_networkx(self) -> "nx.MultiDiGraph":
        """A networkx view: one vertex per node (the Node object), one edge per use."""
        import networkx as nx  # imported on use: it costs ~0.3 s, and a cache hit never needs it
        g = nx.MultiDiGraph()
        for n in self.nodes:
            g.add_node(n)
        for n in self.nodes:
            for i, o in enumerate(n.operands):
                if o.producer is not None:
                    g.add_edge(o.producer, n, operand=i, value=o)
        return g

    def toposort(self) -> None:
        """Reorder ``nodes`` topologically (stable: ties keep their current order)."""
        pos = {id(n): i for i, n in enumerate(self.nodes)}
        import networkx as nx
        g = self.to_networkx()
        self.nodes = list(nx.lexicographical_topological_sort(g, key=lambda n: pos[id(n)]))

    def copy(self) -> "Graph":
        """A deep copy of the structure (constant arrays are shared, never mutated)."""
        from minicomp.ir.parser import clone
        return clone(self)

    def __str__(self) -> str:
        from minicomp.ir.printer import print_graph
        return print_graph(self)


def view_source(value: Value) -> tuple[Value, list[Node]]:
    """The value a chain of views (ops of role VIEW) starts from, and the chain's view nodes, source first.

    The buffer a value reads through views: fusion, memory planning and the lowering all ask this."""
    chain = []
    while value.producer is not None and value.producer.opdef.is_view:
        chain.append(value.producer)
        value = value.producer.operands[0]
    return value, chain[::-1]


def constant(graph: Graph, array: np.ndarray, dtype=None, name: str | None = None) -> Value:
    """Add a constant node holding ``array`` (stored as the IR dtype's numpy type)."""
    from minicomp.ir.dtypes import DType, round_to_dtype
    from minicomp.ir.ops.dtype_util import dtype_of_numpy
    dt = dtype if dtype is not None else dtype_of_numpy(np.asarray(array).dtype)
    arr = np.array(round_to_dtype(np.asarray(array), dt), order="C")  # (ascontiguousarray makes 0-d 1-d)
    arr.setflags(write=False)
    return graph.add("constant", [], {"value": arr, "dtype": dt}, names=[name] if name else None).result
