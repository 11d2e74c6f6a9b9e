"""ATen handlers for indexing: gather, index_select, advanced indexing, flip, as_strided.

All of them read elements of a tensor at computed positions, so all become one
:func:`take`: the tensor flattened to a column ``[numel, 1]`` and an ``embedding``
(a row gather, minicomp's one data-dependent load) with a linear index computed by
elementwise i64 ops. Eager raises for an index outside its dimension; the linear
index of such an element is set to ``numel``, which the embedding's run-time check
reports, so a bad index is an error and never a read of a neighbouring element.

Part of the table in :mod:`minicomp.frontend.aten_ops` (same conventions).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from minicomp.frontend.aten_ops import _dim, handles
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Value

aten = torch.ops.aten
I64 = DType.i64


def _strides(shape: Sequence[int]) -> list[int]:
    out, step = [0] * len(shape), 1
    for d in reversed(range(len(shape))):
        out[d] = step
        step *= max(shape[d], 1)
    return out


def take(ctx, x: Value, linear: Value) -> Value:
    """``x.flatten()[linear]`` (shape of ``linear``); an index outside ``[0, numel)`` raises at run time."""
    flat = ctx.emit("reshape", [x], shape=(x.type.numel, 1))
    got = ctx.emit("embedding", [flat, ctx.cast(linear, I64)])
    return ctx.emit("reshape", [got], shape=linear.type.shape)


def _placed(ctx, v: Value, rank: int, at: int) -> Value:
    """``v`` reshaped to ``rank`` dims with its own dims starting at position ``at`` (others 1)."""
    shape = (1,) * at + v.type.shape + (1,) * (rank - at - v.type.rank)
    return v if shape == v.type.shape else ctx.emit("reshape", [v], shape=shape)


def _arange_at(ctx, n: int, rank: int, at: int) -> Value:
    return _placed(ctx, ctx.emit("arange", [], start=0.0, end=float(n), step=1.0, dtype=I64), rank, at)


def _checked(ctx, idx: Value, n: int, wrap: bool) -> tuple[Value, Value]:
    """(index in [0, n) for valid entries, bool "out of range"); ``wrap``: negative indices count
    from the end (advanced indexing), else they are out of range (gather, index_select)."""
    idx = ctx.cast(idx, I64)
    zero, size = ctx.const(0, I64), ctx.const(n, I64)
    if wrap:
        bad = ctx.emit("logical_or", [ctx.emit("lt", [idx, ctx.emit("neg", [size])]), ctx.emit("ge", [idx, size])])
        idx = ctx.emit("where", [ctx.emit("lt", [idx, zero]), ctx.emit("add", [idx, size]), idx])
    else:
        bad = ctx.emit("logical_or", [ctx.emit("lt", [idx, zero]), ctx.emit("ge", [idx, size])])
    return idx, bad


def _linear(ctx, x: Value, terms: list[tuple[Value, int]], bad: list[Value], shape: tuple[int, ...]) -> Value:
    """sum(coord * stride) over ``terms``, broadcast to ``shape``; ``numel`` where any of ``bad`` holds."""
    total: Value | None = None
    for coord, stride in terms:
        part = coord if stride == 1 else ctx.emit("mul", [coord, ctx.const(stride, I64)])
        total = part if total is None else ctx.emit("add", [total, part])
    if total is None:
        total = ctx.emit("full", [], shape=(), value=0.0, dtype=I64)
    for b in bad:
        total = ctx.emit("where", [b, ctx.const(x.type.numel, I64), total])
    if total.type.shape != shape:
        if total.type.rank < len(shape):
            total = _placed(ctx, total, len(shape), len(shape) - total.type.rank)
        total = ctx.emit("expand", [total], shape=shape)
    return total


@handles(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(ctx, x: Value, indices: list[Any]) -> Value:
    """``x[..., idx, ...]`` with integer index tensors (boolean masks give value-dependent shapes)."""
    shape = ctx.expected()[0]
    dims = [d for d, i in enumerate(indices) if i is not None]
    if any(indices[d].type.dtype is DType.bool for d in dims):
        raise ctx.unsupported("indexing with a boolean mask (its result's shape depends on the values)")
    b_rank = max(indices[d].type.rank for d in dims)
    adjacent = dims == list(range(dims[0], dims[-1] + 1))
    b_at = dims[0] if adjacent else 0
    rank = len(shape)
    strides = _strides(x.type.shape)
    terms, bad = [], []
    for d in dims:
        idx, oob = _checked(ctx, indices[d], x.type.shape[d], wrap=True)
        at = b_at + b_rank - idx.type.rank
        terms.append((_placed(ctx, idx, rank, at), strides[d]))
        bad.append(_placed(ctx, oob, rank, at))
    pos = 0 if adjacent else b_rank
    for d in range(x.type.rank):
        if d in dims:
            if adjacent and d == dims[0]:
                pos += b_rank
            continue
        terms.append((_arange_at(ctx, x.type.shape[d], rank, pos), strides[d]))
        pos += 1
    return take(ctx, x, _linear(ctx, x, terms, bad, shape))


@handles(aten.gather.default)
def _gather(ctx, x: Value, dim: int, index: Value, *, sparse_grad: bool = False) -> Value:
    """``out[i] = x[i with i[dim] replaced by index[i]]`` (``index`` no larger than ``x`` elsewhere)."""
    rank = max(x.type.rank, 1)
    d = _dim(dim, x.type.rank)
    if x.type.rank == 0:
        x = ctx.emit("reshape", [x], shape=(1,))
    shape = index.type.shape if index.type.rank else (1,)
    index = ctx.emit("reshape", [index], shape=shape) if index.type.shape != shape else index
    strides = _strides(x.type.shape)
    idx, oob = _checked(ctx, index, x.type.shape[d], wrap=False)
    terms = [(idx, strides[d])] + [(_arange_at(ctx, shape[k], rank, k), strides[k]) for k in range(rank) if k != d]
    out = take(ctx, x, _linear(ctx, x, terms, [oob], shape))
    return out if out.type.shape == ctx.expected()[0] else ctx.emit("reshape", [out], shape=ctx.expected()[0])


@handles(aten.index_select.default)
def _index_select(ctx, x: Value, dim: int, index: Value) -> Value:
    """Rows of a matrix as an ``embedding``; any other dim through :func:`take`."""
    d = _dim(dim, x.type.rank)
    shape = ctx.expected()[0]
    if x.type.rank == 2 and d == 0 and index.type.rank == 1:
        return ctx.emit("embedding", [x, index])
    if x.type.rank == 0:
        return take(ctx, x, ctx.emit("reshape", [_checked(ctx, index, 1, wrap=False)[0]], shape=()))
    idx, oob = _checked(ctx, ctx.emit("reshape", [index], shape=(index.type.numel,)), x.type.shape[d], wrap=False)
    strides = _strides(x.type.shape)
    terms = [(_placed(ctx, idx, len(shape), d), strides[d])]
    terms += [(_arange_at(ctx, shape[k], len(shape), k), strides[k]) for k in range(len(shape)) if k != d]
    return take(ctx, x, _linear(ctx, x, terms, [_placed(ctx, oob, len(shape), d)], shape))


@handles(aten.flip.default)
def flip(ctx, x: Value, dims: Sequence[int]) -> Value:
    """``x`` reversed along ``dims`` (one gather with a constant index)."""
    flipped = {_dim(d, x.type.rank) for d in dims}
    if not flipped or x.type.numel == 0:
        return x
    index = np.arange(x.type.numel, dtype=np.int64).reshape(x.type.shape)
    index = np.flip(index, tuple(flipped)).copy()
    return take(ctx, x, ctx.const(index, I64))


def _storage_order(val: torch.Tensor) -> list[int] | None:
    """The dims of ``val`` from outermost to innermost in memory when it fills its storage densely
    from offset 0 (then storage position = that permutation's row-major index), else None."""
    try:
        if val.storage_offset() != 0 or val.untyped_storage().nbytes() != val.numel() * val.element_size():
            return None
    except (RuntimeError, NotImplementedError):
        return None
    dims = [d for d in range(val.dim()) if val.shape[d] > 1]
    step = 1
    for d in sorted(dims, key=lambda d: val.stride()[d]):
        if val.stride()[d] != step:
            return None  # overlapping or with gaps
        step *= val.shape[d]
    if val.is_contiguous():
        return list(range(val.dim()))
    return sorted(range(val.dim()), key=lambda d: (-val.stride()[d] if val.shape[d] > 1 else 0, d))


@handles(aten.as_strided.default, aten.as_strided_.default, aten.as_strided_copy.default)
def _as_strided(ctx, x: Value, size: list[int], stride: list[int], offset: Any = None) -> Value:
    """The elements ``storage[offset + sum(i * stride)]`` of a tensor that fills its own storage.

    ``as_strided_`` (in place, on a fresh result: a restride) is the same read, provided nothing
    reads the operand afterwards (it would see the new strides)."""
    node = ctx.node
    if node.target is aten.as_strided_.default and len(node.args[0].users) > 1:
        raise ctx.unsupported("as_strided_ on a tensor that is read again afterwards")
    ctx.layout_sensitive = True  # the result depends on the operand's strides: the driver guards them
    order = _storage_order(node.args[0].meta["val"])
    if order is None:
        raise ctx.unsupported("as_strided of a tensor that is a view into a larger storage")
    storage = x if order == list(range(x.type.rank)) else ctx.emit("permute", [x], dims=tuple(order))
    size, stride, offset = [int(s) for s in size], [int(s) for s in stride], int(offset or 0)
    pos = np.full(size, offset, dtype=np.int64)
    for d, (n, s) in enumerate(zip(size, stride)):
        pos = pos + (np.arange(n, dtype=np.int64) * s).reshape([n if k == d else 1 for k in range(len(size))])
    if pos.size and (pos.min() < 0 or pos.max() >= x.type.numel):
        raise ctx.unsupported(f"as_strided reading outside the tensor's {x.type.numel} elements")
    if np.array_equal(pos.reshape(-1), np.arange(math.prod(size), dtype=np.int64)):
        flat = tuple(size)
        return storage if storage.type.shape == flat else ctx.emit("reshape", [storage], shape=flat)
    return take(ctx, storage, ctx.const(pos, I64))


@handles(aten.fill.Tensor)
def _fill_tensor(ctx, x: Value, value: Value) -> Value:
    shape, dt = ctx.expected()
    v = ctx.cast(value, dt)
    v = v if v.type.rank == 0 else ctx.emit("reshape", [v], shape=())
    return ctx.emit("expand", [v], shape=shape) if shape else v
