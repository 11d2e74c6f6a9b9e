"""LLVM backend, contractions and windows: hand-built matmul, conv, pool and softmax-row kernels
compiled with compile_program and compared with torch."""
from __future__ import annotations

import math
import re

import pytest
import torch

from llvm_support import TORCH, flat, program_of, run_kernel, sample, tt
from minicomp.codegen.llvm import compile_program
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import (E, Access, Buffer, ConvKernel, Load, LoopKernel, MatmulKernel, PoolKernel,
                                Reduce, Ref, Store, Var)


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
