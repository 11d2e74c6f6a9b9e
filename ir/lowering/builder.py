"""Scalar expressions of graph values: the core of lowering.

A :class:`KernelBuilder` lowers one *group* of nodes (a single op, or the body
of a ``fused`` node) to one kernel. :meth:`KernelBuilder.expr` gives the value
of any graph value at a multi-index of loop expressions:

* values outside the group that are materialized (graph inputs, constants,
  results of other kernels) become ``Load``s of a kernel input buffer (numel-1
  constants become ``Const``s);
* view ops (role VIEW: an OpDef with a ``view`` rule) fold into the index;
* ops with an ``element`` rule (cat, embedding, copy, batch_norm) apply it;
* elementwise ops apply their OpDef's ``scalar`` rule to their operands' values
  (through :func:`minicomp.ir.ops.elementwise.scalar_expr`, which casts operands
  to the compute dtype, f16/bf16 as f32, and rounds the result to the op's
  dtype once, as eager PyTorch does);
* reduction and contraction results read their stage results (``Ref``) at the
  current outer point.

Every expression has its value's IR dtype; stores cast to the buffer's dtype.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Node, Value
from minicomp.ir.kernel import Buffer, E, Expr, Load, Ref, Var
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.ops import IRError, Role


class LoweringError(IRError):
    """A node or graph that cannot become kernels."""


class CannotFuse(LoweringError):
    """A group's nodes do not fit one kernel template (the caller may split the group)."""


class NeedMaterialize(LoweringError):
    """A contraction operand is not an affine view of a buffer: ``value`` needs its own kernel."""

    def __init__(self, value: Value):
        super().__init__(f"%{value.name} must be materialized")
        self.value = value


class _Need(BaseException):
    """Raised inside an :meth:`KernelBuilder.expr` walk for an operand not computed yet.

    A BaseException so that no ``except Exception`` in a lowering rule can swallow it."""

    def __init__(self, value: Value, idx: Sequence[Expr]):
        super().__init__()
        self.value = value
        self.idx = idx


def is_view(node: Node) -> bool:
    """Whether ``node`` folds into its consumers' indexing (no kernel of its own)."""
    return node.opdef.role is Role.VIEW


class KernelBuilder:
    """Builds the expressions of one kernel.

    ``group``: ids of the nodes computed inside the kernel. ``canon`` maps a value
    to the value it stands for (fused bodies' inputs to the outer operands).
    ``materialized(v)`` says whether a value outside the group lives in a buffer.
    """

    def __init__(self, group: Sequence[Node], canon: Callable[[Value], Value],
                 materialized: Callable[[Value], bool]):
        self.group = {id(n) for n in group}
        self.canon = canon
        self.materialized = materialized
        self.inputs: list[Value] = []
        self._input_pos: dict[int, int] = {}
        self.extents: tuple[int, ...] = ()
        self.stages: list = []
        self.reduced: dict[int, Callable[[list[Expr]], Expr]] = {}
        self._memo: dict | None = None  # (value id, index) -> Expr during one expr() walk

    # -- buffers --------------------------------------------------------------------------
    def buffer_of(self, v: Value) -> int:
        key = id(v)
        if key not in self._input_pos:
            self._input_pos[key] = len(self.inputs)
            self.inputs.append(v)
        return self._input_pos[key]

    def input_buffers(self) -> tuple[Buffer, ...]:
        return tuple(Buffer(f"in{i}_{v.name}", v.type) for i, v in enumerate(self.inputs))

    # -- addressing (loads and contraction operands) ---------------------------------------
    def address(self, v: Value, idx: Sequence[Expr]) -> tuple[Value, Expr]:
        """The materialized value under ``v``'s views and the flat element index of ``idx``."""
        v = self.canon(v)
        while True:
            node = v.producer
            if node is not None and id(node) in self.group and node.opdef.role.makes_kernel:
                raise NeedMaterialize(v)
            if self.materialized(v) or node is None or node.opdef.role is Role.CONSTANT:
                return v, ix.simplify(ix.flat_index(idx, v.type.strides, v.type.shape), self.extents)
            if not is_view(node):
                raise NeedMaterialize(v)
            idx, v = self._view_step(node, v, idx)

    def _view_step(self, node: Node, v: Value, idx: Sequence[Expr]) -> tuple[list[Expr], Value]:
        src = self.canon(node.operands[0])
        rule = node.opdef.view
        out = rule(list(idx), [o.type for o in node.operands], node.attrs, result=v.index)
        return [ix.simplify(ix.to_i64(e), self.extents) for e in out], src

    # -- values ----------------------------------------------------------------------------
    def expr(self, v: Value, idx: Sequence[Expr]) -> Expr:
        """The value of ``v`` at multi-index ``idx``, as an Expr of ``v``'s IR dtype.

        Evaluated without recursion (a chain of thousands of fused ops would overflow
        Python's stack): the outermost call walks an explicit stack of (value, index)
        requests. Evaluating one request (:meth:`_expr_step`) reads its operands through
        this method, which, inside a walk, answers from the walk's memo or raises
        :class:`_Need` for an operand not computed yet; the walk computes that operand
        first and evaluates the request again. Each (value, index) is computed once per
        walk, so a value used twice is one shared expression.
        """
        memo = self._memo
        key = (id(self.canon(v)), tuple(idx))
        if memo is not None:  # inside a walk: an operand of the request being evaluated
            hit = memo.get(key)
            if hit is None:
                raise _Need(v, idx)
            return hit
        self._memo = memo = {}
        try:
            stack = [(v, list(idx), key)]
            while stack:
                sv, sidx, skey = stack[-1]
                if skey in memo:
                    stack.pop()
                    continue
                try:
                    memo[skey] = self._expr_step(sv, sidx)
                except _Need as need:
                    stack.append((need.value, list(need.idx), (id(self.canon(need.value)), tuple(need.idx))))
                    continue
                stack.pop()
            return memo[key]
        finally:
            self._memo = None

    def _expr_step(self, v: Value, idx: Sequence[Expr]) -> Expr:
        """One request of :meth:`expr`: ``v`` at ``idx`` from its operands' expressions."""
        v = self.canon(v)
        dt = v.type.dtype
        node = v.producer
        if id(v) in self.reduced:
            return E.cast(self.reduced[id(v)](list(idx)), dt)
        const = node is not None and node.opdef.role is Role.CONSTANT
        if const and v.type.numel == 1:
            return E.cast(E.const(node.attrs["value"].reshape(-1)[0].item(), dt.compute), dt)
        if node is not None and id(node) in self.group and not const:
            return self._compute(node, v, list(idx))
        if node is None or self.materialized(v) or const:
            flat = ix.simplify(ix.flat_index(idx, v.type.strides, v.type.shape), self.extents)
            return Load(self.buffer_of(v), flat, dt)
        if is_view(node):
            new_idx, src = self._view_step(node, v, idx)
            return self.expr(src, new_idx)
        raise LoweringError(f"%{v.name} ({node.op}) is neither in the kernel nor materialized")

    def operand(self, node: Node, i: int, idx: Sequence[Expr], out_shape: Sequence[int]) -> Expr:
        """Operand ``i`` of ``node`` at ``idx`` of the (broadcast) ``out_shape``."""
        shape = node.operands[i].type.shape
        lead = len(out_shape) - len(shape)
        sub = [ix.c64(0) if s == 1 and out_shape[lead + d] != 1 else idx[lead + d] for d, s in enumerate(shape)]
        return self.expr(node.operands[i], sub)

    def _compute(self, node: Node, v: Value, idx: list[Expr]) -> Expr:
        opdef = node.opdef
        if opdef.role is Role.VIEW:
            new_idx, src = self._view_step(node, v, idx)
            return self.expr(src, new_idx)
        if opdef.element is not None:
            return E.cast(opdef.element(self, node, v, idx), v.type.dtype)
        if opdef.scalar is None:
            raise CannotFuse(f"op '{node.op}' ({opdef.role.value}) has no scalar or element rule")
        if not node.operands:  # generators (full, arange)
            return E.cast(opdef.scalar(index=list(idx), **node.attrs), v.type.dtype)
        from minicomp.ir.ops.elementwise import scalar_expr
        args = [self.operand(node, i, idx, v.type.shape) for i in range(len(node.operands))]
        return E.cast(scalar_expr(opdef, args, node.attrs), v.type.dtype)

    # -- stages ----------------------------------------------------------------------------
    def reduce(self, op: str, value: Expr, dtype: DType) -> Ref:
        """Append a Reduce stage; returns the reference to its per-outer-point result."""
        from minicomp.ir.kernel import REDUCE_KINDS, Reduce
        self.stages.append(Reduce(op, value, dtype))
        return Ref(len(self.stages) - 1, REDUCE_KINDS[op].result_dtype(dtype))


def vars_for(shape: Sequence[int], first: int = 0) -> list[Expr]:
    """Loop variables Var(first), Var(first+1), ... for each dim of ``shape``."""
    return [Var(first + d) for d in range(len(shape))]


def numel(shape: Sequence[int]) -> int:
    return prod(shape)


__all__ = ["KernelBuilder", "LoweringError", "CannotFuse", "NeedMaterialize", "is_view", "vars_for", "numel"]
