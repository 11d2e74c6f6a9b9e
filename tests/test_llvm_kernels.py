"""LLVM backend, loop kernels: hand-built pointwise, cast and reduction kernels compiled with
compile_program and compared with torch (contractions: test_llvm_contractions.py)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from llvm_support import ALL, FLOATS, TORCH, call_entry, flat, program_of, run_kernel, sample, tt
from minicomp.codegen.llvm import compile_program
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import E, Buffer, Load, LoopKernel, Reduce, Ref, Store, Var


# ---- pointwise -------------------------------------------------------------------------
UNARY = {
    "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "sin": torch.sin, "cos": torch.cos,
    "tanh": torch.tanh, "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil,
    "abs": torch.abs, "neg": torch.neg, "isnan": torch.isnan,
}


def _unary_kernel(op, dtype, shape):
    x = Load(0, flat(shape), dtype)
    e = E.op(op, x)
    return LoopKernel("u", "pointwise", (Buffer("x", tt(dtype, shape)),), (Buffer("y", tt(e.dtype, shape)),),
                      tuple(shape), (), (Store(0, flat(shape), e),))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_float(op, dtype):
    shape = (5, 67)
    x = sample(dtype, shape)
    if op == "log":
        x = x.abs() if dtype is not DType.bf16 else x
    (y,) = run_kernel(_unary_kernel(op, dtype, shape), [x])
    ref = UNARY[op](x.float()).to(y.dtype) if dtype in (DType.f16, DType.bf16) else UNARY[op](x)
    torch.testing.assert_close(y, ref, equal_nan=True)


def test_transcendentals_wide_range_f32():
    x = torch.linspace(-100, 100, 20001, dtype=torch.float32)
    for op in ("exp", "tanh", "erf", "sin", "cos"):
        (y,) = run_kernel(_unary_kernel(op, DType.f32, x.shape), [x])
        torch.testing.assert_close(y, UNARY[op](x), msg=op)
    pos = torch.cat([torch.tensor([1e-45, 1e-40, 1.1754944e-38]), torch.logspace(-30, 30, 5001)]).float()
    (y,) = run_kernel(_unary_kernel("log", DType.f32, pos.shape), [pos])
    torch.testing.assert_close(y, torch.log(pos))


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_sin_cos_of_huge_arguments_f32(op):
    """Found by a deep run: sin(exp(19)) came back 1.8e8 (the argument reduction failed for large
    |x|). Every float32 magnitude up to the largest finite one, the floats nearest multiples of
    pi/2 at large scales, and the 2**10 switch to the exact reduction, against eager and float64."""
    g = torch.Generator().manual_seed(0)
    scale = 10.0 ** torch.randint(0, 39, (20000,), generator=g).double()
    rand = (torch.randn(20000, generator=g, dtype=torch.float64) * scale).float()
    near = (torch.arange(-3000, 3000, dtype=torch.float64) * 40000 * (math.pi / 2)).float()
    edges = torch.tensor([178482304.0, 1023.9999, 1024.0, -1024.0, 1024.0001, 65536.0, 16777215.0, 16777216.0,
                          3.4028235e38, -3.4028235e38, 1e30, 7e22, float("inf"), float("-inf"), float("nan"), -0.0])
    x = torch.cat([rand, near, edges])
    (y,) = run_kernel(_unary_kernel(op, DType.f32, x.shape), [x])
    torch.testing.assert_close(y, UNARY[op](x), equal_nan=True)
    finite = torch.isfinite(x)
    err = (y.double() - UNARY[op](x.double())).abs()[finite]
    assert err.max().item() < 1.2e-7, err.max().item()  # 1-2 float32 ulps of results near 1
    assert (y[~finite].isnan()).all()
    zeros = torch.tensor([-0.0, 0.0, -1e-45])
    (z,) = run_kernel(_unary_kernel(op, DType.f32, zeros.shape), [zeros])
    # sin keeps the sign of a zero (a deep run found sin(-0.0) = +0.0, so 1/sin(x) gave +inf)
    assert torch.equal(torch.signbit(z), torch.signbit(UNARY[op](zeros))), z


@pytest.mark.parametrize("dtype", [DType.i32, DType.i64, DType.bool])
@pytest.mark.parametrize("op", ["abs", "neg", "isnan", "floor"])
def test_unary_int(op, dtype):
    if dtype is DType.bool and op in ("neg", "abs", "floor"):
        pytest.skip("torch rejects neg/abs/floor on bool")
    shape = (3, 11)
    x = sample(dtype, shape)
    (y,) = run_kernel(_unary_kernel(op, dtype, shape), [x])
    torch.testing.assert_close(y, UNARY[op](x))


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "max": torch.maximum, "min": torch.minimum,
    "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge, "eq": torch.eq, "ne": torch.ne,
    "pow": torch.pow, "div": torch.div, "mod": torch.fmod,
    "floordiv": lambda a, b: torch.div(a, b, rounding_mode="floor"),
}


def _binary_kernel(op, dtype, shape):
    a, b = Load(0, flat(shape), dtype), Load(1, flat(shape), dtype)
    e = E.op(op, a, b)
    return LoopKernel("b", "pointwise", (Buffer("a", tt(dtype, shape)), Buffer("b", tt(dtype, shape))),
                      (Buffer("y", tt(e.dtype, shape)),), tuple(shape), (), (Store(0, flat(shape), e),))


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary(op, dtype):
    if dtype is DType.bool and op in ("sub", "pow", "div", "mod", "floordiv", "lt", "le", "gt", "ge"):
        pytest.skip("torch has no such bool op")
    shape = (4, 33)
    a, b = sample(dtype, shape), sample(dtype, shape).flip(-1)
    if op in ("div", "mod", "floordiv") and dtype.is_int:
        b = torch.where(b == 0, torch.ones_like(b), b)  # torch raises on integer division by zero
    if op == "pow" and dtype.is_int:
        b = b.abs() % 5
    if op == "div" and dtype.is_int:  # the primitive is C division; torch's trunc mode matches it
        ref = torch.div(a, b, rounding_mode="trunc")
    elif op == "mod" and dtype.is_int:  # integer mod has floor semantics, float mod is fmod
        ref = torch.remainder(a, b)
    elif dtype in (DType.f16, DType.bf16):
        ref = BINARY[op](a.float(), b.float())
        ref = ref.to(TORCH[dtype]) if ref.dtype != torch.bool else ref
    else:
        ref = BINARY[op](a, b)
    (y,) = run_kernel(_binary_kernel(op, dtype, shape), [a, b])
    torch.testing.assert_close(y, ref, equal_nan=True)


def test_max_min_signed_zero_and_nan():
    a = torch.tensor([-0.0, 0.0, float("nan"), 1.0, float("nan")])
    b = torch.tensor([0.0, -0.0, 1.0, float("nan"), float("nan")])
    (y,) = run_kernel(_binary_kernel("max", DType.f32, (5,)), [a, b])
    torch.testing.assert_close(y, torch.maximum(a, b), equal_nan=True)
    assert not torch.signbit(y[0]) and not torch.signbit(y[1])
    (y,) = run_kernel(_binary_kernel("min", DType.f32, (5,)), [a, b])
    torch.testing.assert_close(y, torch.minimum(a, b), equal_nan=True)
    assert torch.signbit(y[0]) and torch.signbit(y[1])


@pytest.mark.parametrize("dtype", [DType.i32, DType.i64])
def test_integer_division_by_zero_gives_zero(dtype):
    info = torch.iinfo(TORCH[dtype])
    a = torch.tensor([7, -7, 0, info.min, info.min, 5], dtype=TORCH[dtype])
    b = torch.tensor([0, 0, 0, -1, 0, -1], dtype=TORCH[dtype])
    for op in ("div", "mod", "floordiv"):
        (y,) = run_kernel(_binary_kernel(op, dtype, (6,)), [a, b])
        assert y[:3].tolist() == [0, 0, 0] and y[4] == 0
    (y,) = run_kernel(_binary_kernel("div", dtype, (6,)), [a, b])
    assert y[5] == -5 and y[3] == info.min  # INT_MIN / -1 wraps


def test_int_pow_negative_exponent():
    a = torch.tensor([1, -1, -1, 2, 0, 3], dtype=torch.int64)
    b = torch.tensor([-3, -3, -2, -1, 3, 0], dtype=torch.int64)
    (y,) = run_kernel(_binary_kernel("pow", DType.i64, (6,)), [a, b])
    assert y.tolist() == [1, -1, 1, 0, 0, 1]


def test_logic_where():
    shape = (3, 17)
    c, a, b = sample(DType.bool, shape), sample(DType.f32, shape), sample(DType.f32, shape).flip(0)
    lc, la, lb = Load(0, flat(shape), DType.bool), Load(1, flat(shape), DType.f32), Load(2, flat(shape), DType.f32)
    sel = E.where(E.op("xor", E.op("and", lc, E.op("not", E.isnan(la))), E.op("or", E.lt(la, lb), E.isnan(lb))),
                  la, lb)
    k = LoopKernel("w", "pointwise", tuple(Buffer(n, tt(t.dtype, shape)) for n, t in
                                           (("c", lc), ("a", la), ("b", lb))),
                   (Buffer("y", tt(DType.f32, shape)),), shape, (), (Store(0, flat(shape), sel),))
    (y,) = run_kernel(k, [c, a, b])
    cond = torch.logical_xor(c & ~torch.isnan(a), (a < b) | torch.isnan(b))
    torch.testing.assert_close(y, torch.where(cond, a, b), equal_nan=True)


@pytest.mark.parametrize("src", ALL)
@pytest.mark.parametrize("dst", ALL)
def test_cast(src, dst):
    shape = (2, 40)
    x = sample(src, shape, special=not dst.is_int, low=-300, high=300)
    k = LoopKernel("c", "pointwise", (Buffer("x", tt(src, shape)),), (Buffer("y", tt(dst, shape)),), shape, (),
                   (Store(0, flat(shape), E.cast(Load(0, flat(shape), src), dst)),))
    (y,) = run_kernel(k, [x])
    torch.testing.assert_close(y, x.to(TORCH[dst]), equal_nan=True)


def test_cast_nan_to_bool_and_bf16_rounding():
    x = torch.tensor([float("nan"), 0.0, -0.0, 1.00390625, 1.01171875, 3e38, -1e-40], dtype=torch.float32)
    for dst in (DType.bool, DType.bf16, DType.f16):
        k = LoopKernel("c", "pointwise", (Buffer("x", tt(DType.f32, (7,))),), (Buffer("y", tt(dst, (7,))),),
                       (7,), (), (Store(0, Var(0), E.cast(Load(0, Var(0), DType.f32), dst)),))
        (y,) = run_kernel(k, [x])
        torch.testing.assert_close(y, x.to(TORCH[dst]), equal_nan=True, rtol=0, atol=0)


# ---- reductions ------------------------------------------------------------------------
RED = {"sum": lambda x: x.sum(-1), "prod": lambda x: x.prod(-1), "max": lambda x: x.amax(-1),
       "min": lambda x: x.amin(-1), "argmax": lambda x: x.argmax(-1), "argmin": lambda x: x.argmin(-1)}


def _reduce_kernel(op, dtype, rows, cols, acc):
    x = Load(0, flat((rows, cols)), dtype)
    value = x if op in ("argmax", "argmin", "max", "min") else E.cast(x, acc)
    rdt = DType.i64 if op in ("argmax", "argmin") else acc
    return LoopKernel("r", "reduction", (Buffer("x", tt(dtype, (rows, cols))),), (Buffer("y", tt(rdt, (rows,))),),
                      (rows,), (cols,), (Reduce(op, value, rdt), Store(0, Var(0), Ref(0, rdt))))


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("op", sorted(RED))
def test_reduce(op, dtype):
    if dtype is DType.bool and op != "sum":
        pytest.skip("torch has no such bool reduction")
    rows, cols = 5, 301
    x = sample(dtype, (rows, cols), special=False)
    if dtype.is_float:
        x[1, 7] = float("nan")
        x[2, 3] = float("inf")
        x[3, 10] = x[3, 20] = 99.0  # ties: first index wins
        x[3, 11] = x[3, 21] = -99.0
    if op == "prod":
        x = torch.where(x.abs() > 1.5, torch.ones_like(x), x) if dtype.is_float else x % 2 + 1
    acc = DType.i64 if dtype in (DType.bool, DType.i32, DType.i64) and op in ("sum", "prod") else \
        (DType.f32 if dtype in (DType.f16, DType.bf16) and op in ("sum", "prod") else dtype)
    (y,) = run_kernel(_reduce_kernel(op, dtype, rows, cols, acc), [x])
    ref = RED[op](x.float() if dtype in (DType.f16, DType.bf16) and op in ("sum", "prod") else x)
    torch.testing.assert_close(y, ref.to(y.dtype), equal_nan=True)


def test_argmax_nan_first_and_all_neg_inf():
    x = torch.tensor([[1.0, float("nan"), 5.0, float("nan")], [-math.inf] * 4])
    (y,) = run_kernel(_reduce_kernel("argmax", DType.f32, 2, 4, DType.f32), [x])
    assert y.tolist() == [1, 0]
    (y,) = run_kernel(_reduce_kernel("argmin", DType.f32, 2, 4, DType.f32), [x])
    assert y.tolist() == [1, 0]


def test_softmax_row_kernel_large_parallel():
    rows, cols = 4096, 130
    shape = (rows, cols)
    x = Load(0, flat(shape), DType.f32)
    m = Ref(0, DType.f32)
    stages = (Reduce("max", x, DType.f32), Reduce("sum", E.exp(E.sub(x, m)), DType.f32),
              Store(0, flat(shape), E.div(E.exp(E.sub(x, m)), Ref(1, DType.f32)), inner=True))
    k = LoopKernel("softmax", "reduction", (Buffer("x", tt(DType.f32, shape)),), (Buffer("y", tt(DType.f32, shape)),),
                   (rows,), (cols,), stages)
    inp = torch.randn(shape) * 5
    (y,) = run_kernel(k, [inp])
    torch.testing.assert_close(y, torch.softmax(inp, -1))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (1, 7), (0,)])
def test_size_zero_and_one(shape):
    (y,) = run_kernel(_unary_kernel("exp", DType.f32, shape), [torch.randn(shape)])
    assert y.shape == shape
    if len(shape) == 2:
        rows, cols = shape
        x = torch.randn(shape)
        (s,) = run_kernel(_reduce_kernel("sum", DType.f32, rows, cols, DType.f32), [x])
        torch.testing.assert_close(s, x.sum(-1))


def test_data_dependent_index_is_clamped():
    table = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    ids = torch.tensor([0, 3, -5, 100, 2], dtype=torch.int64)
    idx = E.add(E.mul(Load(1, Var(0), DType.i64), 3), Var(1))
    k = LoopKernel("emb", "copy", (Buffer("w", tt(DType.f32, (4, 3))), Buffer("ids", tt(DType.i64, (5,)))),
                   (Buffer("y", tt(DType.f32, (5, 3))),), (5, 3), (),
                   (Store(0, flat((5, 3)), Load(0, idx, DType.f32)),))
    (y,) = run_kernel(k, [table, ids])
    torch.testing.assert_close(y[:2], table[[0, 3]])
    flat_ids = (ids[2:, None] * 3 + torch.arange(3)).clamp(0, 11)
    torch.testing.assert_close(y[2:], table.flatten()[flat_ids])


def test_elementwise_is_vectorized_and_threaded_matches():
    n = 1 << 19
    x = Load(0, Var(0), DType.f32)
    e = E.sub(E.mul(E.div(1.0, E.add(1.0, E.exp(E.neg(E.add(E.mul(x, 2.0), 1.0))))), E.tanh(x)), E.abs(x))
    k = LoopKernel("ew", "pointwise", (Buffer("x", tt(DType.f32, (n,))),), (Buffer("y", tt(DType.f32, (n,))),),
                   (n,), (), (Store(0, Var(0), e),))
    module = compile_program(program_of(k), threads=2)
    asm = module.source("asm")
    assert re.search(r"\b(v\w+ps)\s.*%[yz]mm", asm), "no packed SIMD instructions in the elementwise kernel"
    assert "pthread_create" in module.source("llvm") or "minicomp_pool_run" in module.source("llvm")
    inp = torch.randn(n) * 4
    out = torch.empty(n)
    call_entry(module, [inp, out])
    torch.testing.assert_close(out, torch.sigmoid(2 * inp + 1) * torch.tanh(inp) - inp.abs())
