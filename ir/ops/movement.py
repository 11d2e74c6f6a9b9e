"""Movement ops (category MOVEMENT): reshape, permute, expand, slice, cat, split,
embedding, upsample_nearest2d, copy.

Pure views (reshape, permute, expand, slice, split, upsample_nearest2d, copy) give
a ``view`` rule::

    view(out_index: list[Expr], in_types: list[TensorType], attrs: dict, result: int = 0) -> list[Expr]

mapping the multi-index of result ``result`` (i64 Exprs, one per output dim) to
the multi-index of operand 0, so a view folds into its consumer's indexing.
Constant parts fold while building (``x * 1``, ``x + 0``, size-1 dims -> 0).

``cat`` and ``embedding`` are not views: the lowering handles them (cat: a
``where`` chain choosing the input the index falls in, with the index shifted by
that input's offset; embedding: a data-dependent load ``weight[ids[i], j]``).
"""
from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Const, E, Expr
from minicomp.ir.ops import Attr, Category, IRError, OpDef, Role, lowering_rule, register
from minicomp.ir.ops.dtype_util import dtype_of, promote_all
from minicomp.ir.types import TensorType

I64 = DType.i64


# -- folding index arithmetic ---------------------------------------------------------------------
def _c(v: int) -> Const:
    return E.const(v, I64)


def _is(e: Expr, v: int) -> bool:
    return isinstance(e, Const) and e.value == v


def idx_add(a: Expr, b: Expr | int) -> Expr:
    """a + b on i64 index Exprs, folding zeros and constants."""
    b = _c(b) if isinstance(b, int) else b
    if isinstance(a, Const) and isinstance(b, Const):
        return _c(a.value + b.value)
    return b if _is(a, 0) else a if _is(b, 0) else E.add(a, b)


def idx_mul(a: Expr, k: int) -> Expr:
    """a * k for a constant k, folding 0 and 1."""
    if k == 0:
        return _c(0)
    if k == 1:
        return a
    return _c(a.value * k) if isinstance(a, Const) else E.mul(a, _c(k))


def idx_floordiv(a: Expr, k: int) -> Expr:
    """a // k (floor) for a positive constant k."""
    if k == 1:
        return a
    return _c(a.value // k) if isinstance(a, Const) else E.floordiv(a, _c(k))


def idx_mod(a: Expr, k: int) -> Expr:
    """a mod k (floor semantics) for a positive constant k."""
    if k == 1:
        return _c(0)
    return _c(a.value % k) if isinstance(a, Const) else E.mod(a, _c(k))


def _reg(name: str, arity: int | None, infer, reference, attrs: dict[str, Attr] | None = None, view=None,
         doc: str = "", num_results: int | None = 1, **lowering) -> OpDef:
    """Register a movement op: a view (``view`` rule, role VIEW) unless ``lowering`` says otherwise."""
    return register(OpDef(name, Category.MOVEMENT, arity, infer, reference, attrs or {}, view=view, doc=doc,
                          num_results=num_results, **lowering))


def _check_dim(name: str, dim: int, rank: int) -> None:
    if not 0 <= dim < rank:
        raise IRError(f"op '{name}': dim {dim} out of range for rank {rank} (normalize negative dims first)")


# -- reshape ---------------------------------------------------------------------------------------
def _infer_reshape(types, attrs):
    (t,) = types
    shape = tuple(attrs["shape"])
    if any(s < 0 for s in shape) or prod(shape) != t.numel:
        raise IRError(f"reshape of {t} to {shape}: sizes must be non-negative with {t.numel} elements in all")
    return [TensorType(t.dtype, shape)]


def _view_reshape(out_index, in_types, attrs, result=0):
    in_shape, out_shape = in_types[0].shape, tuple(attrs["shape"])
    if in_shape == out_shape:
        return list(out_index)
    flat, step = _c(0), 1
    for i in reversed(range(len(out_shape))):
        if out_shape[i] != 1:
            flat = idx_add(flat, idx_mul(out_index[i], step))
        step *= out_shape[i]
    index, step = [], 1
    for d in reversed(range(len(in_shape))):
        size = in_shape[d]
        q = idx_floordiv(flat, step)
        index.append(_c(0) if size == 1 else q if d == 0 else idx_mod(q, size))
        step *= size
    return index[::-1]


_reg("reshape", 1, _infer_reshape, lambda x, shape: np.reshape(x, tuple(shape)), {"shape": Attr("ints")},
     _view_reshape, "row-major reshape; the shape is fully resolved (no -1)", no_op=lambda t, a: True)


# -- permute ----------------------------------------------------------------------------------------
def _infer_permute(types, attrs):
    (t,) = types
    dims = tuple(attrs["dims"])
    if sorted(dims) != list(range(t.rank)):
        raise IRError(f"permute dims {dims} are not a permutation of range({t.rank})")
    return [TensorType(t.dtype, tuple(t.shape[d] for d in dims))]


def _view_permute(out_index, in_types, attrs, result=0):
    index: list[Expr] = [_c(0)] * len(attrs["dims"])
    for i, d in enumerate(attrs["dims"]):
        index[d] = out_index[i]
    return index


_reg("permute", 1, _infer_permute, lambda x, dims: np.transpose(x, tuple(dims)), {"dims": Attr("ints")},
     _view_permute, "out dim i is input dim dims[i]",
     no_op=lambda t, a: tuple(a["dims"]) == tuple(range(t.rank)))


# -- expand ------------------------------------------------------------------------------------------
def _expand_shape(t: TensorType, shape: tuple[int, ...]) -> tuple[int, ...]:
    lead = len(shape) - t.rank
    if lead < 0:
        raise IRError(f"expand of {t} to {shape}: the target has fewer dims")
    out = []
    for i, s in enumerate(shape):
        src = t.shape[i - lead] if i >= lead else None
        if s == -1 and src is not None:
            s = src
        if s < 0 or (src is not None and src != 1 and src != s):
            raise IRError(f"expand of {t} to {shape}: dim {i} cannot expand from {src} to {s}")
        out.append(s)
    return tuple(out)


def _infer_expand(types, attrs):
    return [TensorType(types[0].dtype, _expand_shape(types[0], tuple(attrs["shape"])))]


def _view_expand(out_index, in_types, attrs, result=0):
    t = in_types[0]
    out_shape = _expand_shape(t, tuple(attrs["shape"]))
    lead = len(out_shape) - t.rank
    return [_c(0) if t.shape[d] == 1 else out_index[d + lead] for d in range(t.rank)]


_reg("expand", 1, _infer_expand,
     lambda x, shape: np.broadcast_to(x, _expand_shape(TensorType(DType.f32, x.shape), tuple(shape))),
     {"shape": Attr("ints")}, _view_expand, "broadcast size-1 dims and add leading dims; -1 keeps a dim",
     no_op=lambda t, a: True)


# -- slice --------------------------------------------------------------------------------------------
def _infer_slice(types, attrs):
    (t,) = types
    dim, start, end, step = attrs["dim"], attrs["start"], attrs["end"], attrs["step"]
    _check_dim("slice", dim, t.rank)
    if step < 1 or not 0 <= start <= t.shape[dim] or not 0 <= end <= t.shape[dim]:
        raise IRError(f"slice of {t} along {dim}: need 0 <= start, end <= {t.shape[dim]} and step >= 1, "
                      f"got start={start} end={end} step={step}")
    size = max(0, -(-(end - start) // step))
    return [TensorType(t.dtype, t.shape[:dim] + (size,) + t.shape[dim + 1:])]


def _slice_ref(x, dim, start, end, step):
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, max(start, end), step)
    return x[tuple(index)]


def _view_slice(out_index, in_types, attrs, result=0):
    index = list(out_index)
    d = attrs["dim"]
    index[d] = idx_add(idx_mul(index[d], attrs["step"]), attrs["start"])
    return index


_reg("slice", 1, _infer_slice, _slice_ref,
     {"dim": Attr("int"), "start": Attr("int"), "end": Attr("int"), "step": Attr("int", 1)},
     _view_slice, "x[start:end:step] along dim; start/end within [0, size]",
     no_op=lambda t, a: a["start"] == 0 and a["end"] == t.shape[a["dim"]] and a["step"] == 1)


# -- cat, split ------------------------------------------------------------------------------------
def _infer_cat(types, attrs):
    if not types:
        raise IRError("cat needs at least one operand")
    dim, first = attrs["dim"], types[0]
    _check_dim("cat", dim, first.rank)
    for t in types[1:]:
        if t.rank != first.rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
            raise IRError(f"cat along {dim}: shapes {[x.shape for x in types]} differ outside dim {dim}")
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in types)
    return [TensorType(promote_all([t.dtype for t in types]), tuple(shape))]


def _cat_ref(*xs, dim):
    d = promote_all([dtype_of(x) for x in xs])
    return np.concatenate([x.astype(d.np, copy=False) for x in xs], axis=dim)


def _infer_split(types, attrs):
    (t,) = types
    dim, sizes = attrs["dim"], tuple(attrs["sizes"])
    _check_dim("split", dim, t.rank)
    if any(s < 0 for s in sizes) or sum(sizes) != t.shape[dim]:
        raise IRError(f"split sizes {sizes} must be non-negative and sum to {t.shape[dim]} (dim {dim} of {t})")
    return [TensorType(t.dtype, t.shape[:dim] + (s,) + t.shape[dim + 1:]) for s in sizes]


def _split_ref(x, dim, sizes):
    return np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=dim)


def _view_split(out_index, in_types, attrs, result=0):
    index = list(out_index)
    d = attrs["dim"]
    index[d] = idx_add(index[d], sum(attrs["sizes"][:result]))
    return index


# cat and embedding compute each element in a kernel of their own (never fused: a where-chain or
# a data-dependent load per element is not worth recomputing in every consumer)
_reg("cat", None, _infer_cat, _cat_ref, {"dim": Attr("int")},
     doc="concatenate along dim; dtypes promote (lowering casts); not a view",
     role=Role.ELEMENTWISE, fuses=False, element=lowering_rule("special", "cat"))
_reg("split", 1, _infer_split, _split_ref, {"dim": Attr("int"), "sizes": Attr("ints")}, _view_split,
     "one result per size; result r starts at sum(sizes[:r])", num_results=None)


# -- embedding ---------------------------------------------------------------------------------------
def _infer_embedding(types, attrs):
    w, ids = types
    if w.rank != 2:
        raise IRError(f"embedding weight must be 2-d [num, dim], got {w}")
    if ids.dtype not in (DType.i32, DType.i64):
        raise IRError(f"embedding ids must be i32 or i64, got {ids.dtype}")
    return [TensorType(w.dtype, ids.shape + (w.shape[1],))]


def _embedding_ref(weight, ids):
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        raise IndexError(f"embedding id out of range [0, {weight.shape[0]})")
    return weight[ids]


_reg("embedding", 2, _infer_embedding, _embedding_ref, doc="out[..., j] = weight[ids[...], j]; not a view",
     role=Role.ELEMENTWISE, fuses=False, element=lowering_rule("special", "embedding"))


# -- upsample_nearest2d, copy -----------------------------------------------------------------------
def _infer_upsample(types, attrs):
    (t,) = types
    size = tuple(attrs["size"])
    if t.rank != 4 or len(size) != 2 or any(s <= 0 for s in size) or 0 in t.shape[1:]:
        raise IRError(f"upsample_nearest2d needs a 4-d input with non-empty C, H, W and 2 positive sizes, "
                      f"got {t} and {size}")
    return [TensorType(t.dtype, t.shape[:2] + size)]


def _upsample_ref(x, size):
    rows = (np.arange(size[0]) * x.shape[2]) // size[0]
    cols = (np.arange(size[1]) * x.shape[3]) // size[1]
    return x[:, :, rows][:, :, :, cols]


def _view_upsample(out_index, in_types, attrs, result=0):
    t = in_types[0]
    index = list(out_index[:2])
    for i in range(2):
        n_in, n_out = t.shape[2 + i], attrs["size"][i]
        o = out_index[2 + i]
        index.append(o if n_in == n_out else idx_floordiv(idx_mul(o, n_in), n_out))
    return index


_reg("upsample_nearest2d", 1, _infer_upsample, _upsample_ref, {"size": Attr("ints")}, _view_upsample,
     "in = floor(out * in_size / out_size) for H and W")
_reg("copy", 1, lambda types, attrs: [types[0]], lambda x: np.array(x, copy=True),
     view=lambda out_index, in_types, attrs, result=0: list(out_index),
     doc="materialize a value (contiguous unless its type says otherwise)",
     role=Role.COPY, element=lowering_rule("special", "copy"))
