"""Contractions (category CONTRACTION): matmul, linear, addmm, conv2d, max_pool2d, avg_pool2d.

Operands of one contraction share a dtype (PyTorch refuses mixed dtypes here).
References accumulate f16/bf16 in f32 and f32 in f64, then round once, like a
kernel with a wide accumulator; 2-d ops take NCHW 4-d inputs (the importer adds
a batch dim to unbatched inputs).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.ops import Attr, Category, IRError, OpDef, lowering_rule, register
from minicomp.ir.types import TensorType, broadcast_shapes


def _reg(name: str, arity: int | None, infer, reference, attrs: dict[str, Attr] | None = None,
         doc: str = "", kernel: str = "matmul", **more: Any) -> OpDef:
    """Register a contraction: the root of a ``kernel`` kernel (matmul, conv, pool) whose template is
    ``<name>_template`` in :mod:`minicomp.ir.lowering.contractions`."""
    return register(OpDef(name, Category.CONTRACTION, arity, infer, reference, attrs or {}, doc=doc,
                          kernel_kind=kernel, template=lowering_rule("contractions", f"{name}_template"), **more))


def _acc(x: np.ndarray) -> np.ndarray:
    """``x`` in its accumulation type: float64 for floats, int64 for ints."""
    return x.astype(np.float64 if x.dtype.kind == "f" else np.int64)


def _same_dtype(name: str, types: list[TensorType], floats_only: bool = False) -> DType:
    d = types[0].dtype
    if any(t.dtype != d for t in types):
        raise IRError(f"op '{name}' needs operands of one dtype, got {[str(t.dtype) for t in types]}")
    if d is DType.bool or (floats_only and not d.is_float):
        raise IRError(f"op '{name}' does not accept {d} operands")
    return d


# -- matmul, linear, addmm ------------------------------------------------------------------------
def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """torch.matmul's result shape (1-d operands and batch broadcasting); raises IRError."""
    if not a or not b:
        raise IRError(f"matmul operands must have rank >= 1, got shapes {a} and {b}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise IRError(f"matmul inner dims differ: {a} @ {b}")
    try:
        batch = broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise IRError(f"matmul batch dims do not broadcast: {a} @ {b}") from None
    out = batch + (a2[-2] if len(a) > 1 else None, b2[-1] if len(b) > 1 else None)
    return tuple(s for s in out if s is not None)


def _infer_matmul(types, attrs):
    d = _same_dtype("matmul", types)
    return [TensorType(d, matmul_shape(types[0].shape, types[1].shape))]


def _matmul_ref(a, b):
    return np.matmul(_acc(a), _acc(b)).astype(a.dtype)


def _infer_linear(types, attrs):
    if len(types) not in (2, 3):
        raise IRError(f"linear takes 2 or 3 operands (x, w[, b]), got {len(types)}")
    d = _same_dtype("linear", types)
    x, w = types[0], types[1]
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise IRError(f"linear needs x[..., in] and w[out, in], got {x} and {w}")
    out = x.shape[:-1] + (w.shape[0],)
    if len(types) == 3:
        try:
            if broadcast_shapes(out, types[2].shape) != out:
                raise ValueError
        except ValueError:
            raise IRError(f"linear bias {types[2]} does not broadcast to {out}") from None
    return [TensorType(d, out)]


def _linear_ref(x, w, b=None):
    y = np.matmul(_acc(x), np.ascontiguousarray(_acc(w).T))  # one layout whatever w's: same sums
    return (y if b is None else y + _acc(b)).astype(x.dtype)


def _infer_addmm(types, attrs):
    d = _same_dtype("addmm", types)
    bias, a, b = types
    if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[0]:
        raise IRError(f"addmm needs a[m, k] and b[k, n], got {a} and {b}")
    out = (a.shape[0], b.shape[1])
    try:
        if broadcast_shapes(out, bias.shape) != out:
            raise ValueError
    except ValueError:
        raise IRError(f"addmm bias {bias} does not broadcast to {out}") from None
    return [TensorType(d, out)]


def _addmm_ref(bias, a, b, beta, alpha):
    y = alpha * np.matmul(_acc(a), _acc(b))
    if beta != 0:  # torch ignores the bias (even NaN) when beta == 0
        y = y + beta * _acc(bias)
    return np.broadcast_to(y, (a.shape[0], b.shape[1])).astype(a.dtype)


_reg("matmul", 2, _infer_matmul, _matmul_ref, doc="torch.matmul, incl. 1-d operands and batch broadcasting")
def _linear_decompose(node, b):
    x, w = node.operands[:2]
    wt = b.op("permute", w, dims=(1, 0)) if w.type.rank == 2 else w
    y = b.op("matmul", x, wt)
    return b.op("add", y, node.operands[2]) if len(node.operands) == 3 else y


def _addmm_decompose(node, b):
    bias, x, y = node.operands
    mm = b.op("matmul", x, y)
    if node.attrs["alpha"] != 1.0:
        mm = b.op("mul", mm, b.c(node.attrs["alpha"]))
    if node.attrs["beta"] == 0.0:  # torch ignores the bias (even NaN) when beta is 0
        shape = node.results[0].type.shape
        return b.op("expand", mm, shape=shape) if mm.type.shape != shape else mm
    if node.attrs["beta"] != 1.0:
        bias = b.op("mul", bias, b.c(node.attrs["beta"]))
    return b.op("add", mm, bias)


_reg("linear", None, _infer_linear, _linear_ref, doc="x @ w.T (+ b); w is [out, in]", decompose=_linear_decompose)
_reg("addmm", 3, _infer_addmm, _addmm_ref, {"beta": Attr("float", 1.0), "alpha": Attr("float", 1.0)},
     "beta * bias + alpha * (a @ b); bias ignored when beta == 0", decompose=_addmm_decompose)


# -- conv2d --------------------------------------------------------------------------------------
def _pair(name: str, key: str, value: Any, positive: bool = True) -> tuple[int, int]:
    v = tuple(value)
    if len(v) != 2 or any(not isinstance(i, (int, np.integer)) for i in v) or \
            any((i <= 0) if positive else (i < 0) for i in v):
        raise IRError(f"op '{name}': {key} must be two {'positive' if positive else 'non-negative'} ints, got {value}")
    return int(v[0]), int(v[1])


def _need4d(name: str, t: TensorType) -> None:
    if t.rank != 4:
        raise IRError(f"op '{name}' needs a 4-d NCHW input, got {t}")


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """Output length of a convolution along one dim."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _infer_conv(types, attrs):
    if len(types) not in (2, 3):
        raise IRError(f"conv2d takes 2 or 3 operands (x, w[, b]), got {len(types)}")
    d = _same_dtype("conv2d", types, floats_only=True)
    x, w = types[0], types[1]
    _need4d("conv2d", x)
    s, p, dl = (_pair("conv2d", k, attrs[k], k != "padding") for k in ("stride", "padding", "dilation"))
    g = attrs["groups"]
    if w.rank != 4 or g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise IRError(f"conv2d weight {w} does not fit input {x} with groups={g}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise IRError(f"conv2d bias must have shape ({w.shape[0]},), got {types[2].shape}")
    oh, ow = (conv_out(x.shape[2 + i], w.shape[2 + i], s[i], p[i], dl[i]) for i in range(2))
    if oh <= 0 or ow <= 0:
        raise IRError(f"conv2d input {x} is too small for kernel {w.shape[2:]} (output {oh}x{ow})")
    return [TensorType(d, (x.shape[0], w.shape[0], oh, ow))]


def _conv_ref(x, w, b=None, *, stride, padding, dilation, groups):
    """Convolution over a zero-padded input, like PyTorch's im2col + GEMM paths.

    A padded tap adds ``0 * w``, so a non-finite weight on padding gives NaN. Some
    PyTorch f32 convolutions run oneDNN direct kernels that skip padded taps instead
    (finite results); which kernel runs depends on the CPU's ISA and on shapes, so
    that case is implementation-defined and this reference does not follow it.
    """
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(wd, kw, sw, pw, dw)
    xp = np.pad(_acc(x), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    xg = xp.reshape(n, groups, cg, h + 2 * ph, wd + 2 * pw)
    wg = _acc(w).reshape(groups, cout // groups, cg, kh, kw)
    out = np.zeros((n, groups, cout // groups, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, :, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, i, j])
    out = out.reshape(n, cout, oh, ow)
    if b is not None:
        out = out + _acc(b).reshape(1, -1, 1, 1)
    return out.astype(x.dtype)


_reg("conv2d", None, _infer_conv, _conv_ref,
     {"stride": Attr("ints", (1, 1)), "padding": Attr("ints", (0, 0)), "dilation": Attr("ints", (1, 1)),
      "groups": Attr("int", 1)}, "NCHW convolution with zero padding and groups", kernel="conv")


# -- pooling --------------------------------------------------------------------------------------
def pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a pooling window along one dim (torch's pooling_output_shape)."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_params(name: str, x: TensorType, attrs: dict[str, Any]):
    _need4d(name, x)
    k = _pair(name, "kernel", attrs["kernel"])
    s = _pair(name, "stride", attrs["stride"] or k)
    p = _pair(name, "padding", attrs["padding"], positive=False)
    d = _pair(name, "dilation", attrs.get("dilation", (1, 1)))
    if any(p[i] * 2 > k[i] for i in range(2)):
        raise IRError(f"op '{name}': padding {p} must be at most half the kernel {k}")
    oh, ow = (pool_out(x.shape[2 + i], k[i], s[i], p[i], d[i], attrs["ceil_mode"]) for i in range(2))
    if oh <= 0 or ow <= 0:
        raise IRError(f"op '{name}': input {x} is too small for kernel {k} (output {oh}x{ow})")
    return k, s, p, d, oh, ow


def _infer_pool(name: str, floats_only: bool):
    def infer(types, attrs):
        (x,) = types
        _same_dtype(name, types, floats_only)
        *_, oh, ow = _pool_params(name, x, attrs)
        if name == "avg_pool2d" and attrs["divisor"] is not None and attrs["divisor"] == 0:
            raise IRError("avg_pool2d divisor must be nonzero")
        return [TensorType(x.dtype, x.shape[:2] + (oh, ow))]
    return infer


def _windows(xp: np.ndarray, k, s, d, oh, ow):
    """Yield the (N, C, oh, ow) slab of window element (i, j) for each kernel position."""
    for i in range(k[0]):
        for j in range(k[1]):
            yield i, j, xp[:, :, i * d[0]: i * d[0] + s[0] * (oh - 1) + 1: s[0],
                           j * d[1]: j * d[1] + s[1] * (ow - 1) + 1: s[1]]


def _padded(x: np.ndarray, p, extra, fill) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0] + extra[0]), (p[1], p[1] + extra[1])), constant_values=fill)


def _max_pool_ref(x, kernel, stride, padding, dilation, ceil_mode):
    t = TensorType(DType.f32, x.shape)
    k, s, p, d, oh, ow = _pool_params("max_pool2d", t, dict(kernel=kernel, stride=stride, padding=padding,
                                                             dilation=dilation, ceil_mode=ceil_mode))
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    extra = [max(0, (o - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x.shape[2 + i] - 2 * p[i]) for i, o in enumerate((oh, ow))]
    xp = _padded(x, p, extra, fill)
    out = None
    for _, _, w in _windows(xp, k, s, d, oh, ow):
        out = w.copy() if out is None else np.where(np.isnan(out) | (out >= w), out, w)
    return out.astype(x.dtype)


def _avg_pool_ref(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    t = TensorType(DType.f32, x.shape)
    k, s, p, d, oh, ow = _pool_params("avg_pool2d", t, dict(kernel=kernel, stride=stride, padding=padding,
                                                             ceil_mode=ceil_mode))
    size = x.shape[2:]
    extra = [max(0, (o - 1) * s[i] + k[i] - size[i] - 2 * p[i]) for i, o in enumerate((oh, ow))]
    xp = _padded(_acc(x), p, extra, 0.0)
    total = sum(w for _, _, w in _windows(xp, k, s, d, oh, ow))
    counts = []
    for i, o in enumerate((oh, ow)):  # torch's avg_pool2d window bookkeeping, per dim
        start = np.arange(o) * s[i] - p[i]
        end = np.minimum(start + k[i], size[i] + p[i])
        padded_len = end - start
        clipped_len = np.minimum(end, size[i]) - np.maximum(start, 0)
        counts.append(padded_len if count_include_pad else clipped_len)
    div = divisor if divisor is not None else np.outer(counts[0], counts[1])
    return (total / div).astype(x.dtype)


_reg("max_pool2d", 1, _infer_pool("max_pool2d", False), _max_pool_ref,
     {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", (0, 0)),
      "dilation": Attr("ints", (1, 1)), "ceil_mode": Attr("bool", False)},
     "NaN propagates; padding counts as -inf; stride () means kernel", kernel="pool")
_reg("avg_pool2d", 1, _infer_pool("avg_pool2d", True), _avg_pool_ref,
     {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", (0, 0)),
      "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True), "divisor": Attr("any", None)},
     "window mean; the count follows torch (divisor overrides it)", kernel="pool")
