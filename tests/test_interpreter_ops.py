"""Every registered op, run by the reference interpreter, against PyTorch.

Each op has a case builder below; an op without one fails ``test_every_op_has_a_case``.
A case draws operands (broadcasting, size-0/size-1 dims, NaN/inf/-0.0) and
attributes, and gives the PyTorch function. When PyTorch refuses the inputs the
interpreter must refuse them too (IRError at build time, or the same runtime error).
Elementwise ops also check their ``scalar`` rule, and views their ``view`` rule,
with a small numpy evaluator of kernel expressions.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.graph import Graph, constant
from minicomp.ir.interpreter import interpret
from minicomp.ir.kernel import Cast, Const, Load, Op, Var
from minicomp.ir.ops import Category, IRError, all_ops, get_op
from minicomp.ir.ops.elementwise import scalar_expr
from minicomp.ir.types import TensorType

D = DType
TORCH = {D.f32: torch.float32, D.f64: torch.float64, D.f16: torch.float16, D.bf16: torch.bfloat16,
         D.i32: torch.int32, D.i64: torch.int64, D.bool: torch.bool}
ALL, FLOATS = list(D), [D.f32, D.f64, D.f16, D.bf16]
NUMERIC = FLOATS + [D.i32, D.i64]
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1.0, 0.5, 2.0]
WILD = st.one_of(st.sampled_from(SPECIAL), st.floats(-8, 8), st.floats(allow_nan=False, width=32))
TAME = st.one_of(st.sampled_from(SPECIAL), st.floats(-100, 100))
FINITE = st.floats(-3, 3)
RUNTIME_ERRORS = (IRError, ZeroDivisionError, IndexError)
# ~70 op tests share the profile's budget: a quarter of its examples each (25 in CI, 500 when deep)
PER_OP = settings(max_examples=max(10, settings.default.max_examples // 4))


# -- helpers ----------------------------------------------------------------------------------
def to_torch(a: np.ndarray, dtype: DType) -> torch.Tensor:
    t = torch.from_numpy(np.array(a, copy=True))
    return t.to(torch.bfloat16) if dtype is D.bf16 else t


def array(draw, dtype: DType, shape, floats=WILD, ints=st.integers(-12, 12)) -> np.ndarray:
    if dtype is D.bool:
        return draw(hnp.arrays(np.bool_, shape))
    if dtype.is_int:
        return draw(hnp.arrays(dtype.np, shape, elements=ints))
    with np.errstate(all="ignore"):
        values = draw(hnp.arrays(np.float64, shape, elements=floats))
        return round_to_dtype(values if dtype is D.f64 else values.astype(np.float32), dtype)


def build(op: str, dtypes, shapes, attrs) -> tuple[Graph, object]:
    g = Graph()
    ins = [g.add_input(TensorType(d, s)) for d, s in zip(dtypes, shapes)]
    node = g.add(op, ins, attrs)
    g.set_outputs(node.results)
    return g, node


def check(op: str, arrays, dtypes, attrs, torch_fn, lift_0d: bool = False):
    """Compare the interpreter with ``torch_fn``; returns (node, results) or None when both refuse.

    ``lift_0d``: give torch 0-d operands as shape (1,) when another operand has dims, since
    the IR promotes 0-d tensors like any other (the importer handles torch's 0-d rule).
    """
    tensors = [to_torch(a, d) for a, d in zip(arrays, dtypes)]
    if lift_0d and any(a.ndim for a in arrays):
        tensors = [t.reshape(1) if t.dim() == 0 else t for t in tensors]
    try:
        expected = torch_fn(*tensors)
    except (RuntimeError, NotImplementedError, IndexError, ValueError):
        with pytest.raises(RUNTIME_ERRORS):
            g, _ = build(op, dtypes, [a.shape for a in arrays], attrs)
            interpret(g, *arrays)
        return None
    g, node = build(op, dtypes, [a.shape for a in arrays], attrs)
    got = interpret(g, *arrays)
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    assert len(got) == len(expected)
    for a, v, e in zip(got, node.results, expected):
        torch.testing.assert_close(to_torch(a, v.type.dtype), e, equal_nan=True)
    return node, got


# -- a numpy evaluator of scalar / index expressions --------------------------------------------------
_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _int_pow(a, b):
    a, b = np.broadcast_arrays(a, b)
    odd = np.abs(b) % 2 == 1
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0)).astype(a.dtype)
    return np.where(b < 0, neg, np.power(a, np.where(b < 0, 0, b)))


_PRIM = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative,
         "abs": np.abs, "max": np.maximum, "min": np.minimum, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
         "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "lt": np.less,
         "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal,
         "isnan": np.isnan, "and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor,
         "not": np.logical_not, "where": np.where, "floordiv": np.floor_divide}


def _cast(x, dtype: DType):
    x = np.asarray(x)
    if dtype is D.bool:
        return x != 0
    if dtype.is_int and x.dtype.kind == "f":
        return np.trunc(x).astype(dtype.np)
    return round_to_dtype(x.astype(np.float32) if dtype is D.bf16 else x, dtype)


def evaluate(e, loads: list[np.ndarray], index: list[np.ndarray] = ()) -> np.ndarray:
    """Evaluate an Expr with ``Load(buf)`` = ``loads[buf]`` and ``Var(d)`` = ``index[d]``."""
    if isinstance(e, Const):
        return np.asarray(e.value, dtype=e.dtype.np)
    if isinstance(e, Var):
        return index[e.dim]
    if isinstance(e, Load):
        return loads[e.buf]
    if isinstance(e, Cast):
        return _cast(evaluate(e.arg, loads, index), e.dtype)
    assert isinstance(e, Op), e
    args = [evaluate(a, loads, index) for a in e.args]
    if e.op == "erf":
        out = _ERF(args[0])
    elif e.op == "mod":
        out = np.remainder(*args) if e.dtype.is_int else np.fmod(*args)
    elif e.op == "pow":
        out = _int_pow(*args) if e.dtype.is_int else np.power(*args)
    elif e.op == "check":  # the interpreter raised where a check fails, so every check passes here
        assert np.all(args[0]), f"check {e.args[2].value} failed where the interpreter gave a result"
        out = args[1]
    else:
        out = _PRIM[e.op](*args)
    return _cast(out, e.dtype) if e.dtype is D.bf16 else np.asarray(out).astype(e.dtype.np)


def check_scalar_rule(node, arrays, dtypes, got) -> None:
    """The op's scalar rule, evaluated elementwise, gives the interpreter's result."""
    shape = node.results[0].type.shape
    loads = [np.broadcast_to(a, shape) for a in arrays]
    expr = scalar_expr(node.op, [Load(i, Const(0, D.i64), d) for i, d in enumerate(dtypes)], node.attrs)
    assert expr.dtype == node.results[0].type.dtype
    with np.errstate(all="ignore"):
        value = np.broadcast_to(evaluate(expr, loads), shape)
    dt = node.results[0].type.dtype
    torch.testing.assert_close(to_torch(value, dt), to_torch(got[0], dt), equal_nan=True)


def check_view_rule(node, x: np.ndarray, got: list[np.ndarray]) -> None:
    """Gathering ``x`` at the view rule's indices gives every result of the view op."""
    opdef = get_op(node.op)
    for r, out in enumerate(got):
        grid = np.indices(out.shape, dtype=np.int64) if out.ndim else []
        idx = opdef.view([Var(d) for d in range(out.ndim)], [node.operands[0].type], node.attrs, r)
        assert len(idx) == x.ndim and all(i.dtype is D.i64 for i in idx)
        if out.size:
            coords = tuple(np.broadcast_to(evaluate(i, [], list(grid)), out.shape) for i in idx)
            np.testing.assert_array_equal(x[coords] if x.ndim else np.broadcast_to(x, out.shape), out)


# -- elementwise cases ---------------------------------------------------------------------------------
def _unary(fn, dtypes=ALL, attrs=st.just({}), floats=WILD):
    return dict(fn=fn, arity=1, dtypes=dtypes, attrs=attrs, floats=floats)


def _binary(fn, dtypes=ALL, attrs=st.just({}), ints=st.integers(-12, 12)):
    return dict(fn=fn, arity=2, dtypes=dtypes, attrs=attrs, ints=ints)


_BOUND = st.one_of(st.none(), st.sampled_from([-2.0, -0.5, 0.0, 1.5, 3.0]), st.integers(-3, 3))
ELEMENTWISE = {name: _unary(lambda a, _n=name: getattr(torch, _n)) for name in
               ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "erf",
                "reciprocal", "floor", "isnan", "logical_not"]}
ELEMENTWISE.update(
    silu=_unary(lambda a: F.silu), relu6=_unary(lambda a: F.relu6),
    leaky_relu=_unary(lambda a: lambda x: F.leaky_relu(x, a["negative_slope"]),
                      attrs=st.builds(lambda s: {"negative_slope": s}, st.sampled_from([0.01, 0.2, -1.5]))),
    hardtanh=_unary(lambda a: lambda x: F.hardtanh(x, a["min_val"], a["max_val"]),
                    attrs=st.tuples(st.integers(-3, 3), st.integers(0, 3)).map(
                        lambda t: {"min_val": float(t[0]), "max_val": float(t[0] + t[1])})),
    gelu=_unary(lambda a: lambda x: F.gelu(x, approximate=a["approximate"]),
                attrs=st.sampled_from(["none", "tanh"]).map(lambda s: {"approximate": s})),
    clamp=_unary(lambda a: lambda x: torch.clamp(x, a["min"], a["max"]),
                 attrs=st.builds(lambda lo, hi: {"min": lo, "max": hi}, _BOUND, _BOUND)),
    # float -> int of NaN, inf or out-of-range values is undefined in C and in torch
    cast=_unary(lambda a: lambda x: x.to(TORCH[a["dtype"]]), floats=st.floats(-300, 300),
                attrs=st.sampled_from(ALL).map(lambda d: {"dtype": d})),
    add=_binary(lambda a: torch.add), sub=_binary(lambda a: torch.sub), mul=_binary(lambda a: torch.mul),
    maximum=_binary(lambda a: torch.maximum), minimum=_binary(lambda a: torch.minimum),
    pow=_binary(lambda a: torch.pow, ints=st.integers(-4, 6)),
    div=_binary(lambda a: lambda x, y: torch.div(x, y, rounding_mode=a["rounding_mode"]),
                attrs=st.sampled_from([None, "trunc", "floor"]).map(lambda m: {"rounding_mode": m})),
    remainder=_binary(lambda a: torch.remainder), fmod=_binary(lambda a: torch.fmod),
    where=dict(fn=lambda a: torch.where, arity=3, dtypes=ALL, attrs=st.just({}), cond=True),
)
for _n in ["eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"]:
    ELEMENTWISE[_n] = _binary(lambda a, _n=_n: getattr(torch, _n))


def _generator_case(draw, name):
    dtype = draw(st.sampled_from(ALL if name == "full" else NUMERIC))
    if name == "full":
        # no overflowing values: torch checks them only for some shapes (the IR always refuses them)
        attrs = {"shape": draw(hnp.array_shapes(min_dims=0, min_side=0, max_side=4)), "dtype": dtype,
                 "value": draw(st.sampled_from([0.0, 1.0, -2.5, 0.1, 1e4] + ([math.inf] if dtype.is_float else [])))}
        return attrs, lambda: torch.full(attrs["shape"], attrs["value"], dtype=TORCH[dtype])
    start, n = draw(st.integers(-5, 5)), draw(st.integers(0, 12))
    step = draw(st.sampled_from([1, 2, -1, -3] + ([0.5, -0.25, 0.1] if dtype.is_float else [])))
    attrs = {"start": float(start), "end": float(start + n * step / draw(st.sampled_from([1, 2]))),
             "step": float(step), "dtype": dtype}
    return attrs, lambda: torch.arange(start, attrs["end"], step, dtype=TORCH[dtype])


@pytest.mark.parametrize("name", sorted(n for n, o in all_ops().items() if o.category is Category.ELEMENTWISE))
@PER_OP
@given(data=st.data())
def test_elementwise(name, data):
    draw = data.draw
    if get_op(name).arity == 0:
        attrs, fn = _generator_case(draw, name)
        got = check(name, [], [], attrs, lambda: fn())
        if got is not None:  # the generator's scalar rule over the output index
            node, out = got
            expr = scalar_expr(name, [], node.attrs, index=[Var(d) for d in range(out[0].ndim)])
            grid = list(np.indices(out[0].shape, dtype=np.int64))
            dt = node.results[0].type.dtype
            value = np.broadcast_to(evaluate(expr, [], grid), out[0].shape)
            torch.testing.assert_close(to_torch(value, dt), to_torch(out[0], dt), equal_nan=True)
        return
    spec = ELEMENTWISE[name]
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=spec["arity"], min_dims=0, max_dims=4,
                                                    min_side=0, max_side=4)).input_shapes
    dtypes = [draw(st.sampled_from(spec["dtypes"])) for _ in shapes]
    if spec.get("cond"):
        dtypes[0] = draw(st.sampled_from([D.bool, D.bool, D.bool, D.f32]))
    attrs = draw(spec["attrs"])
    arrays = [array(draw, d, s, spec.get("floats", WILD), spec.get("ints", st.integers(-12, 12)))
              for d, s in zip(dtypes, shapes)]
    got = check(name, arrays, dtypes, attrs, spec["fn"](attrs), lift_0d=True)
    if got is not None:
        check_scalar_rule(got[0], arrays, dtypes, got[1])


# -- other categories: one case builder per op -----------------------------------------------------------
def _dims(draw, rank):
    return tuple(sorted(draw(st.sets(st.integers(0, rank - 1), max_size=rank)))) if rank else ()


def _reduce_case(fn, dtypes=ALL, attrs=lambda draw, r: {}):
    def case(draw):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        dtype = draw(st.sampled_from(dtypes))
        a = attrs(draw, len(shape))
        return [array(draw, dtype, shape, TAME)], [dtype], a, fn(a)
    return case


def _dims_keep(draw, rank):
    return {"dims": _dims(draw, rank), "keepdim": draw(st.booleans())}


def _dim(draw, rank):
    return draw(st.integers(0, max(rank - 1, 0)))


def _layer_norm_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    n, dt = draw(st.integers(1, len(shape))), draw(st.sampled_from(FLOATS))
    arrays = [array(draw, dt, shape, TAME)] + [array(draw, dt, shape[len(shape) - n:], FINITE) for _ in range(2)]
    attrs = {"normalized_ndim": n, "eps": draw(st.sampled_from([1e-5, 0.1]))}
    # against torch in f64: torch's own f16/bf16/f32 kernels differ in FMA use (see the reference)
    return arrays, [dt] * 3, attrs, lambda x, w, b: F.layer_norm(
        x.double(), x.shape[x.dim() - n:], w.double(), b.double(), attrs["eps"]).to(x.dtype)


def _batch_norm_case(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=4).filter(lambda s: s[1] > 0))
    dt = draw(st.sampled_from([D.f32, D.f64]))
    arrays = [array(draw, dt, shape, TAME)] + [array(draw, dt, (shape[1],), FINITE) for _ in range(4)]
    arrays[2] = np.abs(arrays[2])
    eps = draw(st.sampled_from([1e-5, 0.1]))
    return arrays, [dt] * 5, {"eps": eps}, lambda x, m, v, w, b: F.batch_norm(
        x.double(), m.double(), v.double(), w.double(), b.double(), False, 0.1, eps).to(x.dtype)


def _matmul_case(draw):
    ra, rb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, min_side=1, max_side=3)).input_shapes
    m, k, n = (draw(st.integers(0, 4)) for _ in range(3))
    sa = batch[0][len(batch[0]) - max(ra - 2, 0):] + ((m, k) if ra > 1 else (k,))
    sb = batch[1][len(batch[1]) - max(rb - 2, 0):] + ((k, n) if rb > 1 else (k,))
    dt = draw(st.sampled_from(NUMERIC))
    return [array(draw, dt, sa, FINITE), array(draw, dt, sb, FINITE)], [dt, dt], {}, torch.matmul


def _linear_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    i, o, dt = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.sampled_from(FLOATS))
    shapes = [batch + (i,), (o, i)] + ([(o,)] if draw(st.booleans()) else [])
    return [array(draw, dt, s, FINITE) for s in shapes], [dt] * len(shapes), {}, F.linear


def _addmm_case(draw):
    m, k, n, dt = draw(st.integers(1, 4)), draw(st.integers(0, 4)), draw(st.integers(1, 4)), draw(st.sampled_from(FLOATS))
    bias = draw(st.sampled_from([(), (n,), (m, n), (1, n), (m, 1)]))
    attrs = {"beta": draw(st.sampled_from([0.0, 1.0, 0.5])), "alpha": draw(st.sampled_from([1.0, 2.0, -0.5]))}
    arrays = [array(draw, dt, bias, TAME), array(draw, dt, (m, k), FINITE), array(draw, dt, (k, n), FINITE)]
    return arrays, [dt] * 3, attrs, lambda c, a, b: torch.addmm(c, a, b, beta=attrs["beta"], alpha=attrs["alpha"])


def _conv_case(draw):
    g, cg, og = (draw(st.integers(1, 2)) for _ in range(3))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    attrs = {"stride": (draw(st.integers(1, 2)), draw(st.integers(1, 2))), "groups": g,
             "padding": (draw(st.integers(0, 2)), draw(st.integers(0, 1))),
             "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2)))}
    dt = draw(st.sampled_from([D.f32, D.f64, D.bf16]))
    shapes = [(n, g * cg, h, w), (g * og, cg, kh, kw)] + ([(g * og,)] if draw(st.booleans()) else [])
    return [array(draw, dt, s, FINITE) for s in shapes], [dt] * len(shapes), attrs, \
        lambda x, wt, b=None: F.conv2d(x, wt, b, attrs["stride"], attrs["padding"], attrs["dilation"], g)


def _pool_case(name):
    def case(draw):
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        attrs = {"kernel": k, "stride": draw(st.sampled_from([(), (1, 1), (2, 1), (2, 3)])),
                 "padding": (draw(st.integers(0, 1)), draw(st.integers(0, 1))), "ceil_mode": draw(st.booleans())}
        if name == "max_pool2d":
            attrs["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            dt = draw(st.sampled_from(NUMERIC))
            fn = lambda x: F.max_pool2d(x, k, attrs["stride"] or None, attrs["padding"], attrs["dilation"],  # noqa
                                        attrs["ceil_mode"])
        else:
            attrs["count_include_pad"] = draw(st.booleans())
            attrs["divisor"] = draw(st.sampled_from([None, 1, 3]))
            dt = draw(st.sampled_from([D.f32, D.f64, D.bf16]))
            fn = lambda x: F.avg_pool2d(x, k, attrs["stride"] or None, attrs["padding"], attrs["ceil_mode"],  # noqa
                                        attrs["count_include_pad"], attrs["divisor"])
        return [array(draw, dt, shape, TAME)], [dt], attrs, fn
    return case


def _any_array(draw, min_dims=0, dtype=None):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=0, max_side=4))
    dt = dtype or draw(st.sampled_from(ALL))
    return array(draw, dt, shape), dt


def _reshape_case(draw):
    sizes = draw(st.lists(st.integers(0, 4), max_size=5))
    def group(lst):
        cuts = sorted(draw(st.sets(st.integers(0, len(lst)), max_size=3)))
        return tuple(math.prod(lst[a:b]) for a, b in zip([0] + cuts, cuts + [len(lst)]) if b > a or not lst)
    x, dt = array(draw, D.f32, group(sizes)), D.f32
    target = group(draw(st.permutations(sizes)))
    return [x], [dt], {"shape": target}, lambda t: t.reshape(target)


def _permute_case(draw):
    x, dt = _any_array(draw)
    dims = tuple(draw(st.permutations(range(x.ndim))))
    return [x], [dt], {"dims": dims}, lambda t: t.permute(dims)


def _expand_case(draw):
    x, dt = _any_array(draw)
    lead = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    shape = lead + tuple(draw(st.sampled_from([s, -1])) if s != 1 else draw(st.integers(0, 3)) for s in x.shape)
    return [x], [dt], {"shape": shape}, lambda t: t.expand(shape)


def _slice_case(draw):
    x, dt = _any_array(draw, min_dims=1)
    dim = _dim(draw, x.ndim)
    size = x.shape[dim]
    start, end, step = draw(st.integers(0, size)), draw(st.integers(0, size)), draw(st.integers(1, 3))
    index = (slice(None),) * dim + (slice(start, end, step),)
    return [x], [dt], {"dim": dim, "start": start, "end": end, "step": step}, lambda t: t[index]


def _cat_case(draw):
    base = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
    dim = _dim(draw, len(base))
    shapes = [base[:dim] + (draw(st.integers(0, 3)),) + base[dim + 1:] for _ in range(draw(st.integers(1, 3)))]
    dts = [draw(st.sampled_from(ALL)) for _ in shapes]
    return [array(draw, d, s) for d, s in zip(dts, shapes)], dts, {"dim": dim}, lambda *ts: torch.cat(ts, dim)


def _split_case(draw):
    x, dt = _any_array(draw, min_dims=1)
    dim = _dim(draw, x.ndim)
    cuts = sorted(draw(st.lists(st.integers(0, x.shape[dim]), max_size=3)))
    sizes = tuple(b - a for a, b in zip([0] + cuts, cuts + [x.shape[dim]]))
    return [x], [dt], {"dim": dim, "sizes": sizes}, lambda t: torch.split(t, list(sizes), dim)


def _embedding_case(draw):
    n, d = draw(st.integers(1, 5)), draw(st.integers(0, 3))
    wdt, idt = draw(st.sampled_from(FLOATS)), draw(st.sampled_from([D.i32, D.i64]))
    ids_shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    arrays = [array(draw, wdt, (n, d)), array(draw, idt, ids_shape, ints=st.integers(0, n))]
    return arrays, [wdt, idt], {}, lambda w, i: F.embedding(i, w)


def _upsample_case(draw):
    shape = (draw(st.integers(0, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dt = draw(st.sampled_from(FLOATS))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return [array(draw, dt, shape)], [dt], {"size": size}, lambda t: F.interpolate(t, size=size, mode="nearest")


def _copy_case(draw):
    x, dt = _any_array(draw)
    return [x], [dt], {}, lambda t: t.clone()


_OPT_DTYPE = st.sampled_from([None, D.f32, D.f64, D.i64])
CASES = {
    "sum": _reduce_case(lambda a: lambda x: torch.sum(x, list(a["dims"]), a["keepdim"],
                                                      dtype=a["dtype"] and TORCH[a["dtype"]]),
                        attrs=lambda draw, r: {**_dims_keep(draw, r), "dtype": draw(_OPT_DTYPE)}),
    "mean": _reduce_case(lambda a: lambda x: torch.mean(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "amax": _reduce_case(lambda a: lambda x: torch.amax(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "amin": _reduce_case(lambda a: lambda x: torch.amin(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "argmax": _reduce_case(lambda a: lambda x: torch.argmax(x, a["dim"], a["keepdim"]),
                           attrs=lambda draw, r: {"dim": draw(st.one_of(st.none(), st.just(_dim(draw, r)))),
                                                  "keepdim": draw(st.booleans())}),
    "argmin": _reduce_case(lambda a: lambda x: torch.argmin(x, a["dim"], a["keepdim"]),
                           attrs=lambda draw, r: {"dim": draw(st.one_of(st.none(), st.just(_dim(draw, r)))),
                                                  "keepdim": draw(st.booleans())}),
    "var": _reduce_case(lambda a: lambda x: torch.var(x, list(a["dims"]), correction=a["correction"],
                                                      keepdim=a["keepdim"]),
                        attrs=lambda draw, r: {**_dims_keep(draw, r),
                                               "correction": draw(st.sampled_from([0.0, 1.0, 2.0, 0.5]))}),
    # torch accepts empty int tensors in softmax; the IR refuses ints outright
    "softmax": _reduce_case(lambda a: lambda x: torch.softmax(x, a["dim"]), FLOATS,
                            attrs=lambda draw, r: {"dim": _dim(draw, r)}),
    "log_softmax": _reduce_case(lambda a: lambda x: torch.log_softmax(x, a["dim"]), FLOATS,
                                attrs=lambda draw, r: {"dim": _dim(draw, r)}),
    "cumsum": _reduce_case(lambda a: lambda x: torch.cumsum(x, a["dim"], dtype=a["dtype"] and TORCH[a["dtype"]]),
                           attrs=lambda draw, r: {"dim": _dim(draw, r), "dtype": draw(_OPT_DTYPE)}),
    "layer_norm": _layer_norm_case, "batch_norm": _batch_norm_case,
    "matmul": _matmul_case, "linear": _linear_case, "addmm": _addmm_case, "conv2d": _conv_case,
    "max_pool2d": _pool_case("max_pool2d"), "avg_pool2d": _pool_case("avg_pool2d"),
    "reshape": _reshape_case, "permute": _permute_case, "expand": _expand_case, "slice": _slice_case,
    "cat": _cat_case, "split": _split_case, "embedding": _embedding_case, "upsample_nearest2d": _upsample_case,
    "copy": _copy_case,
}
FIXED = {"constant", "fused", "external"}  # tested by name below (external: tests/test_fallback.py)


def test_every_op_has_a_case():
    missing = set(all_ops()) - set(ELEMENTWISE) - set(CASES) - FIXED - {"full", "arange"}
    assert not missing, f"ops without a test case: {sorted(missing)}"


@pytest.mark.filterwarnings("ignore:var.... degrees of freedom:UserWarning")
@pytest.mark.parametrize("name", sorted(CASES))
@PER_OP
@given(data=st.data())
def test_op_matches_torch(name, data):
    arrays, dtypes, attrs, fn = CASES[name](data.draw)
    got = check(name, arrays, dtypes, attrs, fn)
    if got is not None and get_op(name).view is not None:
        check_view_rule(got[0], arrays[0], got[1])


# -- fixed cases -------------------------------------------------------------------------------------
def test_constant_and_fused():
    body = Graph("body")
    a, b = body.add_input(TensorType(D.f32, (2, 3))), body.add_input(TensorType(D.f32, (3,)))
    body.set_outputs([body.add("exp", [body.add("add", [a, b]).result]).result])
    g = Graph()
    x = g.add_input(TensorType(D.f32, (2, 3)))
    c = constant(g, np.array([0.0, -1.0, 2.0], np.float32))
    g.set_outputs([g.add("fused", [x, c], {"kind": "pointwise", "body": body}).result])
    xs = np.arange(6, dtype=np.float32).reshape(2, 3)
    (out,) = interpret(g, xs)
    torch.testing.assert_close(torch.from_numpy(out), torch.exp(torch.from_numpy(xs) + torch.tensor([0.0, -1.0, 2.0])))


def test_bf16_rounds_after_every_op():
    g, _ = build("add", [D.bf16, D.bf16], [(3,), (3,)], {})
    x = round_to_dtype(np.array([1.0, 256.0, 3.0], np.float32), D.bf16)
    y = round_to_dtype(np.array([2 ** -9, 1.0, 1 / 3], np.float32), D.bf16)
    (out,) = interpret(g, x, y)
    expected = torch.from_numpy(x).bfloat16() + torch.from_numpy(y).bfloat16()
    assert torch.equal(torch.from_numpy(out), expected.float())


@pytest.mark.parametrize("dt", [D.bf16, D.f16])
def test_log_softmax_last_dim_rounds_like_torch(dt):
    """Regression (repro a100aa3369e0): torch's f16/bf16 last-dim kernel rounds sum(exp) and its log."""
    rows = np.array([[-math.inf, 3.1875], [0.0, -3.28125], [-math.inf, -0.0228], [1.5, 1.5]], np.float32)
    x = round_to_dtype(rows, dt)
    for dim in (1, 0):  # dim 0 is not the last dim: torch computes in f32 and rounds once
        g, _ = build("log_softmax", [dt], [x.shape], {"dim": dim})
        (out,) = interpret(g, x)
        expected = torch.log_softmax(torch.from_numpy(np.asarray(x, np.float32)).to(TORCH[dt]), dim)
        assert torch.equal(torch.from_numpy(np.asarray(out, np.float32)).to(TORCH[dt]), expected)


def test_conv2d_pads_with_zeros_times_weight():
    """0 * inf on a padded tap gives NaN, as in torch's im2col path (f64 always takes it)."""
    x, w = np.ones((1, 1, 2, 2)), np.full((1, 1, 1, 3), np.inf)
    w[0, 0, 0, 1] = 1.0
    g, _ = build("conv2d", [D.f64, D.f64], [x.shape, w.shape], {"padding": (0, 1)})
    (out,) = interpret(g, x, w)
    torch.testing.assert_close(torch.from_numpy(out), F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=(0, 1)),
                               equal_nan=True)


@pytest.mark.parametrize("op, dtypes, shapes, attrs, message", [
    ("add", [D.f32, D.f32], [(2, 3), (4,)], {}, "do not broadcast"),
    ("where", [D.f32, D.f32, D.f32], [(2,), (2,), (2,)], {}, "bool condition"),
    ("neg", [D.bool], [(2,)], {}, "numeric"),
    ("silu", [D.i32], [(2,)], {}, "floating-point"),
    ("div", [D.f32, D.f32], [(2,), (2,)], {"rounding_mode": "round"}, "rounding_mode"),
    ("amax", [D.f32], [(0, 3)], {"dims": (0,)}, "empty"),
    ("argmax", [D.f32], [(2, 0)], {"dim": 1}, "empty"),
    ("sum", [D.f32], [(2, 3)], {"dims": (2,)}, "dims"),
    ("softmax", [D.f32], [(2, 3)], {"dim": -1}, "out of range"),
    ("mean", [D.i64], [(2, 3)], {"dims": ()}, "floating-point"),
    ("matmul", [D.f32, D.f32], [(2, 3), (4, 5)], {}, "inner dims"),
    ("matmul", [D.f32, D.f64], [(2, 3), (3, 5)], {}, "one dtype"),
    ("matmul", [D.f32, D.f32], [(), (3,)], {}, "rank >= 1"),
    ("conv2d", [D.f32, D.f32], [(1, 3, 4, 4), (2, 2, 3, 3)], {}, "does not fit"),
    ("conv2d", [D.f32, D.f32], [(1, 1, 2, 2), (1, 1, 3, 3)], {}, "too small"),
    ("max_pool2d", [D.f32], [(1, 1, 4, 4)], {"kernel": (2, 2), "stride": (), "padding": (2, 0)}, "half the kernel"),
    ("reshape", [D.f32], [(2, 3)], {"shape": (4,)}, "elements"),
    ("permute", [D.f32], [(2, 3)], {"dims": (0, 0)}, "permutation"),
    ("expand", [D.f32], [(2, 3)], {"shape": (4, 3)}, "cannot expand"),
    ("slice", [D.f32], [(2, 3)], {"dim": 1, "start": 0, "end": 5}, "end"),
    ("cat", [D.f32, D.f32], [(2, 3), (2, 4)], {"dim": 0}, "differ"),
    ("split", [D.f32], [(2, 3)], {"dim": 1, "sizes": (1, 1)}, "sum to 3"),
    ("embedding", [D.f32, D.f32], [(4, 2), (3,)], {}, "ids"),
    ("layer_norm", [D.f32] * 3, [(2, 3), (2,), (3,)], {"normalized_ndim": 1}, "normalized shape"),
    ("clamp", [D.f32], [(2,)], {}, "min or max"),
    ("full", [], [], {"shape": (2,), "value": 1e9, "dtype": D.f16}, "overflow"),
    ("arange", [], [], {"start": 0.0, "end": 1.0, "step": -1.0, "dtype": D.f32}, "sign"),
])
def test_bad_operands_raise_clear_errors(op, dtypes, shapes, attrs, message):
    with pytest.raises(IRError, match=message):
        build(op, dtypes, shapes, attrs)


def test_interpret_checks_inputs():
    g, _ = build("exp", [D.f32], [(2,)], {})
    with pytest.raises(ValueError, match="takes 1 inputs"):
        interpret(g)
    with pytest.raises(ValueError, match="shape"):
        interpret(g, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        interpret(g, np.zeros(2, np.float64))


def test_integer_division_by_zero_raises():
    g, _ = build("div", [D.i64, D.i64], [(2,), (2,)], {"rounding_mode": "floor"})
    with pytest.raises(ZeroDivisionError):
        interpret(g, np.array([1, 2]), np.array([1, 0]))
