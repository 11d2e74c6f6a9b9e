"""Reduction and row-wise ops (category REDUCTION): sum, mean, amax, amin, argmax, argmin,
var, softmax, log_softmax, layer_norm, batch_norm, cumsum.

Each reduction's lowering rule sits beside its definition: a :class:`ReduceRule` says
which dims of operand 0 the kernel's inner loops run over and which Reduce stages
(:data:`minicomp.ir.kernel.REDUCE_KINDS`) compute the result; the lowering
(:mod:`minicomp.ir.lowering.reductions`) builds the loops and hands each rule a
:class:`~minicomp.ir.lowering.reductions.ReduceCtx` to append its stages with.
``batch_norm`` (inference form) is a per-channel affine map: role ELEMENTWISE, lowered
by its ``element`` rule.

``dims`` attributes are sorted tuples of distinct non-negative dims; ``()`` means
all dims. ``dim`` attributes are non-negative (the importer normalizes negative
dims). References accumulate f16/bf16 in f32 and, where PyTorch's CPU kernels
accumulate float in double (var, cumsum), in f64.
"""
from __future__ import annotations

from collections.abc import Callable
from math import prod
from dataclasses import dataclass
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.kernel import E, Expr, Var
from minicomp.ir.ops import Attr, Category, IRError, OpDef, Role, lowering_rule, register
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


Reader = Callable[[list[Expr]], Expr]


@dataclass(frozen=True)
class ReduceRule:
    """How a reduction op becomes Reduce stages of one reduction kernel.

    ``dims(in_type, attrs)``: the dims of operand 0 the inner loops run over.
    ``stages(ctx)``: appends the op's Reduce stages through ``ctx`` (a
    :class:`~minicomp.ir.lowering.reductions.ReduceCtx`) and returns the reader of its
    result: result index -> Expr (checked by the lowering to be the current outer point).
    ``full_result``: the result has every dim of the input (softmax, layer_norm, cumsum),
    not the kept ones. ``cumulative``: a scan along the single dim ``dims`` names (the
    outer loops cover the whole input, the inner loop runs over the scanned dim).
    """

    dims: Callable[[TensorType, dict[str, Any]], tuple[int, ...]]
    stages: Callable[[Any], Reader]
    full_result: bool = False
    cumulative: bool = False


def _reg(name: str, arity: int, infer, reference, attrs: dict[str, Attr], doc: str = "",
         rule: ReduceRule | None = None, **more) -> OpDef:
    return register(OpDef(name, Category.REDUCTION, arity, infer, reference, attrs, doc=doc, reduce=rule, **more))


def _loop_dims(dims: Any, rank: int) -> tuple[int, ...]:
    """An attribute naming dims (None, an int, a tuple; () or None: all) as sorted loop dims."""
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        return tuple(range(rank))
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(sorted(d % rank if rank else 0 for d in dims))


def _dims_attr(key: str) -> Callable[[TensorType, dict[str, Any]], tuple[int, ...]]:
    return lambda t, attrs: _loop_dims(attrs[key], t.rank)


def _const_reader(ref: Expr) -> Reader:
    return lambda idx: ref


def _fold_rule(kind: str) -> ReduceRule:
    """sum / amax / amin: one Reduce stage of ``kind`` in the accumulation dtype."""
    return ReduceRule(_dims_attr("dims"), lambda c: _const_reader(c.reduce(kind, c.x(c.acc), c.acc)))


def _mean_stages(c) -> Reader:
    total = c.reduce("sum", c.x(c.acc), c.acc)
    return lambda idx: E.div(total, E.const(c.n_inner, c.acc))


def _arg_rule(kind: str) -> ReduceRule:
    """argmax / argmin: the inner index of the first extreme value (NaN counting as extreme)."""
    return ReduceRule(_dims_attr("dim"), lambda c: _const_reader(c.reduce(kind, c.x(c.in_dtype.compute), DType.i64)))


def _centered(c) -> tuple[Expr, Expr]:
    """The mean of the row and x - mean at the current inner point.

    One correction pass makes the mean exact to rounding (a constant row normalizes to
    exactly 0, as in PyTorch) at the cost of one more sweep over a cached row."""
    n = E.const(c.n_inner, c.acc)
    rough = E.div(c.reduce("sum", c.x(c.acc), c.acc), n)
    mean = E.add(rough, E.div(c.reduce("sum", E.sub(c.x(c.acc), rough), c.acc), n))
    return mean, E.sub(c.x(c.acc), mean)


def _var_stages(c) -> Reader:
    _, diff = _centered(c)
    ss = c.reduce("sum", E.mul(diff, diff), c.acc)
    denom = E.const(max(c.n_inner - c.attrs["correction"], 0), c.acc)
    return lambda idx: E.div(ss, denom)


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
     "int/bool sum to i64 unless dtype is given; f16/bf16 accumulate in f32; empty sums are 0",
     _fold_rule("sum"))
def _all_dims(node, x) -> tuple[int, ...]:
    return tuple(node.attrs["dims"]) or tuple(range(x.type.rank))


def _mean_decompose(node, b):
    x = b.up(node.operands[0])
    dims = _all_dims(node, x)
    n = prod(x.type.shape[d] for d in dims)
    return b.op("div", b.op("sum", x, dims=dims, keepdim=node.attrs["keepdim"]), b.c(float(n)))


_reg("mean", 1, _infer_reduce("mean", lambda d, a: d, lambda t, dims: _need_float("mean", t)), _mean_ref,
     {"dims": Attr("ints"), "keepdim": Attr("bool", False)}, "floats only; the mean of nothing is NaN",
     ReduceRule(_dims_attr("dims"), _mean_stages), decompose=_mean_decompose)
for _name, _fn, _kind in (("amax", np.max, "max"), ("amin", np.min, "min")):
    _reg(_name, 1, _infer_reduce(_name, lambda d, a: d, _nonempty(_name)), _extreme_ref(_name, _fn),
         {"dims": Attr("ints"), "keepdim": Attr("bool", False)}, "NaN propagates; reduced dims must be non-empty",
         _fold_rule(_kind))


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
         "index (i64) of the first extreme value, NaN counting as extreme; dim None = flattened",
         _arg_rule(_name))


# -- var -----------------------------------------------------------------------------------------
def _var_ref(x, dims, correction, keepdim):
    dims = reduced_dims("var", dims, x.ndim)
    xd = x.astype(np.float64)
    n = int(np.prod([x.shape[d] for d in dims])) if dims else x.size
    with np.errstate(all="ignore"):
        mean = np.mean(xd, axis=dims, keepdims=True) if n else np.full([1] * x.ndim, np.nan)
        ss = np.sum((xd - mean) ** 2, axis=dims, keepdims=keepdim)
        return (ss / max(0.0, n - correction)).astype(x.dtype)


def _var_decompose(node, b):
    x = b.up(node.operands[0])
    dims = _all_dims(node, x)
    n = prod(x.type.shape[d] for d in dims)
    xc = b.op("sub", x, b.op("mean", x, dims=dims, keepdim=True))
    ss = b.op("sum", b.op("mul", xc, xc), dims=dims, keepdim=node.attrs["keepdim"])
    return b.op("div", ss, b.c(max(0.0, n - node.attrs["correction"])))


_reg("var", 1, _infer_reduce("var", lambda d, a: d, lambda t, dims: _need_float("var", t)), _var_ref,
     {"dims": Attr("ints"), "correction": Attr("float", 1.0), "keepdim": Attr("bool", False)},
     "sum((x - mean)^2) / max(0, N - correction)", ReduceRule(_dims_attr("dims"), _var_stages),
     decompose=_var_decompose)


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


def _softmax_dims(t: TensorType, attrs: dict[str, Any]) -> tuple[int, ...]:
    return _loop_dims(attrs["dim"], t.rank) if t.rank else ()


def _softmax_stages(c) -> Reader:
    acc = c.acc
    m = c.reduce("max", c.x(acc), acc)
    s = c.reduce("sum", E.exp(E.sub(c.x(acc), m)), acc)
    return lambda idx: E.div(E.exp(E.sub(c.x(acc, idx), m)), s)


def _log_softmax_stages(c) -> Reader:
    acc, out_dt, rank = c.acc, c.out_dtype, c.in_type.rank
    m = c.reduce("max", c.x(acc), acc)
    s = c.reduce("sum", E.exp(E.sub(c.x(acc), m)), acc)
    log_s = E.log(s)
    if out_dt in (DType.f16, DType.bf16) and rank and c.attrs["dim"] == rank - 1:
        # as PyTorch's last-dim kernel (and the interpreter): sum(exp) and its log are
        # rounded to the input dtype before x - max - log_sum is formed in f32
        log_s = E.cast(E.cast(E.log(E.cast(E.cast(s, out_dt), acc)), out_dt), acc)
    return lambda idx: E.sub(E.sub(c.x(acc, idx), m), log_s)


def _softmax_decompose(log: bool):
    """amax, sub, exp, sum and div (log_softmax: sub of the log) along dim. Kept whole by default:
    one row-wise kernel, where the decomposed form needs two reductions, so two kernels."""
    def rule(node, b):
        x = b.up(node.operands[0])
        d = node.attrs["dim"] % max(x.type.rank, 1)
        sh = b.op("sub", x, b.op("amax", x, dims=(d,), keepdim=True))
        s = b.op("sum", b.op("exp", sh), dims=(d,), keepdim=True)
        return b.op("sub", sh, b.op("log", s)) if log else b.op("div", b.op("exp", sh), s)
    return rule


_reg("softmax", 1, _infer_softmax("softmax"), _softmax_ref(False), {"dim": Attr("int")},
     "exp(x - max) / sum(exp(x - max)) along dim", ReduceRule(_softmax_dims, _softmax_stages, full_result=True),
     decompose=_softmax_decompose(False))
_reg("log_softmax", 1, _infer_softmax("log_softmax"), _softmax_ref(True), {"dim": Attr("int")},
     "x - max - log(sum(exp(x - max))) along dim; f16/bf16 on the last dim round sum(exp) and its log "
     "to the input dtype, like PyTorch's CPU kernel",
     ReduceRule(_softmax_dims, _log_softmax_stages, full_result=True), takes_dtypes=True,
     decompose=_softmax_decompose(True))


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


def _layer_norm_stages(c) -> Reader:
    acc, k = c.acc, c.attrs["normalized_ndim"]
    mean, diff = _centered(c)
    var = E.div(c.reduce("sum", E.mul(diff, diff), acc), E.const(c.n_inner, acc))
    rstd = E.div(E.const(1, acc), E.sqrt(E.add(var, E.const(c.attrs["eps"], acc))))

    def read(idx: list[Expr]) -> Expr:
        tail = list(idx[len(idx) - k:])
        y = E.mul(E.sub(c.x(acc, idx), mean), rstd)
        return E.add(E.mul(y, E.cast(c.operand(1, tail), acc)), E.cast(c.operand(2, tail), acc))
    return read


def _layer_norm_decompose(node, b):
    x, w, bias = (b.up(v) for v in node.operands)
    k = node.attrs["normalized_ndim"]
    dims = tuple(range(x.type.rank - k, x.type.rank))
    xc = b.op("sub", x, b.op("mean", x, dims=dims, keepdim=True))
    var = b.op("mean", b.op("mul", xc, xc), dims=dims, keepdim=True)
    inv = b.op("rsqrt", b.op("add", var, b.c(node.attrs["eps"])))
    return b.op("add", b.op("mul", b.op("mul", xc, inv), w), bias)


def _batch_norm_decompose(node, b):
    """Per-channel elementwise ops: decomposed by default, so a conv's epilogue can take them."""
    x, mean, var, w, bias = (b.up(v) for v in node.operands)
    shape = (1, x.type.shape[1]) + (1,) * (x.type.rank - 2)
    alpha = b.op("div", w, b.op("sqrt", b.op("add", var, b.c(node.attrs["eps"]))))
    beta = b.op("sub", bias, b.op("mul", mean, alpha))
    alpha, beta = (b.op("reshape", v, shape=shape) for v in (alpha, beta))
    return b.op("add", b.op("mul", x, alpha), beta)


_reg("layer_norm", 3, _infer_layer_norm, _layer_norm_ref,
     {"normalized_ndim": Attr("int"), "eps": Attr("float", 1e-5)},
     "(x - mean) / sqrt(biased var + eps) * weight + bias over the last normalized_ndim dims",
     ReduceRule(lambda t, a: tuple(range(t.rank - a["normalized_ndim"], t.rank)), _layer_norm_stages,
                full_result=True), decompose=_layer_norm_decompose)
_reg("batch_norm", 5, _infer_batch_norm, _batch_norm_ref, {"eps": Attr("float", 1e-5)},
     "inference batch norm over channel dim 1: x * alpha + beta",
     role=Role.ELEMENTWISE, element=lowering_rule("special", "batch_norm"),
     decompose=_batch_norm_decompose, decompose_by_default=True)


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


def _cumsum_stages(c) -> Reader:
    """A masked sum over the scanned dim: inner point j adds where j <= the outer point's index.
    A 0-d input (no scanned dim) sums over no dims: the value itself."""
    d = c.space.cumulative
    val = c.x(c.acc)
    if d is not None:
        val = E.where(E.le(Var(len(c.space.shape)), Var(d)), val, E.const(0, c.acc))
    return _const_reader(c.reduce("sum", val, c.acc))


# a scan's result has the input's shape: fusion keeps it in a kernel of its own
_reg("cumsum", 1, _infer_cumsum, _cumsum_ref, {"dim": Attr("int"), "dtype": Attr("any", None)},
     "running sum along dim; int/bool give i64 unless dtype is given",
     ReduceRule(lambda t, a: (a["dim"] % t.rank,) if t.rank else (), _cumsum_stages, full_result=True,
                cumulative=True), fuses=False)
