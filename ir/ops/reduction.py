"""Reduction and row-wise ops (category REDUCTION): sum, mean, amax, amin, argmax, argmin,
var, softmax, log_softmax, layer_norm, batch_norm, cumsum.

``dims`` attributes are sorted tuples of distinct non-negative dims; ``()`` means
all dims. ``dim`` attributes are non-negative (the importer normalizes negative
dims). References accumulate f16/bf16 in f32 and, where PyTorch's CPU kernels
accumulate float in double (var, cumsum), in f64.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.ops import Attr, Category, IRError, OpDef, register
from minicomp.ir.ops.dtype_util import as_dtype, dtype_of
from minicomp.ir.types import TensorType


def reduced_dims(name: str, dims: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Validate a ``dims`` attribute and resolve ``()`` to all dims."""
    dims = tuple(dims)
    if rank == 0 and set(dims) <= {0}:
        return ()
    if any(not 0 <= d < rank for d in dims) or list(dims) != sorted(set(dims)):
        raise IRError(f"op '{name}': dims {dims} must be sorted, distinct and in [0, {rank}) "
                      "(normalize negative dims in the importer)")
    return dims or tuple(range(rank))


def _check_dim(name: str, dim: int, rank: int) -> int:
    if not (0 <= dim < max(rank, 1)):
        raise IRError(f"op '{name}': dim {dim} out of range for rank {rank} (expected 0 <= dim < {max(rank, 1)})")
    return dim


def _reduced_shape(shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    return tuple(1 if i in dims else s for i, s in enumerate(shape) if keepdim or i not in dims)


def _need_float(name: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise IRError(f"op '{name}' needs a floating-point operand, got {t.dtype}")


def _reg(name: str, arity: int, infer, reference, attrs: dict[str, Attr], doc: str = "") -> OpDef:
    return register(OpDef(name, Category.REDUCTION, arity, infer, reference, attrs, doc=doc))


def _np_axes(dims: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return dims if ndim else ()


# -- sum, mean, amax, amin -------------------------------------------------------------------------
def _sum_dtype(d: DType, attrs: dict[str, Any]) -> DType:
    target = as_dtype(attrs.get("dtype"))
    if target is not None:
        return target
    return DType.i64 if not d.is_float else d


def _infer_reduce(name: str, out_dtype, check=None):
    def infer(types, attrs):
        (t,) = types
        dims = reduced_dims(name, attrs["dims"], t.rank)
        if check is not None:
            check(t, dims)
        return [TensorType(out_dtype(t.dtype, attrs), _reduced_shape(t.shape, dims, attrs["keepdim"]))]
    return infer


def _sum_ref(x, dims, keepdim, dtype=None):
    out = _sum_dtype(dtype_of(x), {"dtype": dtype})
    dims = reduced_dims("sum", dims, x.ndim)
    # order="C": numpy's pairwise summation order follows the memory layout, so a strided view (an
    # upsample's or expand's result) and the same values folded into a contiguous constant must sum alike
    return round_to_dtype(np.sum(x.astype(out.compute.np, order="C"), axis=dims, keepdims=keepdim), out)


def _mean_ref(x, dims, keepdim):
    dims = reduced_dims("mean", dims, x.ndim)
    with np.errstate(all="ignore"):
        return np.mean(x.astype(np.float64 if x.dtype == np.float64 else np.float32, order="C"), axis=dims,
                       keepdims=keepdim).astype(x.dtype)


def _nonempty(name: str):
    def check(t: TensorType, dims: tuple[int, ...]) -> None:
        if any(t.shape[d] == 0 for d in dims) or (not dims and t.numel == 0):
            raise IRError(f"op '{name}' cannot reduce an empty dim (shape {t.shape}, dims {dims})")
    return check


def _extreme_ref(name: str, fn):
    def reference(x, dims, keepdim):
        dims = reduced_dims(name, dims, x.ndim)
        return fn(x, axis=dims, keepdims=keepdim)
    return reference


_reg("sum", 1, _infer_reduce("sum", _sum_dtype), _sum_ref,
     {"dims": Attr("ints"), "keepdim": Attr("bool", False), "dtype": Attr("any", None)},
     "int/bool sum to i64 unless dtype is given; f16/bf16 accumulate in f32; empty sums are 0")
_reg("mean", 1, _infer_reduce("mean", lambda d, a: d, lambda t, dims: _need_float("mean", t)), _mean_ref,
     {"dims": Attr("ints"), "keepdim": Attr("bool", False)}, "floats only; the mean of nothing is NaN")
for _name, _fn in (("amax", np.max), ("amin", np.min)):
    _reg(_name, 1, _infer_reduce(_name, lambda d, a: d, _nonempty(_name)), _extreme_ref(_name, _fn),
         {"dims": Attr("ints"), "keepdim": Attr("bool", False)}, "NaN propagates; reduced dims must be non-empty")


# -- argmax, argmin ------------------------------------------------------------------------------
def _infer_arg(name: str):
    def infer(types, attrs):
        (t,) = types
        if t.dtype is DType.bool:
            raise IRError(f"op '{name}' does not accept bool operands")
        dim, keepdim = attrs["dim"], attrs["keepdim"]
        if dim is None:
            if t.numel == 0:
                raise IRError(f"op '{name}' of an empty tensor (shape {t.shape})")
            return [TensorType(DType.i64, (1,) * t.rank if keepdim else ())]
        _check_dim(name, dim, t.rank)
        if t.rank and t.shape[dim] == 0:
            raise IRError(f"op '{name}' cannot reduce empty dim {dim} of shape {t.shape}")
        dims = (dim,) if t.rank else ()
        return [TensorType(DType.i64, _reduced_shape(t.shape, dims, keepdim))]
    return infer


def _arg_ref(fn):
    def reference(x, dim, keepdim):
        if dim is None or x.ndim == 0:
            idx = np.asarray(fn(x.reshape(-1)) if x.size else 0, dtype=np.int64)
            return idx.reshape((1,) * x.ndim) if keepdim else idx
        return fn(x, axis=dim, keepdims=keepdim).astype(np.int64)
    return reference


for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    _reg(_name, 1, _infer_arg(_name), _arg_ref(_fn), {"dim": Attr("any", None), "keepdim": Attr("bool", False)},
         "index (i64) of the first extreme value, NaN counting as extreme; dim None = flattened")


# -- var -----------------------------------------------------------------------------------------
def _var_ref(x, dims, correction, keepdim):
    dims = reduced_dims("var", dims, x.ndim)
    xd = x.astype(np.float64)
    n = int(np.prod([x.shape[d] for d in dims])) if dims else x.size
    with np.errstate(all="ignore"):
        mean = np.mean(xd, axis=dims, keepdims=True) if n else np.full([1] * x.ndim, np.nan)
        ss = np.sum((xd - mean) ** 2, axis=dims, keepdims=keepdim)
        return (ss / max(0.0, n - correction)).astype(x.dtype)


_reg("var", 1, _infer_reduce("var", lambda d, a: d, lambda t, dims: _need_float("var", t)), _var_ref,
     {"dims": Attr("ints"), "correction": Attr("float", 1.0), "keepdim": Attr("bool", False)},
     "sum((x - mean)^2) / max(0, N - correction)")


# -- softmax, log_softmax ---------------------------------------------------------------------------
def _infer_softmax(name: str):
    def infer(types, attrs):
        (t,) = types
        _need_float(name, t)
        _check_dim(name, attrs["dim"], t.rank)
        return [t.with_order(None)]
    return infer


def _softmax_ref(log: bool):
    def reference(x, dim, in_dtypes=()):
        if x.size == 0:
            return x.copy()
        xc = x.astype(np.float64)
        axis = dim if x.ndim else None
        with np.errstate(all="ignore"):
            shifted = xc - np.max(xc, axis=axis, keepdims=True)
            total = np.sum(np.exp(shifted), axis=axis, keepdims=True)
            if not log:
                return (np.exp(shifted) / total).astype(x.dtype)
            d = in_dtypes[0] if in_dtypes else dtype_of(x)
            if d in (DType.bf16, DType.f16) and x.ndim and dim == x.ndim - 1:
                # PyTorch's CPU last-dim kernel stores sum(exp) and its log in the input
                # dtype (rounding each) and forms x - max - log_sum in f32
                total = round_to_dtype(total.astype(np.float32), d).astype(np.float64)
                return shifted - round_to_dtype(np.log(total).astype(np.float32), d)
            return (shifted - np.log(total)).astype(x.dtype)
    return reference


_reg("softmax", 1, _infer_softmax("softmax"), _softmax_ref(False), {"dim": Attr("int")},
     "exp(x - max) / sum(exp(x - max)) along dim")
register(OpDef("log_softmax", Category.REDUCTION, 1, _infer_softmax("log_softmax"), _softmax_ref(True),
               {"dim": Attr("int")}, doc="x - max - log(sum(exp(x - max))) along dim; f16/bf16 on the last "
               "dim round sum(exp) and its log to the input dtype, like PyTorch's CPU kernel",
               takes_dtypes=True))


# -- layer_norm, batch_norm ------------------------------------------------------------------------
def _infer_layer_norm(types, attrs):
    x, w, b = types
    n = attrs["normalized_ndim"]
    _need_float("layer_norm", x)
    if not 1 <= n <= x.rank:
        raise IRError(f"layer_norm normalized_ndim {n} must be in [1, {x.rank}] for input {x}")
    for what, t in (("weight", w), ("bias", b)):
        _need_float("layer_norm", t)
        if t.shape != x.shape[x.rank - n:]:
            raise IRError(f"layer_norm {what} shape {t.shape} must equal the normalized shape {x.shape[x.rank - n:]}")
    return [x.with_order(None)]


def _layer_norm_ref(x, w, b, normalized_ndim, eps):
    # the exact formula in f64, rounded once; torch's CPU kernels differ from it in the last bits
    # (they use FMA for f16/bf16 but not for f32), so tests compare with torch run in f64
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    xd = x.astype(np.float64)
    with np.errstate(all="ignore"):
        mean = np.mean(xd, axis=axes, keepdims=True)
        var = np.mean((xd - mean) ** 2, axis=axes, keepdims=True)
        y = (xd - mean) / np.sqrt(var + eps) * w.astype(np.float64) + b.astype(np.float64)
    return y.astype(x.dtype)


def _infer_batch_norm(types, attrs):
    x = types[0]
    _need_float("batch_norm", x)
    if x.rank < 2:
        raise IRError(f"batch_norm needs an input of rank >= 2 (N, C, ...), got {x}")
    for what, t in zip(("mean", "var", "weight", "bias"), types[1:]):
        _need_float("batch_norm", t)
        if t.shape != (x.shape[1],):
            raise IRError(f"batch_norm {what} must have shape ({x.shape[1]},), got {t.shape}")
    return [x]


def _batch_norm_ref(x, mean, var, weight, bias, eps):
    # torch's inference formula y = x * alpha + beta (alpha = weight / sqrt(var + eps),
    # beta = bias - mean * alpha), in f64 and rounded once
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var, weight, bias = (a.astype(np.float64) for a in (mean, var, weight, bias))
    with np.errstate(all="ignore"):
        alpha = weight / np.sqrt(var + eps)
        beta = bias - mean * alpha
        return (x.astype(np.float64) * alpha.reshape(shape) + beta.reshape(shape)).astype(x.dtype)


_reg("layer_norm", 3, _infer_layer_norm, _layer_norm_ref,
     {"normalized_ndim": Attr("int"), "eps": Attr("float", 1e-5)},
     "(x - mean) / sqrt(biased var + eps) * weight + bias over the last normalized_ndim dims")
_reg("batch_norm", 5, _infer_batch_norm, _batch_norm_ref, {"eps": Attr("float", 1e-5)},
     "inference batch norm over channel dim 1: x * alpha + beta")


# -- cumsum -----------------------------------------------------------------------------------------
def _infer_cumsum(types, attrs):
    (t,) = types
    _check_dim("cumsum", attrs["dim"], t.rank)
    return [TensorType(_sum_dtype(t.dtype, attrs), t.shape)]


def _cumsum_ref(x, dim, dtype=None):
    out = _sum_dtype(dtype_of(x), {"dtype": dtype})
    acc = np.float64 if out.is_float else out.np
    if x.ndim == 0:
        return round_to_dtype(x.astype(acc), out)
    return round_to_dtype(np.cumsum(x.astype(out.compute.np).astype(acc), axis=dim), out)


_reg("cumsum", 1, _infer_cumsum, _cumsum_ref, {"dim": Attr("int"), "dtype": Attr("any", None)},
     "running sum along dim; int/bool give i64 unless dtype is given")
