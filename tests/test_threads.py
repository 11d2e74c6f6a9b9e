"""Threads: the thread count (option, ``MINICOMP_NUM_THREADS``, cores), the process-wide pool, every
kernel kind at 1, 2, 3, 4 and 8 threads, and concurrent and nested callers.

The machine running the tests may have 2 cores: 3, 4 and 8 threads run oversubscribed, which is
the hard case for the pool (workers start late or not at all before the caller finishes).
Matmul inputs are scaled like a layer's (weights ~1/16) so float32 sums stay within the default
tolerances against eager. Every kernel kind today splits only over independent output items (rows, tiles, output
points), never along a reduction, so each result must equal the one-thread result bit for bit.
"""
from __future__ import annotations

import ctypes
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

import minicomp
from minicomp import threads as mthreads
from minicomp.codegen.llvm.runtime import threadpool
from minicomp.errors import CompileError

pytestmark = pytest.mark.skipif(not threadpool.supported(), reason="the thread pool exists on x86-64 Linux only")

THREAD_COUNTS = (2, 3, 4, 8)


def _pointwise(x):
    return torch.sigmoid(2 * x + 1) * torch.tanh(x) - x.abs()


def _attention(q, k, v):
    return ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(32))).softmax(-1) @ v


def _module(m):
    torch.manual_seed(3)
    return m.eval()


def _cases():
    """name -> (fn, inputs, the body function a split version claims pieces of: the path taken)."""
    r = torch.randn
    return {
        "pointwise": (_pointwise, (r(600, 512),), ".body"),
        "reduce_rows": (lambda x: x.sum(-1), (r(2048, 256),), ".body"),
        "reduce_cols": (lambda x: x.amax(0), (r(2048, 256),), ".body"),
        "softmax": (lambda x: x.softmax(-1), (r(1500, 256),), ".body"),
        "layer_norm": (_module(torch.nn.LayerNorm(256)), (r(1500, 256),), ".body"),
        "gemv": (lambda a, w: a @ w.t(), (r(1, 256), r(512, 256) / 16), ".gemv"),
        "row_tiles": (lambda a, b: a @ b, (r(64, 256) / 4, r(256, 512) / 16), ".rtile"),
        "panel_tiles": (lambda a, b: a @ b.t(), (r(48, 256) / 4, r(600, 256) / 16), ".ptile"),
        # k past the panel path's stack bound (matmul_panel.PT_MAX_PANEL_BYTES): dot tiles read B in place
        "dot_tiles": (lambda a, b: a @ b.t(), (r(48, 1536) / 4, r(200, 1536) / 40), ".dtile"),
        "gemm_packed": (lambda a, b: a @ b, (r(128, 160) / 4, r(160, 96) / 16), ".gemm"),
        "matmul_dot": (lambda a, b: a @ b, (r(3000, 300) / 4, r(300, 1) / 16), ".dot"),
        "matmul_axpy": (lambda a, b: a @ b, (r(4000, 64) / 4, r(64, 3) / 16), ".axpy"),
        "conv_gemm": (_module(torch.nn.Conv2d(8, 16, 3, padding=1)), (r(2, 8, 32, 32),), ".gemm"),
        "conv_direct": (_module(torch.nn.Conv2d(3, 8, 5, stride=2)), (r(2, 3, 64, 64),), ".body"),
        "attention": (_attention, tuple(r(2, 4, 64, 32) for _ in range(3)), ".attn"),
        "max_pool": (lambda x: F.max_pool2d(x, 3, 2, 1), (r(4, 16, 64, 64),), ".body"),
        "avg_pool": (lambda x: F.avg_pool2d(x, 2), (r(4, 16, 64, 64),), ".body"),
    }


torch.manual_seed(0)
CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_kernel_kind_at_every_thread_count(name):
    fn, args, path = CASES[name]
    with torch.no_grad():
        ref = fn(*args)
        one = minicomp.compile(fn, args, cache=False, threads=1)
        want = one(*args)
        torch.testing.assert_close(want, ref)
        assert "minicomp_pool_run" not in one.source("llvm-unopt")
        for n in THREAD_COUNTS:
            cm = minicomp.compile(fn, args, cache=False, threads=n)
            src = cm.source("llvm-unopt")
            assert cm.threads == n
            assert path + ".claim" in src and "minicomp_pool_run" in src, \
                f"{name} at {n} threads is not split on the expected path {path!r}"
            assert "pthread_create" not in src  # no thread creation per call: the pool's workers run it
            for _ in range(3):  # workers enter (or not) differently each call
                got = cm(*args)
                assert torch.equal(got, want), f"{name}: {n} threads differ from one thread"


# -- the thread count ---------------------------------------------------------------------------
def test_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv(mthreads.ENV, raising=False)
    cm = minicomp.compile(_pointwise, (torch.randn(8),), cache=False)
    assert cm.threads == len(os.sched_getaffinity(0)) == threadpool.available_cores()


def test_affinity_not_cpu_count_sets_the_default(monkeypatch):
    monkeypatch.delenv(mthreads.ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert minicomp.compile(_pointwise, (torch.randn(8),), cache=False).threads == 3


def test_environment_variable_then_option(monkeypatch):
    monkeypatch.setenv(mthreads.ENV, "3")
    x = torch.randn(600, 512)
    cm = minicomp.compile(_pointwise, (x,), cache=False)
    assert cm.threads == 3
    assert set(re.findall(r'@"minicomp_pool_run"\(.*, i32 (\d+)\)', cm.source("llvm-unopt"))) == {"2"}  # helpers
    assert minicomp.compile(_pointwise, (x,), cache=False, threads=5).threads == 5  # the option wins


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", True, mthreads.MAX_THREADS + 1])
def test_bad_thread_option_is_one_clear_error(bad):
    with pytest.raises(CompileError, match="threads"):
        minicomp.compile(_pointwise, (torch.randn(8),), cache=False, threads=bad)


@pytest.mark.parametrize("bad", ["zero", "0", "2.5", "-3"])
def test_bad_environment_variable_is_one_clear_error(monkeypatch, bad):
    monkeypatch.setenv(mthreads.ENV, bad)
    with pytest.raises(CompileError, match=mthreads.ENV):
        minicomp.compile(_pointwise, (torch.randn(8),), cache=False)


def test_thread_count_is_part_of_the_model_cache_key(monkeypatch, tmp_path):
    """Code compiled for one count is never served from the disk cache to a process asking for another."""
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path))
    x = torch.randn(600, 512)
    monkeypatch.setenv(mthreads.ENV, "1")
    assert "minicomp_pool_run" not in minicomp.compile(_pointwise, (x,)).source("llvm-unopt")
    monkeypatch.setenv(mthreads.ENV, "4")
    cm = minicomp.compile(_pointwise, (x,))
    assert cm.threads == 4 and "minicomp_pool_run" in cm.source("llvm-unopt")


# -- the pool itself, driven through its C entry point ------------------------------------------
_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


def _pool_run():
    assert threadpool.install()
    import llvmlite.binding as llvm
    return ctypes.CFUNCTYPE(None, _FN, ctypes.c_void_p, ctypes.c_int32)(llvm.address_of_symbol(threadpool.RUN))


def _entered_by(helpers: int) -> set[int]:
    """Thread ids that ran one pool job asking for ``helpers`` workers (the caller waits for all)."""
    seen, lock = set(), threading.Lock()
    everyone = threading.Event()

    def fn(_ctx):
        with lock:
            seen.add(threading.get_native_id())
            if len(seen) == helpers + 1:
                everyone.set()
        if threading.get_native_id() == caller:
            assert everyone.wait(20), "the pool's workers never entered"
        return None

    caller = threading.get_native_id()
    _pool_run()(_FN(fn), None, helpers)
    return seen


def test_pool_workers_persist_and_all_take_part():
    """Seven helpers asked for: seven workers enter; later jobs reuse them (no thread per call)."""
    caller = threading.get_native_id()
    workers = _entered_by(7) - {caller}
    assert len(workers) == 7
    tasks = set(os.listdir("/proc/self/task"))
    assert {str(t) for t in workers} <= tasks
    for _ in range(20):
        seen = _entered_by(3)
        assert len(seen) == 4 and seen - {caller} <= workers
    assert set(os.listdir("/proc/self/task")) == tasks


def test_busy_pool_never_blocks_another_caller():
    """While one caller holds the pool, a compiled model called from another thread runs alone."""
    x = torch.randn(600, 512)
    cm = minicomp.compile(_pointwise, (x,), cache=False, threads=4)
    want = cm(x)
    holding, release = threading.Event(), threading.Event()
    caller = []

    def hold(_ctx):
        if threading.get_ident() == caller[0]:
            holding.set()
            release.wait(30)
        return None

    def holder():
        caller.append(threading.get_ident())
        _pool_run()(_FN(hold), None, 3)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert holding.wait(20)
        results = []
        other = threading.Thread(target=lambda: results.append(cm(x)))
        other.start()
        other.join(20)
        assert not other.is_alive(), "a caller waited on a pool another caller holds"
        assert torch.equal(results[0], want)
    finally:
        release.set()
        t.join(30)


def test_compiled_models_called_from_pool_workers():
    """Nested: a pool job whose every thread (workers included) calls compiled models."""
    x = torch.randn(600, 512)
    models = [minicomp.compile(f, (x,), cache=False, threads=4) for f in (_pointwise, lambda x: x.softmax(-1))]
    wants = [m(x) for m in models]
    pieces, lock, bad = list(range(24)), threading.Lock(), []

    def fn(_ctx):
        while True:
            with lock:
                if not pieces:
                    return None
                i = pieces.pop()
            if not torch.equal(models[i % 2](x), wants[i % 2]):
                bad.append(i)

    _pool_run()(_FN(fn), None, 3)
    assert not pieces and not bad


@pytest.mark.parametrize("same", [True, False], ids=["same_model", "different_models"])
def test_concurrent_python_threads(same):
    torch.manual_seed(5)
    x, w = torch.randn(96, 256), torch.randn(256, 384)
    fns = [lambda x: _pointwise(x) @ w, lambda x: torch.nn.functional.layer_norm(x @ w, (384,)).softmax(-1),
           lambda x: (x @ w).amax(-1)]
    with torch.no_grad():
        models = [minicomp.compile(f, (x,), cache=False, threads=4) for f in fns]
        wants = [m(x) for m in models]

    def work(k):
        for i in range(40):
            j = 0 if same else (k + i) % len(models)
            assert torch.equal(models[j](x), wants[j])

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(work, range(4)))  # re-raises a worker's failure


def test_idle_pool_sleeps():
    """Workers spin only briefly after a job, then sleep: an idle process burns no CPU."""
    x = torch.randn(600, 512)
    cm = minicomp.compile(_pointwise, (x,), cache=False, threads=4)
    for _ in range(20):
        cm(x)
    time.sleep(0.1)
    start = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - start < 0.05


def test_thread_limit_matches_the_pool():
    assert mthreads.MAX_THREADS == threadpool.MAX_WORKERS + 1
