"""The panel path (codegen/llvm/matmul_panel.py): row tiles on a B stored transposed.

A Linear's weight read at call time is ``W [n, k]``: B = W^T is unit stride along k. Each item
packs a block of B's columns into a stack panel and runs row tiles on it. These shapes put
every dim on and off the tile edges (1, 3, 17, 64, 129: one row, fewer rows than a tile,
partial vectors of columns, k below and above a vector, k not a multiple of the transpose
block), with batches that share B and batches that do not, and compare with PyTorch and with
the plain path (forced through MINICOMP_CODEGEN_PATHS).
"""
from __future__ import annotations

import pytest
import torch

import minicomp
from minicomp.codegen.llvm.matmul_panel import PT_MAX_PANEL_BYTES

SHAPES = [(17, 1, 3), (17, 3, 129), (64, 17, 1), (64, 129, 17), (17, 64, 64), (8, 129, 129), (96, 17, 64),
          (1, 129, 64), (3, 17, 17), (129, 64, 17), (64, 33, 512)]


def _uses_panel(cm) -> bool:
    return ".ptile" in cm.source("llvm-unopt")


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_matches_torch_and_plain(m, n, k, dtype, monkeypatch):
    torch.manual_seed(m * 1000 + n * 10 + k)
    x, bias = torch.randn(m, k, dtype=dtype), torch.randn(n, dtype=dtype)
    w = torch.randn(n, k, dtype=dtype) / k ** 0.5  # O(1) results, as a Linear's initialization gives

    def f(x, w, bias):
        return torch.nn.functional.gelu(torch.nn.functional.linear(x, w, bias))
    cm = minicomp.compile(f, (x, w, bias), cache=False)
    got = cm(x, w, bias)
    torch.testing.assert_close(got, f(x, w, bias))
    panel_fits = k * 2 * 512 // 8 <= PT_MAX_PANEL_BYTES  # at most 2 x 512 bits of columns
    if 8 <= m <= 96 and panel_fits and k > 1:  # (k = 1: B has no stride along k to speak of)
        assert _uses_panel(cm)
    monkeypatch.setenv("MINICOMP_CODEGEN_PATHS", "plain")
    plain = minicomp.compile(f, (x, w, bias), cache=False)
    assert not _uses_panel(plain)
    torch.testing.assert_close(got, plain(x, w, bias))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("m,n", [(17, 33), (30, 10)])  # (30, 10): one column block, rows cut into chunks
def test_batches_sharing_b_or_not(threads, shared, m, n):
    torch.manual_seed(3)
    a = torch.randn(3, m, 40)
    w = torch.randn(1 if shared else 3, n, 40)
    a[1, 4, 7] = float("nan")
    a[2, 0, :] = -0.0
    f = lambda a, w: a @ w.transpose(-2, -1)  # noqa: E731  (B unit stride along k)
    cm = minicomp.compile(f, (a, w), cache=False, threads=threads)
    got, want = cm(a, w), f(a, w)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert torch.equal(torch.signbit(got[2, 0]), torch.signbit(want[2, 0]))
    assert _uses_panel(cm)


def test_weight_changes_between_calls():
    # the panel is packed on every call: a weight written in place is seen by the next call
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(20, 64)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False)
        torch.testing.assert_close(cm(x), lin(x))
        lin.weight.mul_(-2)
        torch.testing.assert_close(cm(x), lin(x))
    assert _uses_panel(cm)


def test_panel_too_large_takes_another_path():
    k = PT_MAX_PANEL_BYTES // 32 + 1  # 2 vectors of at least 4 f32 columns over this k exceed the bound
    x, w = torch.randn(16, k), torch.randn(8, k) / k ** 0.5
    cm = minicomp.compile(torch.nn.functional.linear, (x, w), cache=False)
    torch.testing.assert_close(cm(x, w), torch.nn.functional.linear(x, w))
    assert not _uses_panel(cm)


def test_thread_count_gives_the_same_bits():
    # each item owns its columns and sums in the same order, whichever thread runs it
    torch.manual_seed(4)
    x, w = torch.randn(64, 129), torch.randn(200, 129) / 129 ** 0.5  # enough work to split
    one = minicomp.compile(torch.nn.functional.linear, (x, w), cache=False, threads=1)
    two = minicomp.compile(torch.nn.functional.linear, (x, w), cache=False, threads=2)
    assert _uses_panel(two)
    assert torch.equal(one(x, w), two(x, w))
