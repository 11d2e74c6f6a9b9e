"""Integer division by zero and out-of-range indices raise as eager does (issue 14, point 7).

Eager PyTorch raises ``RuntimeError("ZeroDivisionError")`` for an integer ``//``, ``%``,
``fmod``, ``remainder`` or rounding ``div`` by zero, and ``IndexError("index out of range in
self")`` for an embedding / index_select id outside ``[0, n)``. Compiled kernels used to return
0 or read a clamped row; now their ``check`` primitives set the call's error word and the
call raises the same exception. See docs/reliability.md, "Integer division by zero and
out-of-range indices", for what remains different.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import minicomp
from minicomp.ir import interpret, parse

W = torch.randn(5, 3)

DIVISIONS = {
    "floor_divide": lambda a, b: a // b,
    "remainder": lambda a, b: a % b,
    "fmod": torch.fmod,
    "div_trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "div_floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
}


def _eager_error(fn, *args) -> type[BaseException]:
    with pytest.raises(Exception) as info:
        fn(*args)
    return type(info.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("name", sorted(DIVISIONS))
def test_integer_division_by_zero_raises_like_eager(name, dtype):
    fn = DIVISIONS[name]
    a = torch.tensor([7, -7, 5, 9], dtype=dtype)
    good, bad = torch.tensor([2, 3, -4, 1], dtype=dtype), torch.tensor([2, 0, -4, 1], dtype=dtype)
    cm = minicomp.compile(fn, (a, good))
    torch.testing.assert_close(cm(a, good), fn(a, good))
    assert _eager_error(fn, a, bad) is RuntimeError
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        cm(a, bad)
    torch.testing.assert_close(cm(a, good), fn(a, good))  # the error word starts at 0 on every call


def test_division_by_a_zero_scalar_raises_and_a_constant_zero_divisor_is_not_folded_at_compile():
    x = torch.tensor([4, 5])
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        minicomp.compile(lambda t: t // 0, (x,))(x)
    fn = lambda t: t + torch.tensor([4, 5]) // torch.tensor([0, 1])  # noqa: E731 - constants only
    cm = minicomp.compile(fn, (x,))  # constant folding used to raise a bare ZeroDivisionError here
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        cm(x)


def test_zero_divisor_in_a_reduction_and_in_a_matmul_epilogue():
    a, b = torch.arange(1, 13).reshape(3, 4), torch.ones(3, 4, dtype=torch.long)
    cm = minicomp.compile(lambda x, y: (x % y).sum(1), (a, b))
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        cm(a, b.index_fill(1, torch.tensor([2]), 0))
    x, w = torch.randn(4, 8), torch.randn(8, 6)
    fn = lambda x, w, d: (x @ w).long() // d  # noqa: E731 - the division may not fuse into the GEMM
    d = torch.full((4, 6), 3)
    cm = minicomp.compile(fn, (x, w, d))
    torch.testing.assert_close(cm(x, w, d), fn(x, w, d))
    d[1, 2] = 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        cm(x, w, d)


def test_one_zero_in_a_kernel_split_across_threads():
    """Each thread's flag reaches the call's error word (the kernel runs in claimed grains)."""
    a = torch.randint(-100, 100, (1 << 19,))
    b = torch.randint(1, 9, (1 << 19,))
    cm = minicomp.compile(lambda x, y: x // y, (a, b), threads=2)
    torch.testing.assert_close(cm(a, b), a // b)
    for pos in (0, (1 << 19) - 1, 123_457):
        bad = b.clone()
        bad[pos] = 0
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            cm(a, bad)


def test_concurrent_calls_do_not_see_each_others_errors():
    a, good = torch.arange(1, 1001), torch.full((1000,), 7)
    bad = good.clone()
    bad[500] = 0
    cm = minicomp.compile(lambda x, y: x % y, (a, good))
    wrong: list[str] = []

    def run(divisor, expect_error):
        for _ in range(200):
            try:
                out = cm(a, divisor)
                if expect_error or not torch.equal(out, a % divisor):
                    wrong.append("no error" if expect_error else "wrong values")
            except RuntimeError:
                if not expect_error:
                    wrong.append("spurious error")
    threads = [threading.Thread(target=run, args=(good, False)), threading.Thread(target=run, args=(bad, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.parametrize("bad_id", [5, 6, -1, -5])
def test_embedding_id_out_of_range_raises_index_error(bad_id):
    fn = lambda ids: torch.nn.functional.embedding(ids, W)  # noqa: E731
    ok = torch.tensor([[0, 4], [2, 1]])
    cm = minicomp.compile(fn, (ok,))
    torch.testing.assert_close(cm(ok), fn(ok))
    bad = torch.tensor([[0, 4], [bad_id, 1]])
    assert _eager_error(fn, bad) is IndexError
    with pytest.raises(IndexError, match="index out of range in self"):
        cm(bad)


def test_index_select_out_of_range_raises_index_error():
    fn = lambda ids: torch.index_select(W, 0, ids) * 2  # noqa: E731
    cm = minicomp.compile(fn, (torch.tensor([0, 1, 2]),), target="cpu")
    with pytest.raises(IndexError, match="index out of range in self"):
        cm(torch.tensor([0, 7, 2]))
    with pytest.raises(IndexError, match="index out of range in self"):
        cm(torch.tensor([0, -1, 2]))  # torch refuses negative ids here too


def test_triton_target_raises_too():
    """Under Triton (its interpreter without a GPU) kernels store into a one-word error buffer."""
    a, good = torch.tensor([7, 8, 9]), torch.tensor([2, 3, 4])
    cm = minicomp.compile(lambda x, y: x // y, (a, good), target="triton")
    torch.testing.assert_close(cm(a, good), a // good)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        cm(a, torch.tensor([2, 0, 4]))
    fn = lambda ids: torch.nn.functional.embedding(ids, W)  # noqa: E731
    cm = minicomp.compile(fn, (torch.tensor([0, 1]),), target="triton")
    with pytest.raises(IndexError, match="index out of range in self"):
        cm(torch.tensor([0, 5]))


def test_interpreter_raises_python_errors():
    """The numpy interpreter raises Python's ZeroDivisionError / IndexError (documented)."""
    g = parse("graph @g(%a: i64[2], %b: i64[2]) {\n  %0 = remainder %a, %b : i64[2]\n  return %0\n}")
    with pytest.raises(ZeroDivisionError):
        interpret(g, np.array([1, 2]), np.array([1, 0]))
    g = parse("graph @g(%w: f32[3,2], %i: i64[2]) {\n  %0 = embedding %w, %i : f32[2,2]\n  return %0\n}")
    with pytest.raises(IndexError):
        interpret(g, np.zeros((3, 2), np.float32), np.array([0, 3]))
    cm = minicomp.compile(lambda x, y: x // y, (torch.tensor([1]), torch.tensor([1])), target="interpret")
    with pytest.raises(ZeroDivisionError):
        cm(torch.tensor([1]), torch.tensor([0]))
