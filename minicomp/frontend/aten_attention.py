"""ATen handlers for ``scaled_dot_product_attention`` in every form it takes.

``F.scaled_dot_product_attention`` reaches the importer as the kernel torch picked for
the tracing device: ``_scaled_dot_product_flash_attention_for_cpu`` on the CPU,
``_scaled_dot_product_flash_attention``/``_efficient_attention``/``_cudnn_attention`` on
a GPU, ``_scaled_dot_product_attention_math`` or the composite op itself elsewhere.
All become the spelled-out chain the ``fuse-attention`` pass merges into the backend's
fused attention kernel where it fits::

    scores = (q @ k^T) * scale   (+ additive mask | where(bool mask, ., -inf) | causal)
    out    = softmax(scores, -1) @ v

Grouped-query attention (fewer key/value heads than query heads) repeats each key/value
head for its group as a broadcast view. A row whose keys are all masked gives zeros,
as torch's kernels do (a softmax over nothing would be NaN): the output is zeroed where
the mask leaves a row nothing (a ``where`` epilogue of the last product, computed from
the mask alone, so the chain still fuses). Dropout must be 0 (inference).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from minicomp.frontend.aten_ops import handles
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Value

aten = torch.ops.aten


def _repeat_heads(ctx, kv: Value, heads: int) -> Value:
    """[*B, Hk, S, E] -> [*B, heads, S, E], each of the Hk heads repeated heads/Hk times (GQA)."""
    *b, hk, s, e = kv.type.shape
    if hk == heads:
        return kv
    if hk == 0 or heads % hk:
        raise ctx.unsupported(f"attention with {heads} query heads and {hk} key/value heads (not a multiple)")
    g = heads // hk
    x = ctx.emit("reshape", [kv], shape=(*b, hk, 1, s, e))
    x = ctx.emit("expand", [x], shape=(*b, hk, g, s, e))
    return ctx.emit("reshape", [x], shape=(*b, heads, s, e))


def _mask_rows_ok(ctx, keep: Value, shape: tuple[int, ...]) -> Value:
    """bool [*, L, 1]: whether each query row of the broadcast ``keep`` mask keeps some key."""
    keep = ctx.emit("expand", [keep], shape=shape) if keep.type.shape != shape else keep
    n = ctx.emit("sum", [ctx.cast(keep, DType.i64)], dims=(len(shape) - 1,), keepdim=True, dtype=DType.i64)
    return ctx.emit("gt", [n, ctx.const(0, DType.i64)])


def attention(ctx, q: Value, k: Value, v: Value, mask: Value | None = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None) -> tuple[Value, Value]:
    """(output, probabilities) of scaled dot-product attention as IR ops (see the module docstring)."""
    if dropout_p:
        raise ctx.unsupported(f"attention with dropout_p={dropout_p} (training-mode dropout; call model.eval())")
    if q.type.rank < 2 or k.type.rank != q.type.rank or v.type.rank != q.type.rank:
        raise ctx.unsupported("attention operands of different ranks")
    if q.type.rank >= 3:
        k, v = _repeat_heads(ctx, k, q.type.shape[-3]), _repeat_heads(ctx, v, q.type.shape[-3])
    dt = q.type.dtype
    L, E = q.type.shape[-2:]
    S = k.type.shape[-2]
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    kt = ctx.emit("permute", [k], dims=(*range(k.type.rank - 2), k.type.rank - 1, k.type.rank - 2))
    scores = ctx.emit("matmul", [q, kt])
    scores = ctx.emit("mul", [scores, ctx.const(scale, dt)])
    keep = None
    neg_inf = ctx.const(float("-inf"), dt)
    if is_causal:
        causal = ctx.emit("ge", [ctx.emit("reshape", [ctx.emit("arange", [], start=0.0, end=float(L), step=1.0,
                                                               dtype=DType.i64)], shape=(L, 1)),
                                 ctx.emit("arange", [], start=0.0, end=float(S), step=1.0, dtype=DType.i64)])
        scores = ctx.emit("where", [causal, scores, neg_inf])
        keep = causal
    if mask is not None:
        if mask.type.dtype is DType.bool:
            scores = ctx.emit("where", [mask, scores, neg_inf])
            m_keep = mask
        else:
            scores = ctx.emit("add", [scores, ctx.cast(mask, dt)])
            m_keep = ctx.emit("ne", [mask, ctx.const(float("-inf"), mask.type.dtype)])
        keep = m_keep if keep is None else ctx.emit("logical_and", [keep, m_keep])
    probs = ctx.emit("softmax", [scores], dim=scores.type.rank - 1)
    out = ctx.emit("matmul", [probs, v])
    if keep is not None and not (is_causal and mask is None and L <= S):  # causal alone keeps key 0
        ok = _mask_rows_ok(ctx, keep, _broadcast(keep.type.shape, scores.type.shape))
        out = ctx.emit("where", [ok, out, ctx.const(0.0, dt)])
    return ctx.cast(out, ctx.expected(0)[1] if _multi(ctx) else ctx.expected()[1]), probs


def _broadcast(mask_shape: tuple[int, ...], scores_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The mask's shape broadcast against the scores' leading dims, as far as the mask has them."""
    pad = (1,) * (len(scores_shape) - len(mask_shape)) + mask_shape
    return tuple(max(a, b) if a == 1 or a == b else b for a, b in zip(pad, scores_shape))


def _multi(ctx) -> bool:
    return not isinstance(ctx.node.meta.get("val"), torch.Tensor)


@handles(aten._scaled_dot_product_flash_attention_for_cpu.default)
def _flash_cpu(ctx, q, k, v, dropout_p: float = 0.0, is_causal: bool = False, *, attn_mask=None,
               scale=None) -> tuple[Any, ...]:
    return attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale)[0], None


@handles(aten._scaled_dot_product_flash_attention.default)
def _flash(ctx, q, k, v, dropout_p: float = 0.0, is_causal: bool = False, return_debug_mask: bool = False, *,
           scale=None) -> tuple[Any, ...]:
    return (attention(ctx, q, k, v, None, dropout_p, is_causal, scale)[0],) + (None,) * 8


@handles(aten._scaled_dot_product_efficient_attention.default)
def _efficient(ctx, q, k, v, attn_bias, compute_log_sumexp: bool, dropout_p: float = 0.0,
               is_causal: bool = False, *, scale=None) -> tuple[Any, ...]:
    return (attention(ctx, q, k, v, attn_bias, dropout_p, is_causal, scale)[0],) + (None,) * 3


@handles(aten._scaled_dot_product_cudnn_attention.default)
def _cudnn(ctx, q, k, v, attn_bias, compute_log_sumexp: bool, dropout_p: float = 0.0, is_causal: bool = False,
           return_debug_mask: bool = False, *, scale=None) -> tuple[Any, ...]:
    return (attention(ctx, q, k, v, attn_bias, dropout_p, is_causal, scale)[0],) + (None,) * 8


@handles(aten._scaled_dot_product_attention_math.default)
def _math(ctx, q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, dropout_mask=None, *,
          scale=None, enable_gqa: bool = False) -> tuple[Any, ...]:
    if dropout_mask is not None:
        raise ctx.unsupported("attention with a dropout mask")
    return attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale)


@handles(aten.scaled_dot_product_attention.default)
def _sdpa(ctx, q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, *, scale=None,
          enable_gqa: bool = False) -> Value:
    return attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale)[0]


@handles(aten._safe_softmax.default)
def _safe_softmax(ctx, x: Value, dim: int, dtype: Any = None) -> Value:
    """softmax that gives zeros, not NaN, for a slice that is all -inf (SDPA's math path)."""
    x = ctx.cast(x, ctx.expected()[1])
    d = dim % max(x.type.rank, 1)
    probs = ctx.emit("softmax", [x], dim=d)
    some = ctx.emit("sum", [ctx.cast(ctx.emit("ne", [x, ctx.const(float("-inf"), x.type.dtype)]), DType.i64)],
                    dims=(d,), keepdim=True, dtype=DType.i64)
    ok = ctx.emit("gt", [some, ctx.const(0, DType.i64)])
    return ctx.emit("where", [ok, probs, ctx.const(0.0, x.type.dtype)])
