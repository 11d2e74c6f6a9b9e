"""ATen handlers for reductions, normalizations, contractions, movement and generators.

Part of the table in :mod:`minicomp.frontend.aten_ops` (same conventions).
"""
from __future__ import annotations

from typing import Any

import torch

from minicomp.frontend.aten_ops import _dim, _dims, _pair, handles
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Value

aten = torch.ops.aten


# -- reductions ----------------------------------------------------------------------------
@handles(aten.sum.dim_IntList, aten.sum.default)
def _sum(ctx, x: Value, dims: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Value:
    out = ctx.expected()[1]  # a dtype the user gave is passed on even when it is x's (i32 stays i32)
    return ctx.emit("sum", [x], dims=_dims(dims, x.type.rank), keepdim=keepdim,
                    dtype=None if out is x.type.dtype and dtype is None else out)


@handles(aten.mean.dim, aten.mean.default)
def _mean(ctx, x: Value, dims: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Value:
    x = ctx.cast(x, ctx.expected()[1])
    return ctx.emit("mean", [x], dims=_dims(dims, x.type.rank), keepdim=keepdim)


@handles(aten.amax.default, aten.amin.default, aten.max.default, aten.min.default)
def _amax(ctx, x: Value, dims: Any = (), keepdim: bool = False) -> Value:
    op = "amax" if ctx.node.target in (aten.amax.default, aten.max.default) else "amin"
    return ctx.emit(op, [x], dims=_dims(dims, x.type.rank), keepdim=keepdim)


@handles(aten.max.dim, aten.min.dim)
def _max_dim(ctx, x: Value, dim: int, keepdim: bool = False) -> tuple[Value, Value]:
    is_max = ctx.node.target is aten.max.dim
    d = _dim(dim, x.type.rank)
    values = ctx.emit("amax" if is_max else "amin", [x], dims=(d,) if x.type.rank else (), keepdim=keepdim)
    index = ctx.emit("argmax" if is_max else "argmin", [x], dim=d if x.type.rank else None, keepdim=keepdim)
    return values, index


@handles(aten.argmax.default, aten.argmin.default)
def _argmax(ctx, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
    op = "argmax" if ctx.node.target is aten.argmax.default else "argmin"
    return ctx.emit(op, [x], dim=None if dim is None or x.type.rank == 0 else _dim(dim, x.type.rank),
                    keepdim=keepdim)


def _correction(kwargs_correction: Any, unbiased: Any) -> float:
    if kwargs_correction is not None:
        return float(kwargs_correction)
    return 1.0 if unbiased in (None, True) else 0.0


@handles(aten.var.correction, aten.var.dim, aten.var.default, aten.std.correction, aten.std.dim,
         aten.std.default, aten.var_mean.correction, aten.var_mean.dim)
def _var(ctx, x: Value, dims: Any = None, unbiased: Any = None, keepdim: bool = False, *,
         correction: Any = None) -> Any:
    if isinstance(dims, bool):  # var.default(x, unbiased)
        dims, unbiased = None, dims
    name = ctx.node.target.__name__.split(".")[0]
    d = _dims(dims, x.type.rank)
    var = ctx.emit("var", [x], dims=d, correction=_correction(correction, unbiased), keepdim=keepdim)
    if name == "std":
        return ctx.emit("sqrt", [var])
    if name == "var_mean":
        return var, ctx.emit("mean", [x], dims=d, keepdim=keepdim)
    return var


@handles(aten._softmax.default, aten._log_softmax.default, aten.softmax.int, aten.log_softmax.int)
def _softmax(ctx, x: Value, dim: int, half_to_float: Any = False) -> Value:
    op = "log_softmax" if "log_softmax" in ctx.node.target.__name__ else "softmax"
    x = ctx.cast(x, ctx.expected()[1])
    return ctx.emit(op, [x], dim=_dim(dim, x.type.rank))


def _ones_if_none(ctx, v: Value | None, shape: tuple[int, ...], dtype: DType, fill: float) -> Value:
    if v is not None:
        return v
    return ctx.emit("full", [], shape=tuple(shape), value=fill, dtype=dtype)


@handles(aten.native_layer_norm.default, aten.layer_norm.default)
def _layer_norm(ctx, x: Value, normalized_shape: list[int], weight: Any = None, bias: Any = None,
                eps: float = 1e-5, *_: Any) -> Any:
    shape = tuple(normalized_shape)
    weight = _ones_if_none(ctx, weight, shape, x.type.dtype, 1.0)
    bias = _ones_if_none(ctx, bias, shape, x.type.dtype, 0.0)
    out = ctx.emit("layer_norm", [x, weight, bias], normalized_ndim=len(shape), eps=float(eps))
    return out if ctx.node.target is aten.layer_norm.default else (out, None, None)


@handles(aten.native_batch_norm.default, aten._native_batch_norm_legit.default,
         aten._native_batch_norm_legit_no_training.default)
def _batch_norm(ctx, x: Value, weight: Any, bias: Any, mean: Any, var: Any, *rest: Any) -> Any:
    training = False if ctx.node.target is aten._native_batch_norm_legit_no_training.default else rest[0]
    if training or mean is None or var is None:
        raise ctx.unsupported("training-mode batch norm (no running statistics); call model.eval()")
    eps = rest[-1]
    channels = (x.type.shape[1],)
    weight = _ones_if_none(ctx, weight, channels, mean.type.dtype, 1.0)
    bias = _ones_if_none(ctx, bias, channels, mean.type.dtype, 0.0)
    return ctx.emit("batch_norm", [x, mean, var, weight, bias], eps=float(eps)), None, None


@handles(aten.cumsum.default)
def _cumsum(ctx, x: Value, dim: int, *, dtype: Any = None) -> Value:
    out = ctx.expected()[1]  # a dtype the user gave is passed on even when it is x's (i32 stays i32)
    return ctx.emit("cumsum", [x], dim=_dim(dim, x.type.rank),
                    dtype=None if out is x.type.dtype and dtype is None else out)


# -- contractions --------------------------------------------------------------------------
def _transposed_weight(ctx, v: Value) -> Value | None:
    """``w`` when ``v`` is ``permute(w, (1, 0))`` of a 2-d weight (a Linear's ``t(weight)``): a constant or
    a graph input holding a weight (``ctx.is_weight``: weights are inputs unless ``freeze=True``)."""
    p = v.producer
    if p is None or p.op != "permute" or tuple(p.attrs["dims"]) != (1, 0):
        return None
    w = p.operands[0]
    return w if ctx.is_weight(w) else None


@handles(aten.mm.default, aten.bmm.default, aten.matmul.default, aten.mv.default, aten.dot.default)
def _matmul(ctx, a: Value, b: Value) -> Value:
    w = _transposed_weight(ctx, b) if ctx.node.target is aten.mm.default else None
    if w is not None:
        return ctx.emit("linear", [a, w])
    return ctx.emit("matmul", [a, b])


@handles(aten.addmm.default)
def _addmm(ctx, bias: Value, a: Value, b: Value, *, beta: Any = 1, alpha: Any = 1) -> Value:
    w = _transposed_weight(ctx, b)
    if w is not None and beta == 1 and alpha == 1 and bias.type.shape == (w.type.shape[0],):
        return ctx.emit("linear", [a, w, bias])
    return ctx.emit("addmm", [bias, a, b], beta=float(beta), alpha=float(alpha))


@handles(aten.linear.default)
def _linear(ctx, x: Value, w: Value, b: Value | None = None) -> Value:
    return ctx.emit("linear", [x, w] if b is None else [x, w, b])


def _pool(ctx, op: str, x: Value, **attrs: Any) -> Value:
    """Pool a 4-d NCHW tensor, or a 3-d CHW one through a leading batch of one."""
    if x.type.rank == 3:
        y = ctx.emit(op, [ctx.emit("reshape", [x], shape=(1, *x.type.shape))], **attrs)
        return ctx.emit("reshape", [y], shape=y.type.shape[1:])
    return ctx.emit(op, [x], **attrs)


@handles(aten.max_pool2d_with_indices.default)
def _max_pool(ctx, x: Value, kernel: list[int], stride: Any = (), padding: Any = 0, dilation: Any = 1,
              ceil_mode: bool = False) -> tuple[Value, None]:
    kernel = _pair(kernel)
    stride = _pair(stride) if stride else kernel
    out = _pool(ctx, "max_pool2d", x, kernel=kernel, stride=stride, padding=_pair(padding),
                dilation=_pair(dilation), ceil_mode=bool(ceil_mode))
    return out, None


@handles(aten.avg_pool2d.default)
def _avg_pool(ctx, x: Value, kernel: list[int], stride: Any = (), padding: Any = 0, ceil_mode: bool = False,
              count_include_pad: bool = True, divisor_override: Any = None) -> Value:
    kernel = _pair(kernel)
    return _pool(ctx, "avg_pool2d", x, kernel=kernel, stride=_pair(stride) if stride else kernel,
                 padding=_pair(padding), ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                 divisor=divisor_override)


@handles(aten._adaptive_avg_pool2d.default)
def _adaptive_avg_pool(ctx, x: Value, output_size: list[int]) -> Value:
    h, w = x.type.shape[-2:]
    oh, ow = _pair(output_size)
    if (oh, ow) == (1, 1):
        return ctx.emit("mean", [x], dims=(x.type.rank - 2, x.type.rank - 1), keepdim=True)
    if oh and ow and h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return _pool(ctx, "avg_pool2d", x, kernel=k, stride=k)
    raise ctx.unsupported(f"adaptive pooling from {h}x{w} to {oh}x{ow} (sizes must divide)")


# -- movement ------------------------------------------------------------------------------
@handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.view_copy.default,
         aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default,
         aten.flatten.using_ints, aten.unflatten.int, aten._reshape_alias.default,
         # matmul's decomposition squeezes its own fresh result in place
         aten.squeeze_.dim, aten.squeeze_.dims, aten.squeeze_.default, aten.unsqueeze_.default)
def _reshape(ctx, x: Value, *_: Any, **__: Any) -> Value:
    shape = ctx.expected()[0]
    return x if shape == x.type.shape else ctx.emit("reshape", [x], shape=shape)


@handles(aten.permute.default, aten.t.default, aten.transpose.int, aten.numpy_T.default)
def _permute(ctx, x: Value, *args: Any) -> Value:
    rank = x.type.rank
    target = ctx.node.target
    if target is aten.permute.default:
        dims = [_dim(d, rank) for d in args[0]]
    else:
        dims = list(range(rank))
        if target is aten.transpose.int:
            i, j = _dim(args[0], rank), _dim(args[1], rank)
            if rank:  # a 0-d tensor takes dims 0 and -1 and is its own transpose
                dims[i], dims[j] = dims[j], dims[i]
        else:
            dims.reverse()
    if dims == list(range(rank)):
        return x
    return ctx.emit("permute", [x], dims=tuple(dims))


@handles(aten.expand.default)
def _expand(ctx, x: Value, *_: Any, **__: Any) -> Value:
    shape = ctx.expected()[0]
    return x if shape == x.type.shape else ctx.emit("expand", [x], shape=shape)


def _slice(ctx, x: Value, dim: int, start: Any, end: Any, step: int = 1) -> Value:
    d = _dim(dim, x.type.rank)
    n = x.type.shape[d]
    lo = 0 if start is None else (start + n if start < 0 else start)
    hi = n if end is None else (end + n if end < 0 else end)
    lo, hi = min(max(lo, 0), n), min(max(hi, 0), n)
    hi = max(hi, lo)
    if (lo, hi, step) == (0, n, 1):
        return x
    return ctx.emit("slice", [x], dim=d, start=lo, end=hi, step=int(step))


@handles(aten.slice.Tensor)
def _slice_tensor(ctx, x: Value, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Value:
    return _slice(ctx, x, dim, start, end, step)


@handles(aten.select.int)
def _select(ctx, x: Value, dim: int, index: int) -> Value:
    d = _dim(dim, x.type.rank)
    i = index + x.type.shape[d] if index < 0 else index
    return ctx.emit("reshape", [_slice(ctx, x, d, i, i + 1)], shape=ctx.expected()[0])


@handles(aten.cat.default)
def _cat(ctx, tensors: list[Value], dim: int = 0) -> Value:
    shape, dt = ctx.expected()
    # torch skips legacy empty 1-d tensors in cat; so do we
    parts = [ctx.cast(t, dt) for t in tensors if not (t.type.shape == (0,) and len(shape) != 1)]
    if len(parts) == 1:
        return parts[0]
    return ctx.emit("cat", parts, dim=_dim(dim, len(shape)))


@handles(aten.stack.default)
def _stack(ctx, tensors: list[Value], dim: int = 0) -> Value:
    shape, dt = ctx.expected()
    d = _dim(dim, len(shape))
    parts = [ctx.emit("reshape", [ctx.cast(t, dt)], shape=t.type.shape[:d] + (1,) + t.type.shape[d:])
             for t in tensors]
    return parts[0] if len(parts) == 1 else ctx.emit("cat", parts, dim=d)


def _split(ctx, x: Value, sizes: list[int], dim: int) -> list[Value]:
    return ctx.emit_multi("split", [x], {"dim": _dim(dim, x.type.rank), "sizes": tuple(sizes)}, count=len(sizes))


@handles(aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int)
def _split_tensor(ctx, x: Value, split: Any = 0, dim: int = 0) -> list[Value]:
    target = ctx.node.target
    if target is aten.unbind.int:
        d = _dim(split, x.type.rank)
        parts = _split(ctx, x, [1] * x.type.shape[d], d)
        return [ctx.emit("reshape", [p], shape=ctx.expected(i)[0]) for i, p in enumerate(parts)]
    n = x.type.shape[_dim(dim, x.type.rank)]
    if target is aten.split.Tensor:
        sizes = [min(split, n - s) for s in range(0, n, split)] if split else [n]
        sizes = sizes or [0]
    else:
        sizes = list(split)
    if len(sizes) == 1:
        return [x]
    return _split(ctx, x, sizes, dim)


@handles(aten.embedding.default)
def _embedding(ctx, weight: Value, ids: Value, *_: Any) -> Value:
    return ctx.emit("embedding", [weight, ids])


@handles(aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default)
def _upsample_nearest(ctx, x: Value, output_size: Any, *scales: Any) -> Value:
    shape = ctx.expected()[0]
    flat = [s for s in scales if s is not None]
    flat = [v for s in flat for v in (s if isinstance(s, (list, tuple)) else [s])]
    if flat and any(o != i * s for o, i, s in zip(shape[-2:], x.type.shape[-2:], flat)):
        raise ctx.unsupported("nearest upsampling with a scale that is not out/in")
    return ctx.emit("upsample_nearest2d", [x], size=tuple(shape[-2:]))


@handles(aten.constant_pad_nd.default)
def _pad(ctx, x: Value, pad: list[int], value: Any = 0) -> Value:
    for k in range(len(pad) // 2):
        d = x.type.rank - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        x = _slice(ctx, x, d, max(-lo, 0), x.type.shape[d] - max(-hi, 0))
        parts = []
        for amount in (lo, hi):
            shape = list(x.type.shape)
            shape[d] = amount
            parts.append(ctx.emit("full", [], shape=tuple(shape), value=float(value), dtype=x.type.dtype)
                         if amount > 0 else None)
        pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
        if len(pieces) > 1:
            x = ctx.emit("cat", pieces, dim=d)
    return x


# -- generators ----------------------------------------------------------------------------
@handles(aten.full.default, aten.zeros.default, aten.ones.default, aten.scalar_tensor.default,
         aten.full_like.default, aten.zeros_like.default, aten.ones_like.default, aten.new_zeros.default,
         aten.new_ones.default, aten.new_full.default, aten.fill.Scalar, aten.empty.memory_format,
         aten.empty_like.default, aten.new_empty.default)
def _full(ctx, *args: Any, **_: Any) -> Value:
    name = ctx.node.target.__name__.split(".")[0]
    if name in ("zeros", "zeros_like", "new_zeros") or "empty" in name:
        value = 0.0
    elif name in ("ones", "ones_like", "new_ones"):
        value = 1.0
    elif name == "scalar_tensor":
        value = args[0]
    else:  # full(size, v), full_like(x, v), new_full(x, size, v), fill(x, v)
        value = args[2] if name == "new_full" else args[1]
    if isinstance(value, Value):
        raise ctx.unsupported("a fill value computed from a tensor")
    shape, dt = ctx.expected()
    return ctx.emit("full", [], shape=shape, value=float(value), dtype=dt)


@handles(aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(ctx, *args: Any, **_: Any) -> Value:
    nums = [a for a in args if isinstance(a, (int, float))]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) > 2 else 1)
    return ctx.emit("arange", [], start=float(start), end=float(end), step=float(step), dtype=ctx.expected()[1])
