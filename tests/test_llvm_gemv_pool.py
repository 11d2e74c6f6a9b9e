"""The GEMV matmul path (few rows, unit k strides) and the pooled 2-way split of kernels."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import minicomp


@pytest.mark.parametrize("rows,n,k,dtype", [(1, 1024, 256, torch.float32), (3, 83, 37, torch.float32),
                                            (2, 9, 16, torch.float64), (1, 7, 300, torch.float32)])
def test_gemv_linear_matches(rows, n, k, dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n).to(dtype)
    x = torch.randn(rows, k, dtype=dtype)
    with torch.no_grad():
        cm = minicomp.compile(lambda x: torch.relu(lin(x)), (x,), cache=False)
        torch.testing.assert_close(cm(x), torch.relu(lin(x)))


def test_batched_gemv_with_nan_and_inf():
    a = torch.randn(4, 1, 40)
    b = torch.randn(4, 40, 33)
    a[0, 0, 3] = float("nan")
    a[1, 0, 5] = float("inf")
    cm = minicomp.compile(lambda a, b: a @ b, (a, b), cache=False)
    torch.testing.assert_close(cm(a, b), a @ b, equal_nan=True)


def test_concurrent_calls_share_the_helper_correctly():
    x = torch.randn(1024, 1024)
    cm = minicomp.compile(lambda x: torch.tanh(x) * 2 + 1, (x,), cache=False)
    expect = torch.tanh(x) * 2 + 1

    def work(_):
        for _ in range(20):
            torch.testing.assert_close(cm(x), expect)

    with ThreadPoolExecutor(3) as ex:
        list(ex.map(work, range(3)))  # re-raises a worker's failure
