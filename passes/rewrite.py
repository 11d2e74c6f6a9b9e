"""A small pattern-rewrite API and one greedy driver (MLIR/xDSL style).

A :class:`RewritePattern` looks at one node and, if it matches, rewrites it
through the :class:`Rewriter` and returns True. :func:`apply_patterns` applies a
list of patterns to every node, repeatedly, until nothing changes (a fixpoint),
then removes dead nodes. Patterns never touch ``graph.nodes`` directly: the
rewriter keeps use lists and topological order correct::

    class MulTwoToAdd(RewritePattern):
        def match_and_rewrite(self, node, rw):
            if node.op == "mul" and rw.is_scalar_const(node.operands[1], 2.0):
                x = node.operands[0]
                if x.type == node.result.type:
                    rw.replace(node, [rw.add("add", [x, x]).result])
                    return True
            return False
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.ir.graph import Graph, Node, Value, constant
from minicomp.ir.ops import Role


class RewritePattern:
    """One local rewrite. Subclasses implement :meth:`match_and_rewrite`.

    Contract (checked by :func:`apply_patterns`): return True only after changing the
    graph through the rewriter, and False only when the graph was left untouched. A
    pattern that inserts nodes and then declines, or claims a rewrite it did not make,
    would make the driver loop without progress; it is rejected at its first such call.
    """

    name: str = ""
    #: The ops this pattern rewrites (MLIR's ``OpRewritePattern<Op>``): the driver calls
    #: :meth:`match_and_rewrite` only on nodes of these ops; empty: on every node.
    ops: tuple[str, ...] = ()

    def match_and_rewrite(self, node: Node, rewriter: "Rewriter") -> bool:  # pragma: no cover
        raise NotImplementedError


def defining(value: Value, op: str) -> Node | None:
    """The node that defines ``value`` when it is an ``op`` node, else None (MLIR's
    ``getDefiningOp<Op>``): how a pattern matches the producers around the node it rewrites."""
    p = value.producer
    return p if p is not None and p.op == op else None


class RewriteListener:
    """Told about every rewrite the greedy driver makes (MLIR's ``RewriterBase::Listener``).

    Subclass it and override :meth:`on_rewrite`; hand it to ``apply_patterns(..., listener=)``
    (the built-in passes hand over ``ctx.listener``, see ``minicomp.driver.pass_context``).
    A listener only looks: it must not change the graph.
    """

    def on_rewrite(self, pattern: RewritePattern, node: Node, added: list[Node], graph: Graph) -> None:
        """``pattern`` rewrote ``node`` (it still has its operands and results; their uses may now
        point elsewhere), inserting the nodes ``added`` (in order) into ``graph``."""


class PatternError(RuntimeError):
    """A rewrite pattern broke the driver's contract (see :class:`RewritePattern`), or a set of
    patterns never reaches a fixpoint; the message names the pattern(s)."""


def pattern_name(pattern: RewritePattern) -> str:
    """How errors name a pattern: its ``name`` attribute if set, else its class's qualified name."""
    return getattr(pattern, "name", "") or type(pattern).__qualname__


class Rewriter:
    """The only way a pattern changes the graph: insert before the current node, replace it.

    ``edits`` counts the changes made through it (the driver checks each pattern's
    return value against it).
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.current: Node | None = None
        self.changed = False
        self.edits = 0
        self.added: list[Node] = []  # every node inserted through this rewriter, in order

    def add(self, op: str, operands: Sequence[Value] = (), attrs: dict[str, Any] | None = None) -> Node:
        """Insert a new node right before the node being rewritten (types are inferred)."""
        node = self.graph.add(op, operands, attrs, before=self.current,
                              loc=self.current.loc if self.current is not None else None)
        self.added.append(node)
        self.changed = True
        self.edits += 1
        return node

    def constant(self, array, dtype) -> Value:
        """A new constant node (inserted before the current node)."""
        value = constant(self.graph, np.asarray(array), dtype)
        node = value.producer
        self.graph.nodes.remove(node)
        idx = self.graph.nodes.index(self.current) if self.current is not None else len(self.graph.nodes)
        self.graph.nodes.insert(idx, node)
        self.added.append(node)
        self.changed = True
        self.edits += 1
        return value

    def replace(self, node: Node, values: Sequence[Value]) -> None:
        """Make every use of ``node``'s results use ``values`` instead (types must match)."""
        if len(values) != len(node.results):
            raise ValueError(f"replacing {node!r}: {len(node.results)} results, {len(values)} values given")
        for old, new in zip(node.results, values):
            if old.type.dtype != new.type.dtype or old.type.shape != new.type.shape:
                raise ValueError(f"replacing %{old.name}: {old.type} with %{new.name}: {new.type}")
            self.graph.replace_uses(old, new)
        self.changed = True
        self.edits += 1

    # -- matching helpers ------------------------------------------------------------------
    @staticmethod
    def const_array(value: Value) -> np.ndarray | None:
        """The array of a constant-defined value, else None."""
        p = value.producer
        if p is not None and p.opdef.role is Role.CONSTANT:
            return np.asarray(p.attrs["value"])
        return None

    @staticmethod
    def splat(value: Value) -> float | int | bool | None:
        """The single value of a constant whose elements are all equal (bit-equal), else None."""
        arr = Rewriter.const_array(value)
        if arr is None:
            return None
        flat = arr.reshape(-1)
        if flat.size == 0:
            return None
        first = flat[0]
        if flat.dtype.kind == "f":
            bits = flat.view(np.uint8).reshape(flat.size, -1)
            if not (bits == bits[0]).all():
                return None
        elif not (flat == first).all():
            return None
        return first.item()

    @staticmethod
    def is_scalar_const(value: Value, x: float) -> bool:
        """True if ``value`` is a constant splat equal to ``x`` (sign of zero and NaN compared exactly)."""
        s = Rewriter.splat(value)
        if s is None or isinstance(s, bool) and not isinstance(x, bool):
            return False
        if isinstance(s, float) or isinstance(x, float):
            a, b = np.float64(s), np.float64(x)
            return bool(a.view(np.uint64) == b.view(np.uint64))
        return s == x


def _try(pattern: RewritePattern, node: Node, rw: Rewriter) -> bool:
    """Run one pattern on one node and enforce the contract of :class:`RewritePattern`."""
    before = rw.edits
    fired = bool(pattern.match_and_rewrite(node, rw))
    if fired and rw.edits == before:
        raise PatternError(f"rewrite pattern {pattern_name(pattern)!r} returned True on {node!r} but changed "
                           "nothing through the rewriter; return False when not rewriting")
    if not fired and rw.edits != before:
        raise PatternError(f"rewrite pattern {pattern_name(pattern)!r} changed the graph on {node!r} "
                           f"({rw.edits - before} rewriter call(s): add/constant/replace) but returned False; "
                           "check every condition before calling rw.add, or return True after rewriting")
    return fired


def apply_patterns(graph: Graph, patterns: Sequence[RewritePattern], max_iterations: int = 100,
                   listener: RewriteListener | None = None) -> bool:
    """Apply ``patterns`` greedily to every node until a fixpoint; True if anything changed.

    ``listener`` (a :class:`RewriteListener`) is told about each rewrite right after it is made.

    Dead nodes are removed at the end. Raises :class:`PatternError` (a RuntimeError) at
    once when a pattern breaks the contract of :class:`RewritePattern`, and, naming the
    patterns that fired in the last sweep, when no fixpoint is reached in
    ``max_iterations`` sweeps (patterns that undo each other).
    """
    from minicomp.passes.canonicalize import remove_dead
    rw = Rewriter(graph)
    any_change = False
    for _ in range(max_iterations):
        rw.changed = False
        fired: dict[str, int] = {}
        for node in list(graph.nodes):
            if node not in graph.nodes:
                continue
            for pattern in patterns:
                if pattern.ops and node.op not in pattern.ops:
                    continue
                rw.current = node
                mark = len(rw.added)
                if _try(pattern, node, rw):
                    if listener is not None:
                        listener.on_rewrite(pattern, node, rw.added[mark:], graph)
                    rw.changed = True
                    fired[pattern_name(pattern)] = fired.get(pattern_name(pattern), 0) + 1
                    break
        rw.current = None
        if rw.changed:
            remove_dead(graph)
            any_change = True
        else:
            return any_change
    last = ", ".join(f"{k!r} ({n}x)" for k, n in fired.items())
    raise PatternError(f"patterns did not reach a fixpoint in {max_iterations} sweeps; still firing in the "
                       f"last sweep: {last}")
