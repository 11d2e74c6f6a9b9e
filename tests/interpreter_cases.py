"""Shared pieces of the interpreter tests (``test_interpreter_ops*.py``): operand strategies,
building and checking one op against PyTorch, a numpy evaluator of kernel expressions (to
check ``scalar`` and ``view`` rules), and the elementwise ops' case table.

A case draws operands (broadcasting, size-0/size-1 dims, NaN/inf/-0.0) and
attributes, and gives the PyTorch function. When PyTorch refuses the inputs the
interpreter must refuse them too (IRError at build time, or the same runtime error).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import settings, strategies as st
from hypothesis.extra import numpy as hnp

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.graph import Graph
from minicomp.ir.interpreter import interpret
from minicomp.ir.kernel import Cast, Const, Load, Op, Var
from minicomp.ir.ops import IRError, get_op
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
