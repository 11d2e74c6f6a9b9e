"""Per-op operand and attribute generators for random graphs (NNSmith-style).

A :class:`~minicomp.testing.builder.Builder` grows one graph. It keeps a *pool* of available values; an op
generator (one per op family, table :data:`GENERATORS`) picks operands from the
pool whose types fit the op, makes fresh leaves (graph inputs or constants) when
none fit, and draws attributes that fit the operand shapes (reduction dims,
permutations, numel-preserving reshape targets, slice bounds, conv/pool params).
The op's own type inference is the final judge: a node is inserted only when
``infer_types`` accepts it.

Numerical robustness: ops whose result jumps on a tiny input change (floor,
rounding division, comparisons, argmax, float->int casts) only take *exact*
operands: values computed from inputs by ops every correct implementation
evaluates bit-identically (movement, max/min, negation, ...). This keeps the
differential check at default tolerances free of false alarms.
"""
from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Value, constant
from minicomp.ir.ops import IRError, get_op
from minicomp.ir.types import TensorType
from minicomp.testing.builder import DISCONTINUOUS, EXACT_ON_INTS, EXACT_OPS, Builder  # noqa: F401 (re-exported)

FLOATS = (DType.f32, DType.f64, DType.f16, DType.bf16)


Gen = Callable[[Builder, str], "tuple[list[Value], dict[str, Any]] | None"]


def _is_float(v: Value) -> bool:
    return v.type.dtype.is_float


def _is_num(v: Value) -> bool:
    return v.type.dtype is not DType.bool


# -- elementwise ---------------------------------------------------------------------
def _unary(kind: str) -> Gen:
    pred = {"float": _is_float, "num": _is_num, "any": lambda v: True}[kind]

    def gen(b: Builder, op: str):
        x = b.raw(b.pick(pred, exact=op in DISCONTINUOUS))
        return None if x is None else ([x], {})
    return gen


def _attr_unary(b: Builder, op: str):
    x = b.pick(_is_float)
    if x is None:
        return None
    if op == "leaky_relu":
        return [x], {"negative_slope": b.choice([0.01, 0.2, -0.5])}
    if op == "hardtanh":
        lo = b.choice([-1.0, -2.0, 0.0])
        return [x], {"min_val": lo, "max_val": lo + b.choice([0.5, 1.0, 2.0])}
    if op == "gelu":
        return [x], {"approximate": b.choice(["none", "tanh"])}
    if op == "clamp":
        lo, hi = b.choice([None, -1.0, 0.0]), b.choice([None, 0.5, 2.0])
        if lo is None and hi is None:
            hi = 1.0
        return [x], {"min": lo, "max": hi}
    raise AssertionError(op)


def _cast(b: Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    targets = sorted((set(b.dtypes) | {DType.bool}) - {x.type.dtype}, key=lambda d: d.value)
    target = b.choice(targets or [x.type.dtype])
    p = x.producer
    if p is not None and p.op == "cast" and b.flag():
        target = p.operands[0].type.dtype  # a round trip: cast(cast(x, T), S) must keep T's rounding
    if x.type.dtype.is_float and not target.is_float:
        # float -> int/bool jumps: exact operands only; inf/NaN -> int is undefined (-> bool is not).
        if b.special and target is not DType.bool or id(x) not in b.exact:
            return None
    return [x], {"dtype": target}


_ARITH = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "fmod"}


def _binary(b: Builder, op: str):
    exact = op in DISCONTINUOUS
    if op in ("remainder", "fmod"):
        # floats only: an integer divisor of 0 raises in PyTorch, and leaves draw zeros freely
        pred = lambda v: v.type.dtype.is_float  # noqa: E731
    elif op in ("sub", "div", "pow"):
        pred = _is_num
    elif op.startswith("logical"):
        pred = lambda v: True  # noqa: E731
    else:
        pred = _is_num if op in _ARITH else (lambda v: True)
    a = b.pick(pred, exact=exact)
    chained = a is not None and a.producer is not None and a.producer.op == op
    a = a if chained else b.raw(a)
    if a is None:
        return None
    other = b.pick(lambda v: pred(v) and _broadcasts(v.type.shape, a.type.shape), exact=exact)
    # 0: a fresh leaf, 1-2: a fresh splat constant (x*0, x-0.0, x/1 ...), 3: the same value (x-x, x/x,
    # max(x,x)), 4-6 (and a chain, but for 3: (a + b) + c): a value of the same type, else the pool's pick
    fresh = b.draw(st.integers(0, 7))
    if fresh == 3:
        other = a
    elif (4 <= fresh <= 6 or chained) and not exact:
        other = b.same_type(a)
    elif other is None or fresh <= 2:  # (a scalar half the time: x * 0.5, x / 3.0)
        shape = b.choice([(), (), a.type.shape, a.type.shape[1:], tuple(1 for _ in a.type.shape)])
        other = b.leaf(TensorType(a.type.dtype, shape), const=True if fresh else None,
                       splat=True if fresh else None)
    # a chain, or a splat constant, keeps the previous node on the left three times in four (how code is
    # written: x / 3.0, (a + b) + c; the shapes rewrites match); else either side
    keep = b.flag() or (chained or 1 <= fresh <= 2) and b.flag()
    lhs, rhs = (a, other) if keep else (other, a)
    attrs: dict[str, Any] = {}
    if op == "pow" and not (lhs.type.dtype.is_float or rhs.type.dtype.is_float):
        return None  # torch rejects negative integer powers of integers
    if op == "div":
        both_float = lhs.type.dtype.is_float and rhs.type.dtype.is_float
        mode = b.choice([None, None, "trunc", "floor"]) if both_float else None
        if mode is not None and not (id(lhs) in b.exact and id(rhs) in b.exact):
            mode = None
        attrs["rounding_mode"] = mode
    return [lhs, rhs], attrs


def _broadcasts(s: tuple[int, ...], t: tuple[int, ...]) -> bool:
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(s), reversed(t)))


def _where(b: Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    cond = b.pick(lambda v: v.type.dtype is DType.bool and _broadcasts(v.type.shape, x.type.shape))
    if cond is None:
        cond = b.leaf(TensorType(DType.bool, x.type.shape[b.draw(st.integers(0, x.type.rank)):]))
    y = b.pick(lambda v: v.type.dtype == x.type.dtype and _broadcasts(v.type.shape, x.type.shape)
               and _broadcasts(v.type.shape, cond.type.shape))
    if y is None:
        y = b.leaf(TensorType(x.type.dtype, ()))
    return [cond, x, y] if b.flag() else [cond, y, x], {}


# -- reductions ----------------------------------------------------------------------
def _subset(b: Builder, rank: int) -> tuple[int, ...]:
    return tuple(d for d in range(rank) if b.flag())


def _reduce(b: Builder, op: str):
    pred = _is_float if op in ("mean", "var") else _is_num
    x = b.pick(pred)
    if x is None:
        return None
    dims = _subset(b, x.type.rank)
    reduced = [x.type.shape[d] for d in (dims or range(x.type.rank))]
    if op in ("amax", "amin") and prod(reduced) == 0:
        return None  # torch: reduction over an empty dim has no identity
    attrs: dict[str, Any] = {"dims": dims, "keepdim": b.flag()}
    if op == "var":
        attrs["correction"] = b.choice([0.0, 1.0])
    return [x], attrs


def _arg_reduce(b: Builder, op: str):
    x = b.pick(_is_num, exact=True)
    if x is None:
        return None
    if x.type.rank == 0 or b.draw(st.integers(0, 3)) == 0:
        if x.type.numel == 0:
            return None
        return [x], {"dim": None, "keepdim": False}
    dim = b.draw(st.integers(0, x.type.rank - 1))
    if x.type.shape[dim] == 0:
        return None
    return [x], {"dim": dim, "keepdim": b.flag()}


def _softmax(b: Builder, op: str):
    x = b.pick(_is_float)
    if x is None:
        return None
    return [x], {"dim": b.draw(st.integers(0, max(x.type.rank - 1, 0)))}


def _cumsum(b: Builder, op: str):
    x = b.pick(lambda v: _is_num(v) and v.type.rank >= 1)
    if x is None:
        return None
    return [x], {"dim": b.draw(st.integers(0, x.type.rank - 1))}


def _layer_norm(b: Builder, op: str):
    x = b.pick(lambda v: _is_float(v) and v.type.rank >= 1)
    if x is None:
        return None
    k = b.draw(st.integers(1, min(x.type.rank, 2)))
    norm = TensorType(x.type.dtype, x.type.shape[x.type.rank - k:])
    return [x, b.leaf(norm), b.leaf(norm)], {"normalized_ndim": k}


def _batch_norm(b: Builder, op: str):
    x = b.pick(lambda v: _is_float(v) and 2 <= v.type.rank <= 4 and v.type.shape[1] >= 1)
    if x is None:
        return None
    ch = TensorType(x.type.dtype, (x.type.shape[1],))
    return [x, b.leaf(ch, const=True), b.leaf(ch, const=True, positive=True), b.leaf(ch), b.leaf(ch)], {}


# -- contractions --------------------------------------------------------------------
def _matmul(b: Builder, op: str):
    a = b.pick(lambda v: _is_float(v) and 1 <= v.type.rank <= 3)
    if a is None:
        return None
    dt, n = a.type.dtype, b.side()
    if op == "linear":
        k = a.type.shape[-1]
        bias = [b.operand(TensorType(dt, (n,)))] if b.flag() else []
        return [a, b.operand(TensorType(dt, (n, k))), *bias], {}
    if b.flag() or a.type.rank == 1:  # a on the left: [..., m, k] @ [k] | [k, n] | [B, k, n]
        k = a.type.shape[-1]
        return [a, b.operand(TensorType(dt, b.choice([(k,), (k, n), (b.side(1, 2), k, n)])))], {}
    k = a.type.shape[-2]  # a on the right: [k] | [m, k] @ [..., k, n]
    return [b.operand(TensorType(dt, b.choice([(k,), (n, k)]))), a], {}


def _matrix(b: Builder, min_rows: int = 0) -> Value | None:
    """A float rank-2 value with at least ``min_rows`` rows: from the pool or fresh."""
    x = b.pick(lambda v: _is_float(v) and v.type.rank == 2 and v.type.shape[0] >= min_rows)
    floats = [d for d in b.dtypes if d.is_float]
    if (x is None or b.draw(st.integers(0, 3)) == 0) and floats:
        x = b.leaf(TensorType(b.choice(floats), (b.side(max(min_rows, 1), 4), b.side())))
    return x


def _addmm(b: Builder, op: str):
    a = _matrix(b)
    if a is None:
        return None
    n, k = a.type.shape
    p = b.side()
    bias = b.leaf(TensorType(a.type.dtype, b.choice([(n, p), (p,), (1, p), ()])))
    rhs = b.operand(TensorType(a.type.dtype, (k, p)))
    return [bias, a, rhs], {"beta": b.choice([1.0, 0.5]), "alpha": b.choice([1.0, 2.0])}


def _image(b: Builder) -> Value | None:
    """A float NCHW value with C, H, W >= 1 (torch allows only N to be 0): from the pool or fresh."""
    x = b.pick(lambda v: _is_float(v) and v.type.rank == 4 and 0 not in v.type.shape[1:])
    floats = [d for d in b.dtypes if d.is_float]
    if (x is None or b.draw(st.integers(0, 3)) == 0) and floats:
        x = b.leaf(TensorType(b.choice(floats), (b.side(1, 2), b.side(1, 3), b.side(1, 5), b.side(1, 5))))
    return x


def _conv2d(b: Builder, op: str):
    x = _image(b)
    if x is None:
        return None
    _, c, h, w = x.type.shape
    groups = b.choice([g for g in (1, 2, 3) if c % g == 0])
    out = groups * b.side(1, 2)
    kh, kw = b.side(1, 3), b.side(1, 3)
    attrs = {"stride": (b.side(1, 2), b.side(1, 2)), "padding": (b.side(0, 1), b.side(0, 1)),
             "dilation": (b.side(1, 2), b.side(1, 2)), "groups": groups}
    # With zero padding, a non-finite weight tap that only meets padding gives NaN (0 * inf)
    # in PyTorch's usual kernels but a finite value in oneDNN kernels that skip padded taps:
    # implementation-defined, so such weights stay finite.
    padded = attrs["padding"] != (0, 0)
    wt = b.leaf(TensorType(x.type.dtype, (out, c // groups, kh, kw)), bound=8.0 if padded else None)
    bias = [b.leaf(TensorType(x.type.dtype, (out,)))] if b.flag() else []
    return [x, wt, *bias], attrs


def _pool(b: Builder, op: str):
    x = _image(b)
    if x is None:
        return None
    k = (b.side(1, 3), b.side(1, 3))
    attrs: dict[str, Any] = {"kernel": k, "stride": (b.side(1, 2), b.side(1, 2)),
                             "padding": (b.side(0, k[0] // 2), b.side(0, k[1] // 2)), "ceil_mode": b.flag()}
    if op == "max_pool2d":
        attrs["dilation"] = (b.side(1, 2), b.side(1, 2))
    else:
        attrs["count_include_pad"] = b.flag()
    return [x], attrs


# -- movement ------------------------------------------------------------------------
def _factor_shape(b: Builder, numel: int) -> tuple[int, ...]:
    rank = b.draw(st.integers(0 if numel == 1 else 1, 4))
    if numel == 0:
        dims = [b.side(0, 3) for _ in range(rank)]
        dims[b.draw(st.integers(0, rank - 1))] = 0
        return tuple(dims)
    dims = [1] * rank
    n, p = numel, 2
    while n > 1:
        while n % p:
            p += 1
        dims[b.draw(st.integers(0, rank - 1))] *= p
        n //= p
    return tuple(dims)


def _reshape(b: Builder, op: str):
    x = b.pick()
    return None if x is None else ([x], {"shape": _factor_shape(b, x.type.numel)})


def _permute(b: Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    perm = b.draw(st.permutations(list(range(x.type.rank))))
    return [x], {"dims": tuple(perm)}


def _expand(b: Builder, op: str):
    x = b.pick(lambda v: v.type.rank <= 3)
    if x is None:
        return None
    lead = tuple(b.side(1, 3) for _ in range(b.draw(st.integers(0, 1))))
    shape = tuple(b.side(0, 3) if s == 1 and b.flag() else s for s in x.type.shape)
    return [x], {"shape": lead + shape}


def _slice(b: Builder, op: str):
    """A slice: inside the dim, past its first element half the time, empty one time in eight; a strided
    slice often keeps most of the dim, and a slice of a slice often cuts the same dim again (composition)."""
    x = b.pick(lambda v: v.type.rank >= 1 and max(v.type.shape) >= 3) if b.flag() else None  # (room to cut)
    x = x if x is not None else b.pick(lambda v: v.type.rank >= 1)
    if x is None:
        return None
    dim = b.draw(st.integers(0, x.type.rank - 1))
    if b.flag():
        dim = max(range(x.type.rank), key=lambda d: x.type.shape[d])
    composing = x.producer is not None and x.producer.op == "slice" and b.flag()
    if composing:  # cut the same dim again, past its start, often contiguously: what slice composition meets
        dim = x.producer.attrs["dim"]
    size, step = x.type.shape[dim], 1 if composing and b.flag() else b.side(1, 3)
    start = b.draw(st.integers(1, size - 1)) if size >= 2 and (composing or b.flag()) else \
        b.draw(st.integers(0, max(size - 1, 0)))
    end = b.draw(st.integers(start if b.draw(st.integers(0, 7)) == 0 else min(start + 1, size), size))
    if step > 1 and b.flag():
        start, end = min(start, 1), size
    return [x], {"dim": dim, "start": start, "end": end, "step": step}


def _cat(b: Builder, op: str):
    x = b.pick(lambda v: v.type.rank >= 1)
    if x is None:
        return None
    dim = b.draw(st.integers(0, x.type.rank - 1))
    parts = [x]
    for _ in range(b.draw(st.integers(1, 2))):
        shape = list(x.type.shape)
        shape[dim] = b.side(0, 3)
        parts.append(b.operand(TensorType(x.type.dtype, tuple(shape))))
    return [parts[i] for i in b.draw(st.permutations(range(len(parts))))], {"dim": dim}


def _split(b: Builder, op: str):
    x = b.pick(lambda v: v.type.rank >= 1)
    if x is None:
        return None
    dim = b.draw(st.integers(0, x.type.rank - 1))
    left, sizes = x.type.shape[dim], []
    while left > 0 and len(sizes) < 3:
        s = b.draw(st.integers(1, left))
        sizes.append(s)
        left -= s
    if left or not sizes:
        sizes.append(left)
    return [x], {"dim": dim, "sizes": tuple(sizes)}


def _embedding(b: Builder, op: str):
    weight = _matrix(b, min_rows=1)
    if weight is None:
        return None
    rows = weight.type.shape[0]
    shape = tuple(b.side(0, 3) for _ in range(b.draw(st.integers(0, 2))))
    ids = np.asarray(b.draw(st.lists(st.integers(0, rows - 1), min_size=prod(shape), max_size=prod(shape))))
    ids_dt = b.choice([DType.i64, DType.i32])
    return [weight, constant(b.graph, ids.reshape(shape), ids_dt)], {}


def _upsample(b: Builder, op: str):
    x = _image(b)  # (torch has no integer nearest upsampling)
    if x is None:
        return None
    return [x], {"size": (b.side(1, 6), b.side(1, 6))}


def _unary_any(b: Builder, op: str):
    x = b.pick()
    return None if x is None else ([x], {})


def _full(b: Builder, op: str):
    dt = b.choice(b.dtypes)
    shape = tuple(b.side(1, 3) for _ in range(b.draw(st.integers(0, 2))))
    value = b.choice([0.0, 1.0, -2.5]) if dt.is_float else float(b.choice([0, 1, -3]))
    if dt is DType.bool:
        value = 1.0
    return [], {"shape": shape, "value": value, "dtype": dt}


def _arange(b: Builder, op: str):
    dt = b.choice([d for d in b.dtypes if d is not DType.bool] or [DType.i64])
    start = float(b.draw(st.integers(-3, 3)))
    step = float(b.choice([1, 2, -1]))
    end = start + step * b.side(0, 6)
    return [], {"start": start, "end": end, "step": step, "dtype": dt}


#: op name -> generator. Ops absent here (``constant``, ``fused``) are never drawn.
GENERATORS: dict[str, Gen] = {
    **{op: _unary("num") for op in ("neg", "abs", "log", "sqrt", "rsqrt", "sin", "cos", "tanh",
                                    "sigmoid", "relu", "erf", "reciprocal")},
    # exp of an integer up to INT_BOUND reaches 5e8, where one ulp is 32 and any periodic op
    # after it is noise: integers stay out (floats are bounded by FLOAT_BOUND for this reason)
    "exp": _unary("float"),
    "floor": _unary("float"),
    **{op: _unary("float") for op in ("silu", "relu6")},
    "isnan": _unary("float"),  # (of an integer or bool it is always False)
    **{op: _unary("any") for op in ("logical_not", "copy")},
    **{op: _attr_unary for op in ("leaky_relu", "hardtanh", "gelu", "clamp")},
    "cast": _cast,
    **{op: _binary for op in ("add", "sub", "mul", "div", "remainder", "fmod", "maximum", "minimum", "pow",
                              "eq", "ne", "lt",
                              "le", "gt", "ge", "logical_and", "logical_or", "logical_xor")},
    "where": _where,
    **{op: _reduce for op in ("sum", "mean", "amax", "amin", "var")},
    "argmax": _arg_reduce, "argmin": _arg_reduce,
    "softmax": _softmax, "log_softmax": _softmax,
    "cumsum": _cumsum,
    "layer_norm": _layer_norm, "batch_norm": _batch_norm,
    "matmul": _matmul, "linear": _matmul, "addmm": _addmm,
    "conv2d": _conv2d, "max_pool2d": _pool, "avg_pool2d": _pool,
    "reshape": _reshape, "permute": _permute, "expand": _expand, "slice": _slice, "cat": _cat,
    "split": _split, "embedding": _embedding, "upsample_nearest2d": _upsample,
    "full": _full, "arange": _arange,
}


def generatable(op: str) -> bool:
    """Whether random graphs can contain ``op`` (it has a generator and is registered)."""
    if op not in GENERATORS:
        return False
    try:
        get_op(op)
    except IRError:
        return False
    return True
