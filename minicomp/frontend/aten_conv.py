"""ATen handler for ``convolution``: 2-d natively, 1-d and transposed through ``conv2d``.

minicomp's one convolution op is ``conv2d`` (NCHW). A 1-d convolution is a 2-d one over
a unit height. A transposed convolution is the plain convolution of its adjoint: the
input dilated by the stride (``stride - 1`` zeros between elements), padded by
``dilation * (k - 1) - padding`` (plus ``output_padding`` at the end; a negative pad
crops), convolved at stride 1 with the weight's in/out channels swapped per group and
its taps reversed. 3-d convolutions are not supported.

Part of the table in :mod:`minicomp.frontend.aten_ops` (same conventions).
"""
from __future__ import annotations

import torch

from minicomp.frontend.aten_indexing import flip
from minicomp.frontend.aten_ops import handles
from minicomp.frontend.aten_structural import _pad
from minicomp.ir.graph import Value

aten = torch.ops.aten


def _conv2d(ctx, x: Value, w: Value, b: Value | None, stride, padding, dilation, groups: int) -> Value:
    return ctx.emit("conv2d", [x, w] if b is None else [x, w, b], stride=tuple(stride), padding=tuple(padding),
                    dilation=tuple(dilation), groups=int(groups))


def _unit_height(ctx, v: Value) -> Value:
    """[N, C, L] -> [N, C, 1, L] (a 1-d signal or kernel as a 2-d one)."""
    n, c, length = v.type.shape
    return ctx.emit("reshape", [v], shape=(n, c, 1, length))


def _dilate(ctx, x: Value, stride: tuple[int, int]) -> Value:
    """[N, C, H, W] with ``stride - 1`` zeros after every element along H and W (trailing ones too)."""
    sh, sw = stride
    if (sh, sw) == (1, 1):
        return x
    n, c, h, w = x.type.shape
    x = ctx.emit("reshape", [x], shape=(n, c, h, 1, w, 1))
    x = _pad(ctx, x, [0, sw - 1, 0, 0, 0, sh - 1], 0.0)
    return ctx.emit("reshape", [x], shape=(n, c, h * sh, w * sw))


def _transposed(ctx, x: Value, w: Value, b: Value | None, stride, padding, dilation, output_padding,
                groups: int) -> Value:
    """conv_transpose2d as a stride-1 conv2d of the dilated, padded input (module docstring)."""
    cin, cout_g, kh, kw = w.type.shape
    g = int(groups)
    wt = ctx.emit("reshape", [w], shape=(g, cin // g, cout_g, kh, kw))
    wt = ctx.emit("permute", [wt], dims=(0, 2, 1, 3, 4))
    wt = ctx.emit("reshape", [wt], shape=(g * cout_g, cin // g, kh, kw))
    wt = flip(ctx, wt, (2, 3))
    xd = _dilate(ctx, x, stride)
    pads = []
    for i, k in ((1, kw), (0, kh)):  # constant_pad_nd order: last dim first
        lo = dilation[i] * (k - 1) - padding[i]
        hi = lo + output_padding[i] - (stride[i] - 1)  # the dilation's trailing zeros are not part of it
        pads += [lo, hi]
    xd = _pad(ctx, xd, pads, 0.0)
    return _conv2d(ctx, xd, wt, b, (1, 1), (0, 0), dilation, g)


@handles(aten.convolution.default)
def _convolution(ctx, x: Value, w: Value, b: Value | None, stride: list[int], padding: list[int],
                 dilation: list[int], transposed: bool, output_padding: list[int], groups: int) -> Value:
    spatial = w.type.rank - 2  # ATen's lists may hold one value for every spatial dim ('valid' -> [0])
    if spatial not in (1, 2) or x.type.rank != spatial + 2:
        raise ctx.unsupported(f"{spatial}-d convolution (1-d NCL and 2-d NCHW are supported)")
    params = [list(p) * spatial if len(p) == 1 else list(p) for p in (stride, padding, dilation, output_padding)]
    if spatial == 1:
        x, w = _unit_height(ctx, x), _unit_height(ctx, w)
        params = [[1, p[0]] if name != "padding" and name != "output_padding" else [0, p[0]]
                  for name, p in zip(("stride", "padding", "dilation", "output_padding"), params)]
    stride, padding, dilation, output_padding = ([int(v) for v in p] for p in params)
    if transposed:
        y = _transposed(ctx, x, w, b, stride, padding, dilation, output_padding, groups)
    else:
        y = _conv2d(ctx, x, w, b, stride, padding, dilation, groups)
    shape = ctx.expected()[0]
    return y if y.type.shape == shape else ctx.emit("reshape", [y], shape=shape)
