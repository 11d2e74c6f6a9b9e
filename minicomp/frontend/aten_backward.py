"""Training ops as ops minicomp compiles: decompositions applied while AOTAutograd traces.

A training step's joint graph holds the backward ATen ops (``convolution_backward``,
``max_pool2d_with_indices_backward``, ``embedding_dense_backward``, ``nll_loss_backward``,
...) and forward ops whose extra results only the backward reads (the mean and
reciprocal standard deviation of ``native_layer_norm``, the indices of
``max_pool2d_with_indices``). :func:`decompositions` is the table
:mod:`minicomp.training` hands to AOTAutograd: torch's own decompositions where they
decompose into ops minicomp imports (``threshold_backward``, ``gelu_backward``,
``_softmax_backward_data``, batch norm in training mode, ...), and the functions below
for the rest, written with ops the importer maps (convolutions, strided slices, pads,
one-hot comparisons, matmuls; no ``gather``/``scatter``/``index_put``, which minicomp
has no op for). Each is checked against eager's backward op in tests/test_training.py.

The forward keeps its fused ops: ``native_layer_norm`` stays one ``layer_norm`` and only
adds the two small row reductions the backward needs; max pooling stays ``max_pool2d`` and
its backward recomputes which element of each window was the maximum from the input.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch._decomp import get_decompositions

aten = torch.ops.aten

#: Backward (and training-forward) ops whose torch decompositions lower to ops minicomp has.
_TORCH_DECOMPOSED = [
    aten.threshold_backward, aten.gelu_backward, aten.silu_backward, aten.sigmoid_backward,
    aten.tanh_backward, aten._softmax_backward_data, aten._log_softmax_backward_data,
    aten.native_layer_norm_backward, aten.native_batch_norm_backward, aten._native_batch_norm_legit_functional,
    aten._native_batch_norm_legit, aten.native_batch_norm, aten._batch_norm_with_update_functional,
    aten._batch_norm_with_update, aten.mse_loss, aten.mse_loss_backward, aten.hardtanh_backward,
    aten.leaky_relu_backward, aten.elu_backward, aten.softplus_backward, aten.hardswish_backward,
    aten.hardsigmoid_backward, aten.native_dropout_backward, aten.smooth_l1_loss_backward,
    aten.huber_loss_backward, aten.binary_cross_entropy, aten.binary_cross_entropy_backward,
]

_state = threading.local()


def decompositions() -> dict[Any, Callable[..., Any]]:
    """The decomposition table for training graphs (a fresh dict per call)."""
    table = get_decompositions(_TORCH_DECOMPOSED)
    table.update({
        aten.native_layer_norm.default: native_layer_norm,
        aten.convolution_backward.default: convolution_backward,
        aten.max_pool2d_with_indices_backward.default: max_pool2d_with_indices_backward,
        aten.avg_pool2d_backward.default: avg_pool2d_backward,
        aten.embedding_dense_backward.default: embedding_dense_backward,
        aten.nll_loss_forward.default: nll_loss_forward,
        aten.nll_loss_backward.default: nll_loss_backward,
        aten.native_dropout.default: native_dropout,
        aten.select_backward.default: select_backward,
        aten.lerp.Scalar: lerp, aten.lerp.Tensor: lerp,
        torch.ops.prims.fma.default: fma,
        aten.slice_backward.default: slice_backward,
    })
    return table


def native_layer_norm(x: torch.Tensor, normalized_shape: list[int], weight: Any, bias: Any,
                      eps: float) -> Any:
    """The fused layer norm for the output, plus mean and 1/std as row reductions of ``x``."""
    if getattr(_state, "layer_norm", False):  # the inner call: trace the op itself
        return NotImplemented
    _state.layer_norm = True
    try:
        out = aten.native_layer_norm.default(x, normalized_shape, weight, bias, eps)[0]
    finally:
        _state.layer_norm = False
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    acc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    var, mean = torch.var_mean(acc, dims, correction=0, keepdim=True)
    return out, mean, torch.rsqrt(var + eps)


def native_dropout(x: torch.Tensor, p: float, train: Any) -> Any:
    """Dropout as ``x * (u < 1 - p) / (1 - p)`` with ``u`` uniform from ``aten.rand`` of a static shape, which
    :class:`minicomp.training.GraphCompiler` draws with torch's generator before each call (the same
    distribution as eager's dropout, not the same numbers); the masking is compiled."""
    if not train or p == 0:
        return x.clone(), torch.ones_like(x, dtype=torch.bool)
    if p >= 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    keep = torch.rand(list(x.shape), dtype=torch.float32, device=x.device) < (1 - p)
    return x * keep * (1.0 / (1 - p)), keep


def lerp(a: torch.Tensor, b: torch.Tensor, w: Any) -> torch.Tensor:
    """``a + w * (b - a)``, from the nearer end as eager's kernel computes it (torch's decomposition emits
    ``prims.fma``, which minicomp does not import); an optimizer's moving averages use it."""
    d = b - a
    near_a = torch.abs(w) < 0.5 if isinstance(w, torch.Tensor) else abs(w) < 0.5
    if isinstance(near_a, bool):
        return a + w * d if near_a else b - d * (1 - w)
    return torch.where(near_a, a + w * d, b - d * (1 - w))


def fma(a: Any, b: Any, c: Any) -> torch.Tensor:
    """``a * b + c`` (two roundings, not one): torch's decomposition of an in-place ``addcmul_`` (an optimizer's
    second moment) emits ``prims.fma``, which minicomp does not import."""
    return a * b + c


# -- convolution ------------------------------------------------------------------------------
def _flip_spatial(w: torch.Tensor) -> torch.Tensor:
    """``w`` reversed along its two last dims (one row gather of the flattened kernel)."""
    co, ci, kh, kw = w.shape
    rows = w.reshape(co * ci, kh * kw).t()
    rev = torch.arange(kh * kw - 1, -1, -1, device=w.device)
    return aten.index_select.default(rows, 0, rev).t().reshape(co, ci, kh, kw)


def _dilate(g: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """``g`` (N, C, H, W) with ``s - 1`` zeros after each row/column: (N, C, H*sh, W*sw)."""
    if sh == 1 and sw == 1:
        return g
    n, c, h, w = g.shape
    g = aten.constant_pad_nd.default(g.reshape(n, c, h, 1, w, 1), [0, sw - 1, 0, 0, 0, sh - 1], 0.0)
    return g.reshape(n, c, h * sh, w * sw)


def _conv_grad_input(grad: torch.Tensor, x_shape: Any, w: torch.Tensor, stride, padding, dilation,
                     groups: int) -> torch.Tensor:
    """Gradient w.r.t. the input: a stride-1 convolution of the dilated, padded gradient with the
    flipped kernel whose in/out channels are swapped per group."""
    _, _, h, wd = x_shape
    co, cig, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    g = _dilate(grad, sh, sw)
    lo_h, lo_w = (kh - 1) * dh - ph, (kw - 1) * dw - pw
    hi_h = h + (kh - 1) * dh - lo_h - g.shape[2]
    hi_w = wd + (kw - 1) * dw - lo_w - g.shape[3]
    g = aten.constant_pad_nd.default(g, [lo_w, hi_w, lo_h, hi_h], 0.0)
    wt = _flip_spatial(w).reshape(groups, co // groups, cig, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * cig, co // groups, kh, kw)
    return aten.convolution.default(g, wt, None, [1, 1], [0, 0], [dh, dw], False, [0, 0], groups)


def _conv_grad_weight(grad: torch.Tensor, x: torch.Tensor, w_shape: Any, stride, padding, dilation,
                      groups: int) -> torch.Tensor:
    """Gradient w.r.t. the weight: a convolution of the input (batch as channels) with the gradient
    as kernel, stride and dilation swapped, cropped to the kernel size."""
    n, ci, h, wd = x.shape
    co, cig, kh, kw = w_shape
    oh, ow = grad.shape[2:]
    xs = x.reshape(n, groups, cig, h, wd).permute(2, 1, 0, 3, 4).reshape(cig, groups * n, h, wd)
    gs = grad.reshape(n, groups, co // groups, oh, ow).permute(1, 2, 0, 3, 4).reshape(co, n, oh, ow)
    r = aten.convolution.default(xs, gs, None, list(dilation), list(padding), list(stride), False, [0, 0], groups)
    return r[:, :, :kh, :kw].transpose(0, 1)


def convolution_backward(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias_sizes: Any,
                         stride: list[int], padding: list[int], dilation: list[int], transposed: bool,
                         output_padding: list[int], groups: int, output_mask: list[bool]) -> Any:
    """``aten.convolution_backward`` of a 2-d convolution as convolutions (transposed ones: not here)."""
    if transposed or x.dim() != 4 or len(stride) != 2:
        return NotImplemented
    pair = (list(stride), list(padding), list(dilation))
    gi = _conv_grad_input(grad, x.shape, w, *pair, groups) if output_mask[0] else None
    gw = _conv_grad_weight(grad, x, w.shape, *pair, groups) if output_mask[1] else None
    gb = grad.sum([0, 2, 3]) if output_mask[2] else None
    return gi, gw, gb


# -- views -----------------------------------------------------------------------------------
def _pad_dim(g: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """``g`` with ``lo``/``hi`` zeros before/after along ``dim`` (negative amounts crop)."""
    pads = [0, 0] * (g.dim() - 1 - dim) + [lo, hi]
    return aten.constant_pad_nd.default(g, pads, 0.0)


def select_backward(grad: torch.Tensor, input_sizes: list[int], dim: int, index: int) -> torch.Tensor:
    """Zeros of ``input_sizes`` holding ``grad`` at ``index`` along ``dim`` (a pad, not a scatter)."""
    dim %= len(input_sizes)
    n = input_sizes[dim]
    index %= n
    return _pad_dim(grad.unsqueeze(dim), dim, index, n - index - 1)


def slice_backward(grad: torch.Tensor, input_sizes: list[int], dim: int, start: int, end: int,
                   step: int) -> torch.Tensor:
    """Zeros of ``input_sizes`` holding ``grad`` at ``start:end:step`` along ``dim``."""
    dim %= len(input_sizes)
    n = input_sizes[dim]
    start = min(max(start + n if start < 0 else start, 0), n)
    length = grad.shape[dim]
    if step > 1:  # step - 1 zeros after each element
        shape = list(grad.shape)
        g = _pad_dim(grad.unsqueeze(dim + 1), dim + 1, 0, step - 1)
        shape[dim] = length * step
        grad = g.reshape(shape)
    return _pad_dim(grad, dim, start, n - start - length * step)


# -- max pooling -----------------------------------------------------------------------------
def _window_view(xp: torch.Tensor, i: int, j: int, oh: int, ow: int, stride, dilation) -> torch.Tensor:
    """The elements at kernel offset (i, j) of every pooling window of the padded ``xp``: (..., oh, ow)."""
    (sh, sw), (dh, dw) = stride, dilation
    r0, c0 = i * dh, j * dw
    return xp[..., r0:r0 + (oh - 1) * sh + 1:sh, c0:c0 + (ow - 1) * sw + 1:sw]


def _place(v: torch.Tensor, i: int, j: int, size: tuple[int, int], stride, dilation) -> torch.Tensor:
    """The inverse of :func:`_window_view`: ``v`` (N, C, oh, ow) at those positions of a zero
    tensor of the padded spatial ``size``."""
    (sh, sw), (dh, dw) = stride, dilation
    g = _dilate(v, sh, sw)
    r0, c0 = i * dh, j * dw
    return aten.constant_pad_nd.default(g, [c0, size[1] - c0 - g.shape[3], r0, size[0] - r0 - g.shape[2]], 0.0)


def _tile(parts: dict[tuple[int, int], torch.Tensor], kh: int, kw: int, size: tuple[int, int]) -> torch.Tensor:
    """Non-overlapping windows: ``parts[(i, j)]`` (N, C, oh, ow) interleaved into (N, C, oh*kh, ow*kw) with one
    concatenation, padded with zeros to the padded spatial ``size``."""
    n, c, oh, ow = next(iter(parts.values())).shape
    rows = [torch.cat([parts[(i, j)].unsqueeze(-1) for j in range(kw)], dim=-1) for i in range(kh)]
    g = torch.cat([r.unsqueeze(3) for r in rows], dim=3).reshape(n, c, oh * kh, ow * kw)
    return aten.constant_pad_nd.default(g, [0, size[1] - ow * kw, 0, size[0] - oh * kh], 0.0)


def max_pool2d_with_indices_backward(grad: torch.Tensor, x: torch.Tensor, kernel: list[int], stride: list[int],
                                     padding: list[int], dilation: list[int], ceil_mode: bool,
                                     indices: torch.Tensor) -> torch.Tensor:
    """Max-pool backward from the input instead of the saved indices: each window's gradient goes to
    its first maximum, or its last NaN when it has one (torch's choice on CPU)."""
    if x.dim() not in (3, 4):
        return NotImplemented
    squeeze = x.dim() == 3
    if squeeze:
        x, grad = x.unsqueeze(0), grad.unsqueeze(0)
    kh, kw = kernel if len(kernel) == 2 else (kernel[0], kernel[0])
    stride = (list(stride) * 2)[:2] if stride else [kh, kw]
    padding = (list(padding) * 2)[:2]
    dilation = (list(dilation) * 2)[:2]
    h, w = x.shape[2:]
    oh, ow = grad.shape[2:]
    ph, pw = padding
    hp = max(h + 2 * ph, (oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1)
    wp = max(w + 2 * pw, (ow - 1) * stride[1] + (kw - 1) * dilation[1] + 1)
    pads = [pw, wp - w - pw, ph, hp - h - ph]
    xp = aten.constant_pad_nd.default(x, pads, float("-inf"))
    valid = aten.constant_pad_nd.default(torch.ones_like(x), pads, 0.0) > 0
    m = aten.max_pool2d_with_indices.default(x, [kh, kw], stride, padding, dilation, ceil_mode)[0]
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    views = {o: (_window_view(xp, *o, oh, ow, stride, dilation), _window_view(valid, *o, oh, ow, stride, dilation))
             for o in offsets}
    hits, taken, nan_taken = {}, None, None
    for o in offsets:  # the first (valid) element equal to the maximum
        v, ok = views[o]
        hit = (v == m) & ok if taken is None else (v == m) & ok & ~taken
        taken = hit if taken is None else taken | hit
        hits[o] = hit
    for o in reversed(offsets):  # a window holding NaN: its last NaN
        v, ok = views[o]
        nan = torch.isnan(v) & ok if nan_taken is None else torch.isnan(v) & ok & ~nan_taken
        nan_taken = nan if nan_taken is None else nan_taken | nan
        hits[o] = torch.where(torch.isnan(m), nan, hits[o])
    parts = {o: torch.where(hits[o], grad, 0.0) for o in offsets}
    if list(stride) == [kh, kw] and list(dilation) == [1, 1]:  # windows tile the input: interleave, no sums
        total = _tile(parts, kh, kw, (hp, wp))
    else:
        total = None
        for o in offsets:
            part = _place(parts[o], *o, (hp, wp), stride, dilation)
            total = part if total is None else total + part
    out = total[:, :, ph:ph + h, pw:pw + w]
    return out.squeeze(0) if squeeze else out


def avg_pool2d_backward(grad: torch.Tensor, x: torch.Tensor, kernel: list[int], stride: list[int],
                        padding: list[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Any) -> torch.Tensor:
    """Average-pool backward: each window's gradient divided by its divisor, spread over the window."""
    if x.dim() not in (3, 4):
        return NotImplemented
    squeeze = x.dim() == 3
    if squeeze:
        x, grad = x.unsqueeze(0), grad.unsqueeze(0)
    kh, kw = (list(kernel) * 2)[:2]
    stride = (list(stride) * 2)[:2] if stride else [kh, kw]
    ph, pw = (list(padding) * 2)[:2]
    h, w = x.shape[2:]
    oh, ow = grad.shape[2:]
    hp = max(h + 2 * ph, (oh - 1) * stride[0] + kh)
    wp = max(w + 2 * pw, (ow - 1) * stride[1] + kw)
    if divisor_override:
        scaled = grad / divisor_override
    else:  # the elements each window counts: inside the padded input (or the input), never the ceil overhang
        ones = torch.ones_like(x[:1, :1])
        counted = (aten.constant_pad_nd.default(ones, [pw, pw, ph, ph], 1.0) if count_include_pad
                   else aten.constant_pad_nd.default(ones, [pw, pw, ph, ph], 0.0))
        counted = aten.constant_pad_nd.default(counted, [0, wp - w - 2 * pw, 0, hp - h - 2 * ph], 0.0)
        count = aten.avg_pool2d.default(counted, [kh, kw], stride, [0, 0], False, True, None) * (kh * kw)
        scaled = grad / count
    total = None
    for i in range(kh):
        for j in range(kw):
            part = _place(scaled, i, j, (hp, wp), stride, (1, 1))
            total = part if total is None else total + part
    out = total[:, :, ph:ph + h, pw:pw + w]
    return out.squeeze(0) if squeeze else out


# -- embedding and losses --------------------------------------------------------------------
def _one_hot(ids: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return (ids.unsqueeze(-1) == torch.arange(n, device=ids.device)).to(dtype)


def embedding_dense_backward(grad: torch.Tensor, indices: torch.Tensor, num_weights: int, padding_idx: int,
                             scale_grad_by_freq: bool) -> torch.Tensor:
    """Rows of the gradient summed per id: ``one_hot(ids)^T @ grad`` (no scatter-add in minicomp)."""
    d = grad.shape[-1]
    g = grad.reshape(-1, d)
    hot = _one_hot(indices.reshape(-1), num_weights, grad.dtype)
    if padding_idx >= 0:
        hot = hot * (torch.arange(num_weights, device=grad.device) != padding_idx).to(grad.dtype)
    out = hot.t() @ g
    if scale_grad_by_freq:
        out = out / hot.sum(0).clamp(min=1).unsqueeze(1)
    return out


def _class_weights(x: torch.Tensor, target: torch.Tensor, weight: Any, ignore_index: int):
    """(one-hot of the target over the classes, per-sample weight: 0 where the target is ignored)."""
    hot = target.unsqueeze(-1) == torch.arange(x.shape[-1], device=x.device)
    ignored = target == ignore_index
    # eager raises IndexError for a target outside [0, C) that is not ignored; a one-hot alone would
    # silently give it loss 0. The embedding's run-time bounds check raises it (its rows are zeros).
    checked = F.embedding(torch.where(ignored, 0, target), x.new_zeros(x.shape[-1], 1)).squeeze(-1)
    keep = (~ignored).to(x.dtype) + checked
    if weight is None:
        return hot, keep
    return hot, (hot.to(x.dtype) * weight).sum(-1) * keep


def nll_loss_forward(x: torch.Tensor, target: torch.Tensor, weight: Any, reduction: int,
                     ignore_index: int) -> Any:
    """Negative log likelihood with a one-hot selection instead of ``gather``."""
    if x.dim() not in (1, 2):
        return NotImplemented
    hot, w = _class_weights(x, target, weight, ignore_index)
    picked = torch.where(hot, x, 0.0).sum(-1)
    loss = -picked * w
    if reduction == 0 and x.dim() == 2:
        return loss, x.new_zeros(())
    total = w.sum()
    out = loss.sum()
    return (out / total if reduction == 1 else out), total


def nll_loss_backward(grad: torch.Tensor, x: torch.Tensor, target: torch.Tensor, weight: Any, reduction: int,
                      ignore_index: int, total_weight: torch.Tensor) -> Any:
    """Gradient of :func:`nll_loss_forward`: ``-grad * weight`` at each sample's target class."""
    if x.dim() not in (1, 2):
        return NotImplemented
    hot, w = _class_weights(x, target, weight, ignore_index)
    if reduction == 1:
        grad = grad / total_weight
    return torch.where(hot, (-grad * w).unsqueeze(-1), 0.0)
