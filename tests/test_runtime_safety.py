"""The compiled call path: guards, recompilation, odd inputs, threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import minicomp
from minicomp.errors import GuardError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path / "cache"))


def fn(x, y):
    return torch.relu(x @ y) + x.sum(-1, keepdim=True)


@pytest.fixture(scope="module")
def compiled():
    x, y = torch.randn(4, 6), torch.randn(6, 6)
    return minicomp.compile(fn, (x, y))


def test_new_shape_recompiles_and_caches_by_signature(compiled):
    for shape in [(4, 6), (2, 6), (4, 6)]:
        x, y = torch.randn(*shape), torch.randn(6, 6)
        torch.testing.assert_close(compiled(x, y), fn(x, y))
    assert len(compiled._entries) == 2


def test_new_dtype_recompiles(compiled):
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    out = compiled(x, y)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, fn(x, y))


def test_recompile_off_raises_guard_error():
    x, y = torch.randn(4, 6), torch.randn(6, 6)
    cm = minicomp.compile(fn, (x, y), recompile=False)
    with pytest.raises(GuardError, match=r"input 0 has shape \[3, 6\], compiled for \[4, 6\]"):
        cm(torch.randn(3, 6), y)
    with pytest.raises(GuardError, match="dtype"):
        cm(x.double(), y)
    torch.testing.assert_close(cm(x, y), fn(x, y))  # still usable


def test_wrong_count_and_non_tensors(compiled):
    x, y = torch.randn(4, 6), torch.randn(6, 6)
    with pytest.raises(GuardError, match="takes 2 tensor input"):
        compiled(x)
    with pytest.raises(GuardError, match="takes 2 tensor input"):
        compiled(x, y, y)
    with pytest.raises(GuardError, match="is a float"):
        compiled(x, 1.5)
    with pytest.raises(GuardError, match="does not support"):
        compiled(x, y.to(torch.complex64))


def test_numpy_inputs_are_accepted(compiled):
    x, y = np.random.randn(4, 6).astype(np.float32), np.random.randn(6, 6).astype(np.float32)
    torch.testing.assert_close(compiled(x, y), fn(torch.from_numpy(x), torch.from_numpy(y)))


def test_non_contiguous_inputs_are_copied_not_misread(compiled):
    x = torch.randn(6, 4).t()                # (4, 6) transposed view
    y = torch.randn(12, 6)[::2]              # (6, 6) with row stride 12
    assert not x.is_contiguous() and not y.is_contiguous()
    torch.testing.assert_close(compiled(x, y), fn(x, y))
    z = torch.randn(4, 6).to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(compiled(z, y), fn(z, y))


def test_other_devices_are_rejected_clearly(compiled):
    x = torch.empty(4, 6, device="meta")
    with pytest.raises(GuardError, match="device 'meta'.*compiled for the CPU"):
        compiled(x, torch.randn(6, 6))


def test_size_zero_inputs():
    x, y = torch.randn(0, 6), torch.randn(6, 6)
    cm = minicomp.compile(fn, (x, y))
    out = cm(x, y)
    assert out.shape == (0, 6)
    z = torch.randn(5, 0)
    cm2 = minicomp.compile(lambda a: a.sum(1), (z,))
    torch.testing.assert_close(cm2(z), torch.zeros(5))


def test_outputs_are_fresh_tensors(compiled):
    x, y = torch.randn(4, 6), torch.randn(6, 6)
    a, b = compiled(x, y), compiled(x, y)
    assert a.data_ptr() != b.data_ptr()
    torch.testing.assert_close(a, b)


def test_concurrent_calls_from_threads_are_correct():
    def model(x):
        h = torch.tanh(x @ x.t())
        return torch.softmax(h, -1) * 2 + h.mean()
    xs = [torch.randn(32, 32) for _ in range(8)]
    cm = minicomp.compile(model, (xs[0],), threads=1)
    refs = [model(x) for x in xs]
    errors = []

    def worker(k):
        try:
            for i in range(30):
                j = (k + i) % len(xs)
                torch.testing.assert_close(cm(xs[j]), refs[j])
        except Exception as e:  # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_recompile_limit():
    cm = minicomp.compile(lambda x: x + 1, (torch.randn(1),), recompile_limit=2)
    cm(torch.randn(2))
    with pytest.raises(GuardError, match="more than 2 input signatures"):
        cm(torch.randn(3))


def test_large_outputs_get_huge_page_advice_inside_their_bytes(monkeypatch):
    from minicomp.codegen.llvm.runtime import hugepages
    calls = []
    monkeypatch.delenv("MINICOMP_HUGEPAGES", raising=False)
    monkeypatch.setattr(hugepages, "_MADVISE", lambda addr, n, advice: calls.append((addr, n, advice)) or 0)
    x = torch.randn(3 * 1024 * 1024 + 5)  # 12 MiB: above HUGE_OUTPUT_BYTES
    small = torch.randn(1000)
    cm = minicomp.compile(lambda x, s: (x * 2 - 1, s + 1), (x, small), cache=False)
    big_out, small_out = cm(x, small)
    torch.testing.assert_close(big_out, x * 2 - 1)
    torch.testing.assert_close(small_out, small + 1)
    (addr, n, advice), = calls  # only the large output is advised
    start, end = big_out.data_ptr(), big_out.data_ptr() + big_out.numel() * 4
    assert advice == 14 and addr % (2 << 20) == 0 and n % (2 << 20) == 0 and n > 0
    assert start <= addr and addr + n <= end  # never outside the tensor's own bytes


def test_huge_page_advice_skips_tensors_without_a_whole_huge_page(monkeypatch):
    from minicomp import runtime
    from minicomp.codegen.llvm.runtime import hugepages
    calls = []
    monkeypatch.setattr(hugepages, "_MADVISE", lambda *a: calls.append(a) or 0)
    runtime.huge_pages(torch.empty(1000))
    assert calls == []


def test_train_eval_switch_never_reuses_the_other_modes_program():
    """A module is traced in its train/eval mode: after model.train()/eval() the compiled model
    compiles for the new mode (or refuses it clearly), never runs the old mode's program."""
    from minicomp.errors import UnsupportedOpError
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Dropout(0.5)).eval()
    x = torch.randn(32, 16)
    cm = minicomp.compile(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(cm(x), m(x))
        m.train()
        with pytest.raises(UnsupportedOpError, match="random"):  # training-mode dropout: not silently eval's
            cm(x)
        m.eval()
        torch.testing.assert_close(cm(x), m(x))


def test_batch_norm_follows_the_modules_mode():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    m.eval()
    x = torch.randn(2, 3, 8, 8)
    cm = minicomp.compile(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(cm(x), m(x))
        m.train()
        with pytest.raises(minicomp.errors.UnsupportedOpError, match="training-mode batch norm"):
            cm(x)  # batch statistics are not compiled by inference tracing: refused, not eval's numbers
        m.eval()
        torch.testing.assert_close(cm(x), m(x))


def test_as_strided_program_guards_the_inputs_strides():
    """as_strided reads its operand's storage order: a call whose input has the example's shape but
    other strides (or a storage offset) recompiles instead of reading the wrong elements."""
    f = lambda x: torch.as_strided(x, (3, 3), (1, 3)) * 1.0  # noqa: E731
    x = torch.arange(9.).reshape(3, 3)
    cm = minicomp.compile(f, (x,), cache=False)
    torch.testing.assert_close(cm(x), f(x))
    col_major = torch.arange(9.).reshape(3, 3).t().contiguous().t()
    assert torch.equal(col_major, x) and col_major.stride() != x.stride()
    torch.testing.assert_close(cm(col_major), f(col_major))
    offset = torch.arange(12.)[3:].reshape(3, 3)  # a view into a larger storage: refused, never misread
    with pytest.raises(minicomp.errors.UnsupportedOpError, match="larger storage"):
        cm(offset)
    torch.testing.assert_close(cm(x), f(x))
