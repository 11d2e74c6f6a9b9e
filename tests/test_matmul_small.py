"""The unpacked matmul paths and the cancellable 2-way split.

Linears (B unit-stride along k; panel tiles since weights are read at call time, see also
tests/test_matmul_panel.py): shapes around the tile edges (rows % 3, columns % 4,
k % vector width) so clamped edge rows/columns and the k tail are all exercised, with and
without epilogues. Row tiles (B unit-stride along n, e.g. attention's ``@ v``): rows % 6,
strided A, batches that share or do not share B.
"""
from __future__ import annotations

import math

import pytest
import torch

import minicomp
from minicomp.codegen.llvm.matmul import DT_COLS, DT_ROWS, RT_ROWS


@pytest.mark.parametrize("m,n,k", [(64, 384, 128), (7, 5, 9), (7, 5, 130), (65, 31, 133), (3, 4, 128), (10, 1, 200),
                                   (5, 17, 2048), (96, 40, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_edges_match(m, n, k, dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n).to(dtype)
    x = torch.randn(m, k, dtype=dtype)
    with torch.no_grad():
        f = lambda x: torch.nn.functional.gelu(lin(x))  # noqa: E731
        cm = minicomp.compile(f, (x,), cache=False)
        torch.testing.assert_close(cm(x), f(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_products_match(threads):
    torch.manual_seed(1)
    qkv = torch.randn(2, 64, 3, 4, 32).permute(2, 0, 3, 1, 4)  # non-contiguous head views
    q, k, v = qkv[0], qkv[1], qkv[2]

    def f(q, k, v):
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(32))
        return s.softmax(-1) @ v

    cm = minicomp.compile(f, (q, k, v), cache=False, threads=threads)
    torch.testing.assert_close(cm(q, k, v), f(q, k, v))


def test_broadcast_batch_and_specials():
    a = torch.randn(3, 1, 10, 136)
    b = torch.randn(5, 13, 136).transpose(-2, -1)  # (5, 136, 13), unit stride along k
    a[0, 0, 2, 5] = float("nan")
    a[2, 0, 9, 0] = float("inf")
    a[1, 0, 0, :] = -0.0
    cm = minicomp.compile(lambda a, b: a @ b, (a, b), cache=False)
    got, want = cm(a, b), a @ b
    torch.testing.assert_close(got, want, equal_nan=True)
    assert torch.equal(torch.signbit(got[1, :, 0]), torch.signbit(want[1, :, 0]))


@pytest.mark.parametrize("m,n", [(0, 8), (9, 0), (1, 8), (DT_ROWS, DT_COLS)])
def test_degenerate_sizes(m, n):
    a = torch.randn(m, 128)
    b = torch.randn(n, 128)
    cm = minicomp.compile(lambda a, b: a @ b.t(), (a, b), cache=False)
    torch.testing.assert_close(cm(a, b), a @ b.t())


def test_k_smaller_than_vector_uses_another_path():
    a = torch.randn(12, 3)
    b = torch.randn(12, 3)
    cm = minicomp.compile(lambda a, b: a @ b.t(), (a, b), cache=False)
    torch.testing.assert_close(cm(a, b), a @ b.t())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32])
def test_other_dtypes_unchanged(dtype):
    a = (torch.randn(20, 40) * 4).to(dtype)
    b = (torch.randn(30, 40) * 4).to(dtype)
    cm = minicomp.compile(lambda a, b: a @ b.t(), (a, b), cache=False)
    torch.testing.assert_close(cm(a, b), a @ b.t())


def test_call_time_weight_uses_panel_tiles():
    # B = w.T read at call time (w an input, so the layout pass cannot store it [k, n]): packed per call
    # into panels for row tiles (matmul_panel), not the dot tiles that read it in place.
    x, w = torch.randn(64, 128), torch.randn(384, 128)
    cm = minicomp.compile(torch.nn.functional.linear, (x, w), cache=False)
    torch.testing.assert_close(cm(x, w), torch.nn.functional.linear(x, w))
    src = cm.source("llvm-unopt")
    assert ".ptile" in src and ".dtile" not in src and "mc.gemm.packb" not in src


def test_dot_tiles_when_forced(monkeypatch):
    monkeypatch.setenv("MINICOMP_CODEGEN_PATHS", "matmul=dtile")
    x, w = torch.randn(64, 128), torch.randn(384, 128)
    cm = minicomp.compile(torch.nn.functional.linear, (x, w), cache=False)
    torch.testing.assert_close(cm(x, w), torch.nn.functional.linear(x, w))
    assert ".dtile" in cm.source("llvm-unopt")


def test_constant_linear_weight_uses_row_tiles():
    lin = torch.nn.Linear(128, 384)
    x = torch.randn(64, 128)
    with torch.no_grad():  # freeze=True: weights are constants the layout pass may store [k, n]
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True)
        torch.testing.assert_close(cm(x), lin(x))
    src = cm.source("llvm-unopt")
    assert ".rtile" in src and ".dtile" not in src and "mc.gemm.packb" not in src
    assert "stored [k, n]" in cm.explain()


@pytest.mark.parametrize("m,n,k", [(64, 32, 64), (RT_ROWS, 16, 1), (RT_ROWS + 1, 16, 5), (65, 48, 33), (96, 64, 300),
                                   (13, 17, 9), (8, 100, 40), (RT_ROWS, 3, 7), (20, 130, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_row_tiles_match(m, n, k, dtype, threads):
    torch.manual_seed(2)
    a = torch.randn(3, k, m, dtype=dtype).transpose(-2, -1)  # A strided along k
    b = torch.randn(3, k, n, dtype=dtype) / math.sqrt(k)  # O(1) results, as attention's probabilities give
    a[0, 1, 0] = float("nan")
    a[1, 2, k - 1] = float("inf")
    f = lambda a, b: torch.relu(a @ b) + 1.0  # noqa: E731
    cm = minicomp.compile(f, (a, b), cache=False, threads=threads)
    torch.testing.assert_close(cm(a, b), f(a, b), equal_nan=True)
    assert ".rtile" in cm.source("llvm-unopt")


def test_row_tiles_shared_b_and_negative_zero():
    a = torch.randn(2, 1, 12, 40)
    b = torch.randn(40, 16)  # one B for every batch
    a[1, 0, 3, :] = -0.0
    cm = minicomp.compile(lambda a, b: a @ b, (a, b), cache=False)
    got, want = cm(a, b), a @ b
    torch.testing.assert_close(got, want)
    assert torch.equal(torch.signbit(got[1, 0, 3]), torch.signbit(want[1, 0, 3]))
    assert ".rtile" in cm.source("llvm-unopt")


@pytest.mark.parametrize("n", [8, 24, 17])
def test_row_tiles_need_whole_vector_pairs(n):
    a = torch.randn(20, 40)
    b = torch.randn(40, n)
    cm = minicomp.compile(lambda a, b: a @ b, (a, b), cache=False)
    torch.testing.assert_close(cm(a, b), a @ b)


@pytest.mark.parametrize("rows,n,k", [(RT_ROWS + 2, 17, 40), (32, 120, 400), (96, 64, 64), (97, 64, 64), (64, 10, 84)])
def test_kn_weights_are_chosen_exactly_where_row_tiles_then_apply(rows, n, k):
    # kn_weight (the layout pass's predicate) restates row_tiles_apply's conditions: check they agree.
    lin = torch.nn.Linear(k, n)
    x = torch.randn(rows, k)
    with torch.no_grad():  # freeze=True: weights are constants the layout pass may store [k, n]
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True)
        torch.testing.assert_close(cm(x), lin(x))
    stored_kn = "stored [k, n]" in cm.explain()
    assert stored_kn == (".rtile" in cm.source("llvm-unopt"))
    assert stored_kn == (rows <= 96)  # these shapes differ only there
