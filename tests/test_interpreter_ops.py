"""Every registered op, run by the reference interpreter, against PyTorch: elementwise ops and fixed cases.

Each op has a case builder (elementwise: ``tests/interpreter_cases.py``; the others:
``tests/test_interpreter_ops_other.py``); an op without one fails ``test_every_op_has_a_case``.
Elementwise ops also check their ``scalar`` rule with a small numpy evaluator of kernel expressions.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from interpreter_cases import (D, ELEMENTWISE, PER_OP, TORCH, WILD, _generator_case, array, build, check,
                               check_scalar_rule, evaluate, to_torch)
from minicomp.ir.dtypes import round_to_dtype
from minicomp.ir.graph import Graph, constant
from minicomp.ir.interpreter import interpret
from minicomp.ir.kernel import Var
from minicomp.ir.ops import Category, IRError, all_ops, get_op
from minicomp.ir.ops.elementwise import scalar_expr
from minicomp.ir.types import TensorType


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
