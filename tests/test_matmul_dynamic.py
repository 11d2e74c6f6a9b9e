"""Dynamically scheduled kernels (GEMV, dot tiles, row tiles, attention, loop kernels): threads claim
grains of items.

Every grain must run exactly once whatever the thread count (the caller and up to threads - 1
pool workers), item count (not a multiple of the grain, fewer items than threads) or contention
(several Python threads calling at once, so the pool is often busy and the caller runs alone).
tests/test_threads.py covers every kernel kind and the pool itself.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import minicomp
from minicomp.codegen.llvm.parallel import GRAINS_PER_THREAD


def _linear_gelu(n: int, k: int, dtype=torch.float32):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n).to(dtype).eval()
    return lambda x: torch.nn.functional.gelu(lin(x))


@pytest.mark.parametrize("threads", [2, 3, 4, 8])
@pytest.mark.parametrize("m,n,k", [(1, 1000, 300), (1, 256, 1024), (2, 9, 16), (64, 384, 128), (7, 5, 130),
                                   (3 * 2 * GRAINS_PER_THREAD + 1, 40, 64)])
def test_linear_matches_for_any_thread_count(threads, m, n, k):
    f = _linear_gelu(n, k)
    x = torch.randn(m, k) / 4
    with torch.no_grad():
        cm = minicomp.compile(f, (x,), cache=False, threads=threads)
        torch.testing.assert_close(cm(x), f(x))


@pytest.mark.parametrize("threads", [2, 3])
def test_attention_products_match(threads):
    torch.manual_seed(1)
    q, kk, v = (torch.randn(2, 4, 64, 32) for _ in range(3))

    def f(q, k, v):
        return ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(32))).softmax(-1) @ v

    cm = minicomp.compile(f, (q, kk, v), cache=False, threads=threads)
    torch.testing.assert_close(cm(q, kk, v), f(q, kk, v))


def test_claims_grains_only_when_split():
    f = _linear_gelu(1024, 256)
    x = torch.randn(1, 256)
    two = minicomp.compile(f, (x,), cache=False, threads=2)
    one = minicomp.compile(f, (x,), cache=False, threads=1)
    with torch.no_grad():
        two(x), one(x)
    assert "atomicrmw add" in two.source("llvm-unopt")
    assert "atomicrmw" not in one.source("llvm-unopt")


def test_concurrent_callers_get_every_grain_once():
    f = _linear_gelu(1024, 256)
    x = torch.randn(1, 256)
    with torch.no_grad():
        cm = minicomp.compile(f, (x,), cache=False, threads=4)
        expect = f(x)

    def work(_):
        for _ in range(200):
            torch.testing.assert_close(cm(x), expect)

    with ThreadPoolExecutor(3) as ex:
        list(ex.map(work, range(3)))  # re-raises a worker's failure


@pytest.mark.parametrize("threads", [2, 3, 4, 8])
@pytest.mark.parametrize("rows", [257, 4099])  # neither a multiple of any grain count
def test_loop_kernels_match_for_any_thread_count(threads, rows):
    torch.manual_seed(2)
    x = torch.randn(rows, 512)
    ln = torch.nn.LayerNorm(512).eval()
    cases = [ln, lambda x: torch.softmax(x, -1), lambda x: torch.sigmoid(2 * x + 1) * torch.tanh(x) - x.abs()]
    with torch.no_grad():
        for f in cases:
            many = minicomp.compile(f, (x,), cache=False, threads=threads)
            one = minicomp.compile(f, (x,), cache=False, threads=1)
            assert "atomicrmw add" in many.source("llvm-unopt")  # split into claimed grains
            torch.testing.assert_close(many(x), f(x))
            assert torch.equal(many(x), one(x))  # each row is one thread's work either way
