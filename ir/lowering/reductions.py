"""Reduction templates: each reduction op as stages of a :class:`LoopKernel`.

A reduction over dims ``rd`` of an input of shape ``S`` iterates the kept dims
in the ``outer`` loops (Var(0..)) and the reduced dims in the ``inner`` loops.
Which dims and which stages is each op's :class:`~minicomp.ir.ops.reduction.ReduceRule`,
beside its definition; ``setup(builder, node, space)`` runs the rule's stages through a
:class:`ReduceCtx` and registers how the result reads at an index (checked to be the
current outer point).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Node
from minicomp.ir.kernel import E, Expr, Var
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.lowering.builder import CannotFuse, LoweringError


@dataclass(frozen=True)
class Space:
    """The loop space of a reduction: input shape, and which input dims are reduced."""

    shape: tuple[int, ...]
    rdims: tuple[int, ...]
    cumulative: int | None = None  # cumsum: the scanned dim (outer covers all of shape)

    @property
    def outer(self) -> tuple[int, ...]:
        if self.cumulative is not None:
            return self.shape
        return tuple(s for d, s in enumerate(self.shape) if d not in self.rdims)

    @property
    def inner(self) -> tuple[int, ...]:
        if self.cumulative is not None:
            return (self.shape[self.cumulative],)
        return tuple(self.shape[d] for d in self.rdims)

    def full_index(self) -> list[Expr]:
        """Input index at the current (outer, inner) point."""
        if self.cumulative is not None:
            idx: list[Expr] = [Var(d) for d in range(len(self.shape))]
            idx[self.cumulative] = Var(len(self.shape))
            return idx
        no, out, k_o, k_i = len(self.outer), [], 0, 0
        for d in range(len(self.shape)):
            if d in self.rdims:
                out.append(Var(no + k_i))
                k_i += 1
            else:
                out.append(Var(k_o))
                k_o += 1
        return out

    def outer_dims(self) -> list[int]:
        if self.cumulative is not None:
            return list(range(len(self.shape)))
        return [d for d in range(len(self.shape)) if d not in self.rdims]


def space_of(node: Node) -> Space:
    """The loop space a reduction node needs (from its OpDef's :class:`ReduceRule`)."""
    rule = node.opdef.reduce
    if rule is None:
        raise LoweringError(f"no reduction template for '{node.op}'")
    x = node.operands[0].type
    dims = tuple(rule.dims(x, node.attrs))
    if rule.cumulative:
        return Space(x.shape, (), cumulative=dims[0] if dims else None)
    return Space(x.shape, dims)


def _check_outer(idx: Sequence[Expr], space: Space, dims_of_idx: Sequence[int | None], extents) -> None:
    """``idx`` (an index of a reduction result) must address the current outer point."""
    outer_dims = space.outer_dims()
    for e, d in zip(idx, dims_of_idx):
        if d is None or space.shape[d] == 1 or d not in outer_dims:
            continue
        want = Var(outer_dims.index(d))
        if ix.simplify(e, extents) != want:
            raise CannotFuse("a reduction result is read at another point than its own")


class ReduceCtx:
    """What a :class:`~minicomp.ir.ops.reduction.ReduceRule`'s ``stages`` sees of the kernel being built.

    ``acc``: the accumulation dtype (the result's compute dtype); ``n_inner``: the number of
    inner points; ``x(dtype, idx=None)``: operand 0 at the current (outer, inner) point or at
    ``idx``, cast to ``dtype``; ``operand(i, idx)``: operand ``i`` at ``idx``;
    ``reduce(kind, value, dtype)``: append a Reduce stage and get its per-outer-point result.
    """

    def __init__(self, b, node: Node, space: Space):
        self._b, self._full = b, space.full_index()
        self.node, self.attrs, self.space = node, node.attrs, space
        self.in_type = node.operands[0].type
        self.in_dtype = self.in_type.dtype
        self.out_dtype = node.results[0].type.dtype
        self.acc = self.out_dtype.compute
        self.n_inner = prod(space.inner)

    def x(self, dt: DType, idx: Sequence[Expr] | None = None) -> Expr:
        return E.cast(self._b.expr(self.node.operands[0], self._full if idx is None else idx), dt)

    def operand(self, i: int, idx: Sequence[Expr]) -> Expr:
        return self._b.expr(self.node.operands[i], idx)

    def reduce(self, kind: str, value: Expr, dtype: DType) -> Expr:
        return self._b.reduce(kind, value, dtype)


def setup(b, node: Node, space: Space) -> None:
    """Append ``node``'s stages to builder ``b`` and register its result reader."""
    rule = node.opdef.reduce
    if rule is None:
        raise LoweringError(f"no reduction template for '{node.op}'")
    # Which input dim each result dim stands for (None: a kept size-1 dim).
    if rule.full_result:
        res_dims: list[int | None] = list(range(len(space.shape)))
    elif node.attrs.get("keepdim", False):
        res_dims = [None if d in space.rdims else d for d in range(len(space.shape))]
    else:
        res_dims = list(space.outer_dims())
    read = rule.stages(ReduceCtx(b, node, space))

    def checked(idx):
        _check_outer(idx, space, res_dims, b.extents)
        return read(idx)
    b.reduced[id(node.results[0])] = checked


def result_store_index(space: Space, shape: Sequence[int]) -> tuple[list[Expr], bool] | None:
    """Index (and inner flag) at which a kernel stores an output of ``shape``, or None."""
    shape = tuple(shape)
    if shape == space.outer:
        return [Var(d) for d in range(len(shape))], False
    if space.cumulative is None:
        keep = tuple(1 if d in space.rdims else s for d, s in enumerate(space.shape))
        if shape == keep and len(shape) == len(space.shape):
            outer_dims = space.outer_dims()
            return [ix.c64(0) if d in space.rdims else Var(outer_dims.index(d)) for d in range(len(shape))], False
        if shape == space.shape:
            return space.full_index(), True
    return None
