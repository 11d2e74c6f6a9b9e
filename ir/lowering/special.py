"""``element`` rules: ops computed element by element by more than a ``scalar`` formula.

``cat`` (select between inputs with clamped indices), ``embedding`` (a
data-dependent load; an id out of range is reported through a ``check`` and the
load reads a clamped row, never outside the weight), ``copy`` (identity inside a kernel) and
``batch_norm`` (inference form: per-channel affine map). Each rule maps
(builder, node, result value, index) -> Expr; the ops' OpDefs name them with
:func:`minicomp.ir.ops.lowering_rule`.
"""
from __future__ import annotations

from minicomp.ir.kernel import CHECK_INDEX, E, Expr
from minicomp.ir.lowering import indexing as ix


def cat(b, node, v, idx):
    d = node.attrs["dim"]
    d = d + v.type.rank if d < 0 else d
    parts = [o for o in node.operands if not (o.type.rank == 1 and o.type.shape[0] == 0 and v.type.rank > 1)]
    dt = v.type.dtype
    result: Expr | None = None
    offsets, start = [], 0
    for o in parts:
        offsets.append(start)
        start += o.type.shape[d]
    # Build from the last input backwards: where(i < end_k, x_k, rest).
    for o, off in reversed(list(zip(parts, offsets))):
        size = o.type.shape[d]
        if size == 0:
            continue
        local = ix.simplify(ix.add(idx[d], ix.c64(-off)), b.extents)
        clamped = E.max(E.min(local, ix.c64(size - 1)), ix.c64(0))
        sub = list(idx)
        sub[d] = ix.simplify(clamped, b.extents)
        val = E.cast(b.expr(o, sub), dt)
        result = val if result is None else E.where(E.lt(idx[d], ix.c64(off + size)), val, result)
    return result if result is not None else E.const(0, dt)


def embedding(b, node, v, idx):
    weight, ids = node.operands
    rows = weight.type.shape[0]
    i = ix.to_i64(b.expr(ids, idx[:-1]))
    # eager raises IndexError for an id outside [0, rows): the kernel reports it (the call then
    # raises) and still reads a clamped row, so the load never leaves the weight
    i = E.check(E.op("and", E.ge(i, ix.c64(0)), E.lt(i, ix.c64(rows))), i, CHECK_INDEX)
    i = E.max(E.min(i, ix.c64(rows - 1)), ix.c64(0))
    return b.expr(weight, [i, idx[-1]])


def copy(b, node, v, idx):
    return b.expr(node.operands[0], idx)


def batch_norm(b, node, v, idx):
    x, mean, var, w, bias = node.operands
    dt = v.type.dtype.compute
    c = [idx[1]] if x.type.rank > 1 else [ix.c64(0)]
    xv = E.cast(b.expr(x, idx), dt)
    m, s = E.cast(b.expr(mean, c), dt), E.cast(b.expr(var, c), dt)
    wv, bv = E.cast(b.expr(w, c), dt), E.cast(b.expr(bias, c), dt)
    # PyTorch's inference formula: y = x * alpha + beta, alpha = w / sqrt(var + eps),
    # beta = b - mean * alpha (so an infinite weight gives NaN exactly as eager does).
    alpha = E.div(wv, E.sqrt(E.add(s, E.const(node.attrs["eps"], dt))))
    return E.add(E.mul(xv, alpha), E.sub(bv, E.mul(m, alpha)))


__all__ = ["cat", "embedding", "copy", "batch_norm"]
