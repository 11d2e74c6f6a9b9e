"""LLVM backend: hand-built kernels compiled with compile_program and compared with torch."""
from __future__ import annotations

import ctypes
import math
import re

import pytest
import torch

from minicomp.codegen.llvm import compile_program
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import (E, Access, Buffer, Call, Const, ConvKernel, Load, LoopKernel, MatmulKernel,
                                PoolKernel, Program, Reduce, Ref, Slot, Store, Var)
from minicomp.ir.types import TensorType
TORCH = {DType.f32: torch.float32, DType.f64: torch.float64, DType.f16: torch.float16,
         DType.bf16: torch.bfloat16, DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}
ALL = list(TORCH)
FLOATS = [DType.f32, DType.f64, DType.f16, DType.bf16]


def flat(shape, dims=None):
    """Row-major flat index expression over loop vars ``dims`` (default 0..rank-1)."""
    dims = list(range(len(shape))) if dims is None else dims
    idx = Const(0, DType.i64)
    step = 1
    for d, n in reversed(list(zip(dims, shape))):
        idx = E.add(idx, E.mul(Var(d), step))
        step *= n
    return idx


def program_of(kernel) -> Program:
    slots = [Slot("input", i, b.type) for i, b in enumerate(kernel.inputs)]
    slots += [Slot("output", i, b.type) for i, b in enumerate(kernel.outputs)]
    return Program(kernels=(kernel,), slots=tuple(slots), calls=(Call(0, tuple(range(len(slots)))),),
                   arena_bytes=0, num_inputs=len(kernel.inputs), num_outputs=len(kernel.outputs))


def call_entry(module, tensors) -> int:
    arr = (ctypes.c_void_p * max(len(tensors), 1))(*[t.data_ptr() for t in tensors])
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(module.entry_address)(arr)


def run_kernel(kernel, inputs, threads=2):
    """Compile ``kernel`` alone and run it; returns its outputs as torch tensors."""
    module = compile_program(program_of(kernel), threads=threads)
    ins = [t.contiguous() for t in inputs]
    outs = [torch.full(b.type.shape, 7, dtype=TORCH[b.type.dtype]) for b in kernel.outputs]
    assert call_entry(module, ins + outs) == 0
    return outs


def tt(dtype: DType, shape) -> TensorType:
    return TensorType(dtype, tuple(shape))


def sample(dtype: DType, shape, special=True, low=-4.0, high=4.0):
    """Random values of ``dtype`` including NaN/inf/-0.0 for floats when ``special``."""
    g = torch.Generator().manual_seed(0)
    n = 1
    for s in shape:
        n *= s
    if dtype is DType.bool:
        return (torch.rand(n, generator=g) > 0.5).reshape(shape)
    if dtype.is_int:
        return torch.randint(-9, 10, (n,), generator=g).to(TORCH[dtype]).reshape(shape)
    x = torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low
    if special and n >= 8:
        x[:5] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0], dtype=torch.float64)
    return x.to(TORCH[dtype]).reshape(shape)


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


# ---- contractions ----------------------------------------------------------------------
def _matmul(M, N, K, dtype=DType.f32, transb=False, batch=(), bias=False, relu=False, bcast_b=False):
    nb = len(batch)
    ta = tt(dtype, batch + (M, K))
    bshape = (() if bcast_b else batch) + ((N, K) if transb else (K, N))
    tb = tt(dtype, bshape)
    tc = tt(dtype, batch + (M, N))
    sb = ((0,) * nb if bcast_b else tb.strides[:nb]) + ((1, K) if transb else (N, 1))
    acc = DType.f32 if dtype in (DType.f16, DType.bf16) else dtype
    ins = [Buffer("a", ta), Buffer("b", tb)]
    val = Ref(0, acc)
    if bias:
        ins.append(Buffer("bias", tt(dtype, (N,))))
        val = E.add(val, E.cast(Load(2, Var(nb + 1), dtype), acc))
    if relu:
        val = E.max(val, 0.0)
    k = MatmulKernel("mm", tuple(ins), (Buffer("c", tc),), batch, M, N, K, Access(0, ta.strides), Access(1, sb),
                     acc, (Store(0, flat(tc.shape), val),))
    return k, bshape


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64, DType.f16, DType.bf16, DType.i32, DType.i64])
@pytest.mark.parametrize("M,N,K,transb,batch", [
    (1, 7, 5, False, ()), (3, 5, 0, False, ()), (13, 37, 29, False, ()), (64, 64, 64, False, ()),
    (100, 70, 90, True, ()), (2, 300, 256, True, ()), (33, 50, 40, False, (3,)), (0, 4, 4, False, ()),
])
def test_matmul(M, N, K, transb, batch, dtype):
    k, bshape = _matmul(M, N, K, dtype, transb, batch)
    a, b = sample(dtype, batch + (M, K), special=False, low=-1, high=1), \
        sample(dtype, bshape, special=False, low=-1, high=1)
    (c,) = run_kernel(k, [a, b])
    bt = b.transpose(-1, -2) if transb else b
    ref = (a.float() @ bt.float()).to(c.dtype) if dtype in (DType.f16, DType.bf16) else a @ bt
    torch.testing.assert_close(c, ref)


def test_matmul_epilogue_broadcast_batch_and_parallel():
    k, _ = _matmul(200, 130, 300, DType.f32, batch=(2,), bias=True, relu=True, bcast_b=True)
    a, b, bias = torch.randn(2, 200, 300) / 4, torch.randn(300, 130) / 4, torch.randn(130)
    (c,) = run_kernel(k, [a, b, bias])
    torch.testing.assert_close(c, torch.relu(a @ b + bias))


def test_matmul_is_vectorized_fma():
    k, _ = _matmul(256, 256, 256)
    asm = compile_program(program_of(k)).source("asm")
    assert re.search(r"vfmadd\w*ps\s.*%[yz]mm", asm)


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64, DType.bf16])
@pytest.mark.parametrize("cfg", [
    dict(n=2, cin=3, cout=4, h=9, w=8, kh=3, kw=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(n=1, cin=4, cout=6, h=10, w=11, kh=3, kw=2, stride=(2, 3), padding=(2, 1), dilation=(2, 1), groups=2),
    dict(n=1, cin=5, cout=5, h=7, w=7, kh=3, kw=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=5),
    dict(n=1, cin=2, cout=3, h=1, w=1, kh=1, kw=1, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
])
def test_conv2d(cfg, dtype):
    c = dict(cfg)
    oh = (c["h"] + 2 * c["padding"][0] - c["dilation"][0] * (c["kh"] - 1) - 1) // c["stride"][0] + 1
    ow = (c["w"] + 2 * c["padding"][1] - c["dilation"][1] * (c["kw"] - 1) - 1) // c["stride"][1] + 1
    tx = tt(dtype, (c["n"], c["cin"], c["h"], c["w"]))
    tw = tt(dtype, (c["cout"], c["cin"] // c["groups"], c["kh"], c["kw"]))
    to = tt(dtype, (c["n"], c["cout"], oh, ow))
    acc = DType.f32 if dtype in (DType.f16, DType.bf16) else dtype
    val = E.add(Ref(0, acc), E.cast(Load(2, Var(1), dtype), acc))
    k = ConvKernel("conv", (Buffer("x", tx), Buffer("w", tw), Buffer("b", tt(dtype, (c["cout"],)))),
                   (Buffer("y", to),), oh=oh, ow=ow, x=Access(0, tx.strides), weight=Access(1, tw.strides),
                   acc_dtype=acc, stores=(Store(0, flat(to.shape), val),), **c)
    x, w, bias = (sample(dtype, t.shape, special=False, low=-1, high=1) for t in (tx, tw, tt(dtype, (c["cout"],))))
    (y,) = run_kernel(k, [x, w, bias])
    ref = torch.nn.functional.conv2d(x.float(), w.float(), bias.float(), c["stride"], c["padding"],
                                     c["dilation"], c["groups"]).to(TORCH[dtype])
    if dtype is DType.f64:
        ref = torch.nn.functional.conv2d(x, w, bias, c["stride"], c["padding"], c["dilation"], c["groups"])
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("dtype", [DType.f32, DType.bf16, DType.i64])
@pytest.mark.parametrize("op,kernel,stride,padding,dilation,cip,divisor", [
    ("max", (3, 3), (2, 2), (1, 1), (1, 1), True, 0), ("max", (2, 3), (1, 2), (0, 1), (2, 1), True, 0),
    ("avg", (3, 3), (2, 2), (1, 1), (1, 1), True, 0), ("avg", (3, 2), (2, 1), (1, 1), (1, 1), False, 0),
    ("avg", (2, 2), (2, 2), (0, 0), (1, 1), True, 3),
])
def test_pool(op, kernel, stride, padding, dilation, cip, divisor, dtype):
    if op == "avg" and dtype.is_int:
        pytest.skip("torch avg_pool2d has no integer CPU kernel")
    n, c, h, w = 2, 3, 9, 8
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    tx, to = tt(dtype, (n, c, h, w)), tt(dtype, (n, c, oh, ow))
    acc = DType.f32 if dtype in (DType.f16, DType.bf16) else dtype
    k = PoolKernel("pool", (Buffer("x", tx),), (Buffer("y", to),), op, n, c, h, w, oh, ow, kernel, stride, padding,
                   dilation, cip, divisor, Access(0, tx.strides), acc, (Store(0, flat(to.shape), Ref(0, acc)),))
    x = sample(dtype, tx.shape, special=False)
    if dtype.is_float:
        x[0, 0, 0, 0] = float("nan")
    (y,) = run_kernel(k, [x])
    F = torch.nn.functional
    xin = x.float() if dtype is DType.bf16 else x
    if op == "max":
        ref = F.max_pool2d(xin, kernel, stride, padding, dilation)
    else:
        ref = F.avg_pool2d(xin, kernel, stride, padding, count_include_pad=cip, divisor_override=divisor or None)
    torch.testing.assert_close(y, ref.to(y.dtype), equal_nan=True)


def _softmax_kernel(shape, out_index, out_dtype=DType.f32):
    rows, cols = shape
    x = Load(0, flat(shape), DType.f32)
    m = Ref(0, DType.f32)
    value = E.div(E.exp(E.sub(x, m)), Ref(1, DType.f32))
    if out_dtype is not DType.f32:
        value = E.cast(value, out_dtype)
    stages = (Reduce("max", x, DType.f32), Reduce("sum", E.exp(E.sub(x, m)), DType.f32),
              Store(0, out_index, value, inner=True))
    out_shape = (rows * cols,)
    return LoopKernel("softmax", "reduction", (Buffer("x", tt(DType.f32, shape)),),
                      (Buffer("y", tt(out_dtype, out_shape)),), (rows,), (cols,), stages)


def test_softmax_exp_is_computed_once_and_reused_exactly():
    """The sum stage leaves exp(x - max) in the output; the store reloads it (same bits, NaN/inf kept)."""
    from minicomp.codegen.llvm.loops import _spills
    rows, cols = 64, 37
    x = torch.randn(rows, cols) * 5
    x[1, 3] = math.nan
    x[2, 0] = math.inf
    x[3, :] = -math.inf
    x[4, 5] = -math.inf
    x[5, :] = 0.0
    cases = {"rowmajor": (flat((rows, cols)), lambda y: y.reshape(rows, cols)),
             "reversed": (E.add(E.mul(Var(0), cols), E.sub(cols - 1, Var(1))),
                          lambda y: y.reshape(rows, cols).flip(-1)),
             "transposed": (E.add(E.mul(Var(1), rows), Var(0)), lambda y: y.reshape(cols, rows).t())}
    want = torch.softmax(x, -1)
    for name, (index, view) in cases.items():
        k = _softmax_kernel((rows, cols), index)
        assert _spills(k) == {1: 2}, name
        for threads in (1, 2):
            (y,) = run_kernel(k, [x], threads=threads)
            torch.testing.assert_close(view(y), want, equal_nan=True, msg=name)


def test_softmax_exp_not_spilled_when_unsafe():
    from minicomp.codegen.llvm.loops import _spills
    rows, cols = 8, 5
    x = torch.randn(rows, cols)
    # every inner point of a row writes the same element: temporaries would be overwritten
    many_to_one = _softmax_kernel((rows, cols), Var(0))
    assert _spills(many_to_one) == {}
    (y,) = run_kernel(many_to_one, [x])
    torch.testing.assert_close(y[:rows], torch.softmax(x, -1)[:, -1])
    # a narrower output dtype cannot hold the f32 value exactly
    half = _softmax_kernel((rows, cols), flat((rows, cols)), DType.f16)
    assert _spills(half) == {}
    (y,) = run_kernel(half, [x])
    torch.testing.assert_close(y.reshape(rows, cols), torch.softmax(x, -1).half())


@pytest.mark.parametrize("fn", [
    lambda x: torch.nn.functional.max_pool2d(x, 2, ceil_mode=True),  # last window past the edge
    lambda x: torch.nn.functional.avg_pool2d(x, 3, 2, ceil_mode=True),
    lambda x: torch.nn.functional.max_pool2d(x, 2),  # every tap inside: no bounds checks emitted
    lambda x: torch.nn.functional.max_pool2d(x, (3, 2), (2, 1), (1, 0)),  # rows checked, columns not
])
def test_pool_bounds_checks_only_where_a_tap_can_fall_outside(fn):
    import minicomp
    x = torch.randn(2, 3, 9, 9)
    x[0, 0, 8, 8] = float("nan")  # in the last (partial) window
    x[1, 2, 0, 0] = float("inf")
    cm = minicomp.compile(fn, (x,), target="cpu", cache=False)
    torch.testing.assert_close(cm(x), fn(x), equal_nan=True)
