"""Triton backend: hand-built kernel descriptions run under Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors) against PyTorch, and AOT-compiled for sm_90."""
from __future__ import annotations

import math

import pytest
import torch

from minicomp.codegen.triton import aot_compile, generate
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import E, Access, Buffer, Cast, Const, ConvKernel, Load, LoopKernel, MatmulKernel, PoolKernel, Reduce, Ref, Store, Var
from minicomp.ir.program import Call, Program, Slot
from minicomp.ir.types import TensorType

TORCH = {DType.f32: torch.float32, DType.f64: torch.float64, DType.f16: torch.float16,
         DType.bf16: torch.bfloat16, DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}
KERNELS: list = []  # every kernel the tests ran, compiled for sm_90 at the end


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by triton.jit when the module is loaded


def T(*shape, dt=DType.f32):
    return TensorType(dt, shape)


def program(kernel) -> Program:
    slots = tuple(Slot("input", i, b.type) for i, b in enumerate(kernel.inputs))
    slots += tuple(Slot("output", i, b.type) for i, b in enumerate(kernel.outputs))
    return Program((kernel,), slots, (Call(0, tuple(range(len(slots)))),), 0,
                   len(kernel.inputs), len(kernel.outputs))


def run(kernel, *inputs, max_rblock=2048):
    """Run one kernel through generate/load; returns its outputs (fresh tensors)."""
    KERNELS.append(kernel)
    outs = [torch.full(b.type.shape, 7, dtype=TORCH[b.type.dtype]) for b in kernel.outputs]
    generate(program(kernel), max_rblock=max_rblock).load()(*inputs, *outs)
    return outs[0] if len(outs) == 1 else outs


def rowmajor(*vars_and_sizes):
    """Flat index of Vars over a row-major shape: rowmajor((Var(0), 4), (Var(1), 8))."""
    idx = None
    for var, size in vars_and_sizes:
        idx = var if idx is None else E.add(E.mul(idx, size), var)
    return idx


def pointwise(shape, in_types, out_dt, body):
    """A pointwise kernel over ``shape`` whose single store is ``body(*loads)``."""
    idx = rowmajor(*[(Var(d), s) for d, s in enumerate(shape)])
    loads = [Load(i, idx, dt) for i, dt in enumerate(in_types)]
    value = body(*loads)
    return LoopKernel("pw", "pointwise", tuple(Buffer(f"a{i}", T(*shape, dt=dt)) for i, dt in enumerate(in_types)),
                      (Buffer("o", T(*shape, dt=out_dt)),), tuple(shape), (), (Store(0, idx, E.cast(value, out_dt)),))


def special(dt):
    x = torch.randn(6, 8, dtype=torch.float64) * 2
    x[0, :4] = torch.tensor([math.nan, math.inf, -math.inf, -0.0], dtype=torch.float64)
    return x.to(TORCH[dt])


def test_exp_example():
    idx = E.add(E.mul(Var(0), 8), Var(1))
    k = LoopKernel(name="k", kind="pointwise", inputs=(Buffer("a", T(4, 8)),), outputs=(Buffer("o", T(4, 8)),),
                   outer=(4, 8), inner=(), stages=(Store(0, idx, E.exp(Load(0, idx, DType.f32))),))
    a = torch.randn(4, 8)
    torch.testing.assert_close(run(k, a), a.exp())


@pytest.mark.parametrize("dt", [DType.f32, DType.f64, DType.f16, DType.bf16])
def test_float_chain_rounds_like_eager(dt):
    def body(x, y):
        c = lambda e: E.cast(e, dt)
        t = E.add(E.mul(E.tanh(x), 2.0), E.erf(y))
        u = E.sub(E.max(x, y), E.abs(E.min(x, y)))
        v = E.where(E.gt(x, 0.5), E.sqrt(E.abs(x)), E.div(E.sin(y), E.add(E.cos(x), 3.0)))
        w = E.add(E.pow(E.abs(y), 1.5), E.floor(x))
        return E.add(E.add(t, u), E.add(v, E.add(w, E.ceil(E.log(E.add(E.exp(E.neg(y)), 1.0))))))
    x, y = special(dt), special(dt).flip(0)
    f = lambda x, y: ((x.tanh() * 2 + torch.erf(y)) + (torch.maximum(x, y) - torch.minimum(x, y).abs())) + (
        torch.where(x > 0.5, x.abs().sqrt(), y.sin() / (x.cos() + 3)) + (y.abs().pow(1.5) + x.floor()
                                                                          + (torch.exp(-y) + 1).log().ceil()))
    torch.testing.assert_close(run(pointwise((6, 8), [dt, dt], dt, body), x, y), f(x, y), equal_nan=True)


def test_max_min_propagate_nan_and_fmod():
    x = torch.tensor([[math.nan, 1.0, -2.0, 5.5], [3.0, math.nan, -0.0, -7.25]])
    y = torch.tensor([[0.0, math.nan, 4.0, 2.0], [math.nan, 1.0, 0.0, 3.0]])
    k = pointwise((2, 4), [DType.f32, DType.f32], DType.f32, lambda a, b: E.add(E.max(a, b), E.min(a, b)))
    torch.testing.assert_close(run(k, x, y), torch.maximum(x, y) + torch.minimum(x, y), equal_nan=True)
    k = pointwise((2, 4), [DType.f32, DType.f32], DType.f32, lambda a, b: E.mod(a, E.add(E.abs(b), 1.0)))
    torch.testing.assert_close(run(k, x, y), torch.fmod(x, y.abs() + 1), equal_nan=True)


@pytest.mark.parametrize("dt", [DType.i32, DType.i64])
def test_integer_ops(dt):
    a = torch.tensor([[-7, -6, -1, 0], [1, 5, 6, 2**20]], dtype=TORCH[dt])
    b = torch.tensor([[3, -4, 2, -3], [-2, 3, 4, 7]], dtype=TORCH[dt])
    k = pointwise((2, 4), [dt, dt], dt, lambda x, y: E.add(E.mul(E.mod(x, y), 1000), E.floordiv(x, y)))
    torch.testing.assert_close(run(k, a, b), torch.remainder(a, b) * 1000 + torch.div(a, b, rounding_mode="floor"))
    k = pointwise((2, 4), [dt, dt], dt, lambda x, y: E.add(E.div(x, y), E.pow(y, 3)))
    torch.testing.assert_close(run(k, a, b), torch.div(a, b, rounding_mode="trunc") + b.pow(3))
    k = pointwise((2, 4), [dt, dt], DType.f32, lambda x, y: E.add(Cast(E.max(x, y), DType.f32), Cast(E.neg(x), DType.f32)))
    torch.testing.assert_close(run(k, a, b), torch.maximum(a, b).float() + (-a).float())


def test_bool_logic_casts_and_isnan():
    x = special(DType.f32)
    m = torch.rand(6, 8) > 0.5
    k = pointwise((6, 8), [DType.f32, DType.bool], DType.bool,
                  lambda a, b: E.xor(E.or_(E.isnan(a), E.and_(b, E.not_(E.lt(a, 0.0)))), E.eq(Cast(a, DType.i32), 1))
                  if hasattr(E, "or_") else
                  E.op("xor", E.op("or", E.isnan(a), E.op("and", b, E.op("not", E.lt(a, 0.0)))),
                       E.eq(Cast(a, DType.i32), Const(1, DType.i32))))
    want = (x.isnan() | (m & ~(x < 0))) ^ (x.nan_to_num(0, 0, 0).to(torch.int32) == 1)
    torch.testing.assert_close(run(k, x, m), want)
    k = pointwise((6, 8), [DType.bool], DType.f16, lambda b: E.add(Cast(b, DType.f16), Const(0.5, DType.f16)))
    torch.testing.assert_close(run(k, m), m.half() + 0.5)


def test_f64_constant_keeps_precision():
    k = pointwise((3,), [DType.f64], DType.f64, lambda a: E.add(a, Const(0.1, DType.f64)))
    a = torch.tensor([1.0, 2.0, 1e-17], dtype=torch.float64)
    torch.testing.assert_close(run(k, a), a + 0.1, rtol=0, atol=0)


def test_size_zero_and_scalar():
    k = pointwise((0, 4), [DType.f32], DType.f32, lambda a: E.exp(a))
    assert run(k, torch.empty(0, 4)).shape == (0, 4)
    k = LoopKernel("s", "pointwise", (Buffer("a", T()),), (Buffer("o", T()),), (), (),
                   (Store(0, Const(0, DType.i64), E.neg(Load(0, Const(0, DType.i64), DType.f32))),))
    torch.testing.assert_close(run(k, torch.tensor(2.5)), torch.tensor(-2.5))


def reduction(op, dt, out_dt, outer=(3,), inner=(5, 4)):
    ov = [(Var(d), s) for d, s in enumerate(outer)]
    iv = [(Var(len(outer) + d), s) for d, s in enumerate(inner)]
    x = Load(0, rowmajor(*ov, *iv), dt)
    return LoopKernel("r", "reduction", (Buffer("x", T(*outer, *inner, dt=dt)),), (Buffer("o", T(*outer, dt=out_dt)),),
                      outer, inner, (Reduce(op, x, out_dt), Store(0, rowmajor(*ov), Ref(0, out_dt))))


@pytest.mark.parametrize("max_rblock", [2048, 8])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min", "argmax", "argmin"])
def test_reductions_with_nan(op, max_rblock):
    x = torch.randn(3, 5, 4)
    x[0, 2, 1] = math.nan
    x[1, :, :] = 1.5  # ties: first index wins
    x[2, 3, :] = math.nan
    out_dt = DType.i64 if op.startswith("arg") else DType.f32
    got = run(reduction(op, DType.f32, out_dt), x, max_rblock=max_rblock)
    flat = x.reshape(3, 20)
    want = {"sum": flat.sum(1), "prod": flat.prod(1), "max": flat.amax(1), "min": flat.amin(1),
            "argmax": flat.argmax(1), "argmin": flat.argmin(1)}[op]
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("dt", [DType.f16, DType.bf16, DType.i32])
def test_sum_low_precision_and_int(dt):
    x = (torch.randn(3, 5, 4) * 10).to(TORCH[dt])
    got = run(reduction("sum", dt, dt), x, max_rblock=8)
    torch.testing.assert_close(got, x.reshape(3, 20).sum(1, dtype=TORCH[dt]))
    torch.testing.assert_close(run(reduction("max", dt, dt), x), x.reshape(3, 20).amax(1))


@pytest.mark.parametrize("max_rblock", [2048, 4])
def test_softmax_and_layer_norm_one_kernel(max_rblock):
    n = 10
    idx = rowmajor((Var(0), 3), (Var(1), n))
    x = Load(0, idx, DType.f32)
    shifted = E.sub(x, Ref(0, DType.f32))
    sm = LoopKernel("softmax", "reduction", (Buffer("x", T(3, n)),), (Buffer("o", T(3, n)),), (3,), (n,),
                    (Reduce("max", x, DType.f32), Reduce("sum", E.exp(shifted), DType.f32),
                     Store(0, idx, E.div(E.exp(shifted), Ref(1, DType.f32)), inner=True)))
    a = torch.randn(3, n) * 5
    torch.testing.assert_close(run(sm, a, max_rblock=max_rblock), a.softmax(-1))
    mean = E.div(Ref(0, DType.f32), float(n))
    centered = E.sub(x, mean)
    rstd = E.div(1.0, E.sqrt(E.add(E.div(Ref(1, DType.f32), float(n)), 1e-5)))
    w, b = Load(1, Var(1), DType.f32), Load(2, Var(1), DType.f32)
    ln = LoopKernel("layer_norm", "reduction", (Buffer("x", T(3, n)), Buffer("w", T(n)), Buffer("b", T(n))),
                    (Buffer("o", T(3, n)), Buffer("mean", T(3))), (3,), (n,),
                    (Reduce("sum", x, DType.f32), Reduce("sum", E.mul(centered, centered), DType.f32),
                     Store(0, idx, E.add(E.mul(E.mul(centered, rstd), w), b), inner=True),
                     Store(1, Var(0), mean)))
    wt, bs = torch.randn(n), torch.randn(n)
    out, mu = run(ln, a, wt, bs, max_rblock=max_rblock)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(a, (n,), wt, bs))
    torch.testing.assert_close(mu, a.mean(1))


@pytest.mark.parametrize("dt", [DType.f32, DType.f16, DType.bf16, DType.f64, DType.i32])
def test_batched_matmul_with_bias_relu_epilogue(dt):
    bt, m, n, kk = 2, 5, 7, 9
    a = (torch.randn(bt, m, kk) * 3).to(TORCH[dt])
    bmat = (torch.randn(kk, n) * 3).to(TORCH[dt]).t().contiguous().t()  # column-major B via strides
    bias = (torch.randn(n) * 3).to(TORCH[dt])
    acc = DType.f64 if dt is DType.f64 else DType.i32 if dt is DType.i32 else DType.f32
    out_idx = rowmajor((Var(0), bt), (Var(1), m), (Var(2), n))
    val = E.add(E.cast(Ref(0, acc), dt), Load(2, Var(2), dt))
    k = MatmulKernel("mm", (Buffer("a", T(bt, m, kk, dt=dt)), Buffer("b", T(kk, n, dt=dt)), Buffer("bias", T(n, dt=dt))),
                     (Buffer("o", T(bt, m, n, dt=dt)),), (bt,), m, n, kk,
                     Access(0, (m * kk, kk, 1)), Access(1, (0, 1, kk)), acc,
                     (Store(0, out_idx, E.max(val, Const(0, dt))),))
    got = run(k, a, bmat.t().contiguous(), bias)  # buffer holds B^T row-major = B column-major
    if dt is DType.i32:
        want = torch.clamp_min(a @ bmat + bias, 0)
    else:
        want = torch.relu((a.double() @ bmat.double()).to(TORCH[acc]).to(TORCH[dt]) + bias)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("groups,stride,padding,dilation", [(1, (1, 1), (1, 1), (1, 1)), (2, (2, 1), (0, 2), (1, 2))])
def test_conv2d_implicit_gemm(groups, stride, padding, dilation):
    n, cin, h, w, cout, kh, kw = 2, 4, 7, 6, 6, 3, 2
    x, wt, bias = torch.randn(n, cin, h, w), torch.randn(cout, cin // groups, kh, kw), torch.randn(cout)
    want = torch.nn.functional.conv2d(x, wt, bias, stride, padding, dilation, groups)
    oh, ow = want.shape[2:]
    xs = TensorType(DType.f32, x.shape).strides
    k = ConvKernel("conv", (Buffer("x", T(*x.shape)), Buffer("w", T(*wt.shape)), Buffer("b", T(cout))),
                   (Buffer("o", T(*want.shape)),), n, cin, h, w, cout, kh, kw, oh, ow, stride, padding, dilation,
                   groups, Access(0, xs), Access(1, TensorType(DType.f32, wt.shape).strides), DType.f32,
                   (Store(0, rowmajor((Var(0), n), (Var(1), cout), (Var(2), oh), (Var(3), ow)),
                          E.add(Ref(0, DType.f32), Load(2, Var(1), DType.f32))),))
    torch.testing.assert_close(run(k, x, wt, bias), want)


@pytest.mark.parametrize("op", ["max", "avg", "avg_nopad", "avg_div"])
def test_pool2d(op):
    x = torch.randn(2, 3, 7, 6)
    x[0, 0, 2, 2] = math.nan
    kernel, stride, padding = (3, 2), (2, 2), (1, 1)
    if op == "max":
        want = torch.nn.functional.max_pool2d(x, kernel, stride, padding)
    else:
        want = torch.nn.functional.avg_pool2d(x, kernel, stride, padding, count_include_pad=op != "avg_nopad",
                                              divisor_override=5 if op == "avg_div" else None)
    oh, ow = want.shape[2:]
    k = PoolKernel("pool", (Buffer("x", T(*x.shape)),), (Buffer("o", T(*want.shape)),), op[:3], 2, 3, 7, 6, oh, ow,
                   kernel, stride, padding, (1, 1), op != "avg_nopad", 5 if op == "avg_div" else 0,
                   Access(0, TensorType(DType.f32, x.shape).strides), DType.f32,
                   (Store(0, rowmajor((Var(0), 2), (Var(1), 3), (Var(2), oh), (Var(3), ow)), Ref(0, DType.f32)),))
    torch.testing.assert_close(run(k, x), want, equal_nan=True)


def test_program_with_arena_intermediate():
    shape = (4, 8)
    k1 = pointwise(shape, [DType.f32], DType.f16, lambda a: E.mul(E.add(E.mul(a, 2.0), 1.0), 0.5))
    k2 = pointwise(shape, [DType.f16, DType.f32], DType.f32, lambda h, a: E.add(Cast(h, DType.f32), a))
    t16, t32 = T(*shape, dt=DType.f16), T(*shape)
    prog = Program((k1, k2), (Slot("input", 0, t32), Slot("arena", 64, t16), Slot("output", 0, t32)),
                   (Call(0, (0, 1)), Call(1, (1, 0, 2))), 128, 1, 1)
    a, out = torch.randn(*shape), torch.empty(*shape)
    module = generate(prog)
    assert "def run(*args)" in module.source and module.source.count("@triton.jit\ndef k") == 2
    module.load()(a, out)
    torch.testing.assert_close(out, ((a * 2 + 1) * 0.5).half().float() + a)
    with pytest.raises(TypeError, match="takes 2 tensors"):
        module.load()(a)


# -- regressions found by random graphs (scripts/deep_run.py --targets triton) ----------------
def check_ir(ir: str, *arrays) -> None:
    """Compile a small text-IR graph for the triton target and compare with PyTorch eager."""
    import numpy as np

    from minicomp.ir import parse
    from minicomp.testing import Case, check_compile
    check_compile(Case(parse(ir), [np.asarray(a) for a in arrays]), targets=("triton",))


def test_matmul_epilogue_index_without_row_var():
    """m == 1: the store index uses only the column var ([1, BN]) but the mask is [BM, BN]."""
    a, b = torch.randn(1, 3), torch.randn(3, 5)
    k = MatmulKernel("mv", (Buffer("a", T(1, 3)), Buffer("b", T(3, 5)), Buffer("bias", T(1))),
                     (Buffer("o", T(5)),), (), 1, 5, 3, Access(0, (3, 1)), Access(1, (5, 1)), DType.f32,
                     (Store(0, Var(1), E.add(Ref(0, DType.f32), Load(2, Const(0, DType.i64), DType.f32))),))
    bias = torch.randn(1)
    torch.testing.assert_close(run(k, a, b, bias), (a @ b)[0] + bias)


def test_vector_matmul_graph():
    check_ir("graph @g(%arg0: f32[1,2], %arg1: f32[1]) {\n  %0 = matmul %arg1, %arg0 : f32[2]\n"
             "  return %0, %arg0, %arg1\n}", torch.randn(1, 2).numpy(), torch.randn(1).numpy())


def test_addmm_broadcast_bias_graph():
    check_ir("graph @g(%b: f32[1], %x: f32[2,3], %w: f32[3,1]) {\n  %0 = addmm %b, %x, %w : f32[2,1]\n"
             "  return %0\n}", torch.randn(1).numpy(), torch.randn(2, 3).numpy(), torch.randn(3, 1).numpy())


def test_zero_dim_constant_output_keeps_its_shape():
    """A graph output folded to a 0-d constant is an alias of a const slot; it stays 0-d."""
    check_ir("graph @g(%x: f32[4]) {\n  %0 = constant {dtype=f32, value=dense<[1.0,-2.0,3.0,0.5] : f32[4]>} : f32[4]\n"
             "  %1 = amin %0 {dims=[0], keepdim=false} : f32[]\n  %2 = add %x, %1 : f32[4]\n  return %1, %2\n}",
             torch.randn(4).numpy())


def test_reduction_with_outer_only_load_and_f64_constant_store():
    """Inner-stage values that use only outer vars, or none (an f64 constant), are broadcast
    to the [XBLOCK, RBLOCK] block (was: pointer-shape error / 'Cannot splat a block tensor')."""
    x, s = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    inner = rowmajor((Var(0), 3), (Var(1), 4))
    stages = (Reduce("sum", E.mul(Load(0, inner, DType.f64), Load(1, Var(0), DType.f64)), DType.f64),
              Store(0, Var(0), Ref(0, DType.f64)),
              Store(1, inner, Const(0.1, DType.f64), inner=True))
    k = LoopKernel("r", "reduction", (Buffer("x", T(3, 4, dt=DType.f64)), Buffer("s", T(3, dt=DType.f64))),
                   (Buffer("o", T(3, dt=DType.f64)), Buffer("c", T(3, 4, dt=DType.f64))), (3,), (4,), stages)
    for rb in (2048, 2):
        o, c = run(k, x, s, max_rblock=rb)
        torch.testing.assert_close(o, (x * s[:, None]).sum(1))
        torch.testing.assert_close(c, torch.full((3, 4), 0.1, dtype=torch.float64))


def test_addmm_full_bias_graph():
    """The bias of an unfused addmm is indexed over the epilogue loops (was: every element read bias[0])."""
    check_ir("graph @g(%b: f64[3,2], %x: f64[3,2], %w: f64[2,2]) {\n  %0 = addmm %b, %x, %w {alpha=1.0, beta=1.0} : f64[3,2]\n"
             "  return %0\n}", torch.randn(3, 2, dtype=torch.float64).numpy(),
             torch.randn(3, 2, dtype=torch.float64).numpy(), torch.randn(2, 2, dtype=torch.float64).numpy())


def test_cast_of_constant_to_bf16():
    """A Cast whose operand is a Python literal (was: ``0.5.to(...)``, an AttributeError)."""
    k = pointwise((2, 3), [DType.bf16], DType.bf16,
                  lambda x: E.add(Cast(x, DType.f32), Cast(Cast(Const(0.3, DType.f32), DType.bf16), DType.f32)))
    x = torch.randn(2, 3).to(torch.bfloat16)
    torch.testing.assert_close(run(k, x), (x.float() + torch.tensor(0.3).to(torch.bfloat16).float()).to(torch.bfloat16))


def test_run_returns_outputs_with_aliases_copied():
    """run(*inputs, *outputs, *constants) returns every output; aliased ones are fresh copies."""
    import numpy as np
    k = pointwise((3,), [DType.f32], DType.f32, lambda a: E.mul(a, 2.0))
    t = T(3)
    prog = Program((k,), (Slot("input", 0, t), Slot("output", 0, t), Slot("const", 0, T(dt=DType.i64))),
                   (Call(0, (0, 1)),), 0, 1, 3, (np.array(5),), ((1, 0), (2, 2)))
    a, c = torch.randn(3), torch.tensor(5)
    out = generate(prog).load()(a, torch.empty(3), torch.empty(0), torch.empty(0), c)
    assert len(out) == 3 and out[1] is not a and out[2].shape == ()
    torch.testing.assert_close(out, [a * 2, a, c])


def test_size_zero_intermediate_in_an_empty_arena():
    """A size-0 intermediate lives in the arena even when the arena has 0 bytes (was: NameError)."""
    check_ir("graph @g(%x: f32[3,0,1,3]) {\n  %0 = logical_and %x, %x : bool[3,0,1,3]\n"
             "  %1 = cumsum %x {dim=1, dtype=none} : f32[3,0,1,3]\n"
             "  %2 = var %x {correction=0.0, dims=[0,1,3], keepdim=true} : f32[1,1,1,1]\n"
             "  %3 = amax %1 {dims=[0,2], keepdim=false} : f32[0,3]\n  return %0, %2, %3\n}",
             torch.randn(3, 0, 1, 3).numpy())


@pytest.mark.parametrize("dt", [DType.f32, DType.f64])
def test_pow_and_tanh_special_values_and_signed_zero(dt):
    """The interpreter's pow/tanh formulas follow C/PyTorch on zeros, infinities and NaN
    (was: tanh(-0.0) gave +0.0, so 1/tanh(-0.0) was +inf instead of -inf)."""
    import itertools
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, math.inf, -math.inf, math.nan, 1e-30, -0.01, 2.5]
    xs, ys = (torch.tensor(v, dtype=TORCH[dt]) for v in zip(*itertools.product(vals, vals)))
    n = len(xs)
    t = T(n, dt=dt)
    ld = lambda b: Load(b, Var(0), dt)
    k = LoopKernel("p", "pointwise", (Buffer("x", t), Buffer("y", t)), (Buffer("o", t), Buffer("t", t)), (n,), (),
                   (Store(0, Var(0), E.pow(ld(0), ld(1))), Store(1, Var(0), E.div(1.0, E.tanh(ld(0))))))
    KERNELS.append(k)
    o, th = torch.empty(n, dtype=TORCH[dt]), torch.empty(n, dtype=TORCH[dt])
    generate(program(k)).load()(xs, ys, o, th)
    want_o, want_t = torch.pow(xs, ys), 1 / torch.tanh(xs)
    torch.testing.assert_close([o, th], [want_o, want_t], equal_nan=True)
    assert torch.equal(torch.signbit(o[~o.isnan()]), torch.signbit(want_o[~o.isnan()]))
    assert torch.equal(torch.signbit(th[~th.isnan()]), torch.signbit(want_t[~th.isnan()]))


def test_aot_compile_sm90_every_kernel():
    """Every kernel the tests above ran also compiles to PTX/cubin for sm_90 (no GPU needed)."""
    if not KERNELS:
        pytest.skip("run with the rest of this file: it compiles the kernels the other tests built")
    kernels = tuple({id(k): k for k in KERNELS}.values())
    prog = Program(kernels, (), (), 0, 0, 0)
    results = aot_compile(generate(prog))
    failed = [f"{r.kernel}: {r.error[-400:]}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    assert all(r.cubin_bytes > 0 and ".target sm_90" in r.ptx for r in results)
