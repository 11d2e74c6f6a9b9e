"""Canonicalization passes: dead-code elimination, CSE, constant folding, algebraic rewrites.

Every rewrite here is exact: the graph computes bit-identical outputs for every
input, NaN, infinities and the sign of zero included (``x + 0.0`` is *not*
``x`` when ``x = -0.0``, so only ``x + (-0.0)`` is folded for floats).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import Role
from minicomp.passes.manager import Pass, PassContext, register_pass
from minicomp.passes.rewrite import RewritePattern, Rewriter, apply_patterns, defining


def remove_dead(graph: Graph) -> int:
    """Remove every node none of whose results reaches an output; returns how many were removed."""
    live: set[int] = {id(v) for v in graph.outputs}
    keep: list[Node] = []
    for node in reversed(graph.nodes):
        if any(id(r) in live for r in node.results):
            keep.append(node)
            live.update(id(o) for o in node.operands)
    removed = len(graph.nodes) - len(keep)
    graph.nodes = keep[::-1]
    return removed


@register_pass("dce")
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Removes nodes whose results are not used by any output. Inputs are kept (the signature)."""

    name: str = "dce"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        n = remove_dead(graph)
        if n:
            ctx.record("rewrite", f"{n} dead nodes", "results never reach an output")


def _freeze(value: Any) -> Any:
    """A hashable key for an attribute value (arrays by dtype/shape/bytes, floats by bits)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return (type(value).__name__, value)


@register_pass("cse")
@dataclass(frozen=True)
class CommonSubexpressionElimination(Pass):
    """Merges nodes with the same op, operands and attributes (constants by content).

    Guarantees: no two remaining nodes compute the same thing from the same values.
    """

    name: str = "cse"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        seen: dict[Any, Node] = {}
        merged = 0
        replaced: dict[Value, Value] = {}  # applied in one sweep at the end (one per merge is quadratic)
        for node in list(graph.nodes):
            if node.opdef.has_body:
                continue
            key = (node.op, tuple(id(replaced.get(o, o)) for o in node.operands),
                   tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items())),
                   tuple(str(r.type) for r in node.results))
            other = seen.get(key)
            if other is None:
                seen[key] = node
                continue
            replaced.update(zip(node.results, other.results))
            merged += 1
        graph.replace_uses_many(replaced)
        if merged:
            remove_dead(graph)
            ctx.record("rewrite", f"{merged} duplicate nodes", "same op, operands and attributes")


@register_pass("constant-fold")
@dataclass(frozen=True)
class ConstantFold(Pass):
    """Evaluates nodes whose operands are all constants (with the reference interpreter).

    Only results of at most ``options["fold_limit"]`` elements (default 4096) are
    folded, so weights are never duplicated in transposed or broadcast form.
    """

    name: str = "constant-fold"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        from minicomp.ir.graph import constant
        limit = int(ctx.option("fold_limit", 4096))
        folded = 0
        for node in list(graph.nodes):
            # constants are folded already; fused bodies and external calls have no reference to run
            if node.opdef.role in (Role.CONSTANT, Role.OPAQUE) or not node.operands:
                continue
            if not all(o.producer is not None and o.producer.opdef.role is Role.CONSTANT for o in node.operands):
                continue
            if sum(r.type.numel for r in node.results) > limit:
                continue
            try:
                arrays = _evaluate(node)
            except (ZeroDivisionError, IndexError):  # integer division by zero, id out of range:
                continue  # left to run, where the kernel raises eager's error at call time
            new_values = []
            for r, arr in zip(node.results, arrays):
                v = constant(graph, np.asarray(arr).reshape(r.type.shape), r.type.dtype)
                graph.nodes.remove(v.producer)
                graph.nodes.insert(graph.nodes.index(node), v.producer)
                new_values.append(v)
            for old, new in zip(node.results, new_values):
                graph.replace_uses(old, new)
            folded += 1
        if folded:
            remove_dead(graph)
            ctx.record("rewrite", f"{folded} nodes folded", "all operands constant")


def _evaluate(node: Node) -> list[np.ndarray]:
    """Run one node's numpy reference on its constant operands (via the interpreter's evaluate_node)."""
    from minicomp.ir.interpreter import evaluate_node
    return evaluate_node(node, [np.asarray(o.producer.attrs["value"]) for o in node.operands])


# -- algebraic rewrite patterns ----------------------------------------------------------------
def _same_type(a: Value, b: Value) -> bool:
    return a.type.dtype == b.type.dtype and a.type.shape == b.type.shape


def _identity_operand(node: Node, rw: Rewriter, ident: float, commutative: bool, int_ident: int | None) -> Value | None:
    """The operand x of ``op(x, c)`` (or ``op(c, x)``) where c is an exact identity element."""
    pairs = [(0, 1), (1, 0)] if commutative else [(0, 1)]
    for xi, ci in pairs:
        x, c = node.operands[xi], node.operands[ci]
        if not _same_type(x, node.result):
            continue
        dt = node.result.type.dtype
        if dt.is_float and rw.is_scalar_const(c, ident):
            return x
        if dt.is_int and int_ident is not None and rw.splat(c) is not None and rw.splat(c) == int_ident \
                and not isinstance(rw.splat(c), float):
            return x
    return None


class IdentityElement(RewritePattern):
    """``x*1``, ``1*x``, ``x/1``, ``x+(-0.0)``, ``(-0.0)+x``, ``x-0.0`` (and ints ``x+0``, ``x-0``) -> ``x``."""

    RULES = {"mul": (1.0, True, 1), "div": (1.0, False, 1), "add": (-0.0, True, 0), "sub": (0.0, False, 0)}
    ops = tuple(RULES)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        rule = self.RULES[node.op]
        if node.attrs.get("rounding_mode") is not None:  # div with rounding: x / 1 rounds
            return False
        x = _identity_operand(node, rw, *rule)
        if x is None:
            return False
        rw.replace(node, [x])
        return True


class DoubleNegation(RewritePattern):
    """``neg(neg(x))`` -> ``x`` (exact for every value)."""

    ops = ("neg",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        p = defining(node.operands[0], "neg")
        if p is not None and _same_type(p.operands[0], node.result):
            rw.replace(node, [p.operands[0]])
            return True
        return False


class IntSelfSubtract(RewritePattern):
    """``x - x`` -> zeros, for integer dtypes only (NaN - NaN and inf - inf are NaN)."""

    ops = ("sub",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if node.operands[0] is not node.operands[1] or not node.result.type.dtype.is_int:
            return False
        t = node.result.type
        rw.replace(node, [rw.add("full", [], {"shape": t.shape, "value": 0.0, "dtype": t.dtype}).result])
        return True


class NoOpView(RewritePattern):
    """Ops that change nothing (their OpDef's ``no_op`` rule: same-shape reshape/expand, identity
    permute, full-range slice, cast to the same dtype) -> their operand."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        rule = node.opdef.no_op
        if rule is None or len(node.operands) != 1 or len(node.results) != 1:
            return False
        x = node.operands[0]
        if not _same_type(x, node.result) or not rule(x.type, node.attrs):
            return False
        rw.replace(node, [x])
        return True


class ComposeViews(RewritePattern):
    """``permute(permute(x))`` -> one permute; ``reshape(reshape(x))`` -> one reshape."""

    ops = ("permute", "reshape")

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        p = defining(node.operands[0], node.op)
        if p is None:
            return False
        if "dims" in node.attrs:  # permute: compose the two dim orders
            inner, outer = p.attrs["dims"], node.attrs["dims"]
            attrs = {"dims": tuple(int(inner[d]) for d in outer)}
        else:  # reshape: the outer shape
            attrs = {"shape": tuple(node.result.type.shape)}
        rw.replace(node, [rw.add(node.op, [p.operands[0]], attrs).result])
        return True


class ConstantWhere(RewritePattern):
    """``where(c, a, b)`` with an all-true (all-false) constant ``c`` -> ``a`` (``b``) when types match."""

    ops = ("where",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        c = rw.splat(node.operands[0])
        if c is None:
            return False
        pick = node.operands[1] if bool(c) else node.operands[2]
        if not _same_type(pick, node.result):
            return False
        rw.replace(node, [pick])
        return True


def builtin_patterns() -> list[RewritePattern]:
    """The patterns the ``canonicalize`` pass applies."""
    return [IdentityElement(), DoubleNegation(), IntSelfSubtract(), NoOpView(), ComposeViews(), ConstantWhere()]


@register_pass("canonicalize")
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Applies :func:`builtin_patterns` (plus ``options["patterns"]``) greedily to a fixpoint.

    Guarantees: bit-identical outputs (every pattern is exact), dead nodes removed.
    """

    name: str = "canonicalize"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        patterns = builtin_patterns() + list(ctx.option("patterns", []))
        before = len(graph.nodes)
        if apply_patterns(graph, patterns, listener=ctx.listener):
            ctx.record("rewrite", f"{before} -> {len(graph.nodes)} nodes", "algebraic simplification")
