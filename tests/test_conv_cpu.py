"""conv2d on the CPU: the implicit-GEMM path and the direct fallback against PyTorch, and channels-last.

Shapes cover tile edges (output widths that are not a multiple of the tile, output
channels that are not a multiple of the micro-kernel's 6 rows), padding wider than
the kernel, dilation, groups, batches, bias and epilogues.
"""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import minicomp
from minicomp.codegen.llvm import conv_gemm
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Access, Buffer, ConvKernel, Ref, Store

from test_llvm_kernels import flat, run_kernel, tt


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path / "cache"))


CASES = [
    dict(n=1, cin=3, cout=8, k=3, h=7, w=9, padding=1),
    dict(n=2, cin=4, cout=5, k=(2, 3), h=6, w=5, padding=(1, 2)),
    dict(n=3, cin=4, cout=12, k=3, h=8, w=8, groups=2, bias=False),
    dict(n=1, cin=2, cout=7, k=3, h=9, w=11, dilation=2, padding=2),
    dict(n=1, cin=3, cout=8, k=(3, 2), h=10, w=12, dilation=(2, 3), padding=(1, 2)),  # row / column dilation apart
    dict(n=2, cin=1, cout=6, k=5, h=28, w=28),
    dict(n=1, cin=16, cout=20, k=1, h=5, w=3),
    dict(n=1, cin=3, cout=4, k=3, h=9, w=9, stride=2, padding=1),    # strided: direct kernel
    dict(n=1, cin=3, cout=3, k=3, h=5, w=5, groups=3, padding=1),    # depthwise: direct kernel
    dict(n=1, cin=2, cout=3, k=2, h=1, w=1, padding=1),
    dict(n=1, cin=3, cout=6, k=3, h=4, w=4, padding=3),
]


def _conv(c, dtype):
    m = torch.nn.Conv2d(c["cin"], c["cout"], c["k"], stride=c.get("stride", 1), padding=c.get("padding", 0),
                        dilation=c.get("dilation", 1), groups=c.get("groups", 1), bias=c.get("bias", True))
    return m.to(dtype).eval(), torch.randn(c["n"], c["cin"], c["h"], c["w"], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv_matches_torch(c, dtype):
    m, x = _conv(c, dtype)
    cm = minicomp.compile(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(cm(x), m(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_low_precision_accumulates_in_f32(dtype):
    m, x = _conv(dict(n=2, cin=8, cout=10, k=3, h=9, w=7, padding=1), dtype)
    with torch.no_grad():
        ref = F.conv2d(x.float(), m.weight.float(), m.bias.float(), padding=1).to(dtype)
    cm = minicomp.compile(m, (x,))
    torch.testing.assert_close(cm(x), ref)


def test_conv_epilogue_residual_relu_and_nonfinite_inputs():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).eval()

    def f(x, r):
        return torch.relu(conv(x) + r)
    x, r = torch.randn(2, 8, 10, 13), torch.randn(2, 8, 10, 13)
    x[0, 1, 2, 3], x[1, 0, 0, 0], r[0, 0, 4, 4] = float("nan"), float("inf"), float("-inf")
    cm = minicomp.compile(f, (x, r))
    with torch.no_grad():
        torch.testing.assert_close(cm(x, r), f(x, r), equal_nan=True)


def test_conv_reads_channels_last_input():
    m, x = _conv(dict(n=2, cin=6, cout=9, k=3, h=8, w=7, padding=1), torch.float32)
    xcl = x.contiguous(memory_format=torch.channels_last)
    cm = minicomp.compile(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(cm(xcl), m(x))


def _kernel(dtype, n=2, cin=5, cout=7, h=6, w=9, kh=3, kw=3, pad=(1, 1), x_order=None, y_order=None):
    oh, ow = h + 2 * pad[0] - kh + 1, w + 2 * pad[1] - kw + 1
    tx = tt(dtype, (n, cin, h, w)).with_order(x_order)
    tw = tt(dtype, (cout, cin, kh, kw))
    to = tt(dtype, (n, cout, oh, ow)).with_order(y_order)
    acc = dtype.compute
    return ConvKernel("conv", (Buffer("x", tx), Buffer("w", tw)), (Buffer("y", to),), n=n, cin=cin, h=h, w=w,
                      cout=cout, kh=kh, kw=kw, oh=oh, ow=ow, stride=(1, 1), padding=pad, dilation=(1, 1), groups=1,
                      x=Access(0, tx.strides), weight=Access(1, tw.strides), acc_dtype=acc,
                      stores=(Store(0, flat(to.shape, None) if y_order is None else _flat_strided(to), Ref(0, acc)),))


def _flat_strided(t):
    from minicomp.ir.kernel import E, Var
    idx = E.const(0, DType.i64)
    for d, s in enumerate(t.strides):
        idx = E.add(idx, E.mul(Var(d), E.const(s, DType.i64)))
    return idx


def test_kernel_nhwc_input_and_output_strides():
    k = _kernel(DType.f32, x_order=(0, 2, 3, 1), y_order=(0, 2, 3, 1))
    assert conv_gemm.applies(k)
    x, w = torch.randn(2, 5, 6, 9), torch.randn(7, 5, 3, 3)
    xin = x.permute(0, 2, 3, 1).contiguous()  # the NHWC buffer, logically [n, c, h, w]
    (y,) = run_kernel(k, [xin, w])
    ref = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(y.reshape(2, 6, 9, 7).permute(0, 3, 1, 2), ref)


@pytest.mark.parametrize("dtype", [DType.i32, DType.i64])
def test_integer_conv_uses_the_direct_kernel(dtype):
    k = _kernel(dtype)
    assert not conv_gemm.applies(k)
    tdt = {DType.i32: torch.int32, DType.i64: torch.int64}[dtype]
    x, w = torch.randint(-5, 6, (2, 5, 6, 9), dtype=tdt), torch.randint(-5, 6, (7, 5, 3, 3), dtype=tdt)
    (y,) = run_kernel(k, [x, w])
    torch.testing.assert_close(y, F.conv2d(x.double(), w.double(), padding=1).to(tdt))


def test_implicit_gemm_is_used_and_vectorized():
    m, x = _conv(dict(n=1, cin=16, cout=16, k=3, h=20, w=20, padding=1), torch.float32)
    cm = minicomp.compile(m, (x,))
    assert [k.kind for k in cm.kernels] == ["conv"]
    assert "mc.gemm.cmicro." in cm.source("llvm")  # the shared implicit-GEMM tile
    assert re.search(r"vfmadd\w*ps\s.*%[yz]mm", cm.source("asm"))


@pytest.mark.parametrize("batch", [1, 4])
def test_forced_channels_last_matches_and_adds_no_copy(batch):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            y = F.max_pool2d(torch.relu(self.a(x)), 2)
            z = torch.relu(self.b(y)) + y
            return F.avg_pool2d(z, 2).sum(dim=(2, 3))
    m, x = Net().eval(), torch.randn(batch, 3, 12, 10)
    ref_cm = minicomp.compile(m, (x,))
    cm = minicomp.compile(m, (x,), channels_last=True)
    assert [k.kind for k in cm.kernels] == [k.kind for k in ref_cm.kernels]
    assert "copy" not in [k.kind for k in cm.kernels]
    assert "{0,2,3,1}" in str(cm.graph)
    assert "channels-last (NHWC) for conv2d" in cm.explain()
    with torch.no_grad():
        torch.testing.assert_close(cm(x), m(x))
