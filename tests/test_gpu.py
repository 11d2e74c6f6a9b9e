"""The Triton backend on a real CUDA device: compiled kernels (not the interpreter) against eager.

CI has no GPU, so every test here is skipped there with that reason; on a machine with a CUDA
device (and ``TRITON_INTERPRET`` unset) they run the public path,
``minicomp.compile(..., target="triton")``, on CUDA tensors: the three examples, special values
through every float dtype, non-contiguous and broadcast inputs, and random graphs of every dtype.
"""
from __future__ import annotations

import math
import os
import pathlib

import pytest
import torch
from hypothesis import given, settings

import minicomp
from minicomp.cli import load_model_file
from minicomp.ir.dtypes import DType
from minicomp.testing import Case, check_compile, graphs

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
    reason="needs a CUDA device with compiled (not interpreted) Triton; CI machines have no GPU")

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _example(name: str):
    return load_model_file(str(ROOT / "examples" / f"{name}.py"))


@pytest.mark.parametrize("name", ["mlp", "lenet", "transformer_block"])
def test_examples_on_the_gpu(name: str) -> None:
    ex = _example(name)
    model = ex.model().cuda().eval()
    inputs = tuple(t.cuda() for t in ex.example_inputs())
    cm = minicomp.compile(model, inputs, target="triton")
    with torch.no_grad():
        got, want = cm(*inputs), model(*inputs)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_special_values_and_signed_zero(dtype: torch.dtype) -> None:
    """pow, tanh, division, max, sqrt and negation on zeros of both signs, infinities and NaN."""
    import itertools
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, math.inf, -math.inf, math.nan, 1e-30, -0.01, 2.5]
    xs, ys = (torch.tensor(v, dtype=dtype, device="cuda") for v in zip(*itertools.product(vals, vals)))

    def fn(x, y):
        return torch.pow(x, y), 1 / torch.tanh(x), x / y, torch.maximum(x, y), torch.sqrt(x), torch.sigmoid(-x), -x

    cm = minicomp.compile(fn, (xs, ys), target="triton")
    # IEEE 754-2008 leaves the sign of max(+0, -0) to the implementation, and PyTorch's own CPU
    # kernels return one operand or the other depending on the tensor's size: ties are not compared.
    tie = (xs == 0) & (ys == 0)
    problems = []
    for k, (got, want) in enumerate(zip(cm(xs, ys), fn(xs, ys))):
        torch.testing.assert_close(got, want, equal_nan=True)
        keep = ~want.isnan() & (~tie if k == 3 else True)
        bad = (torch.signbit(got) != torch.signbit(want)) & keep
        if bad.any():
            problems.append(f"output {k}: sign differs at x, y = {list(zip(xs[bad].tolist(), ys[bad].tolist()))[:6]}"
                            f": {got[bad][:6].tolist()} vs {want[bad][:6].tolist()}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_layernorm_noncontiguous_broadcast(dtype: torch.dtype) -> None:
    x = torch.randn(64, 300, device="cuda", dtype=dtype).t()  # non-contiguous, reduced over 64
    w = torch.randn(64, device="cuda", dtype=dtype)

    def fn(x, w):
        return torch.softmax(x, -1), torch.nn.functional.layer_norm(x, (64,), w), (x * w + 1).relu().sum(0)

    cm = minicomp.compile(fn, (x, w), target="triton")
    for got, want in zip(cm(x, w), fn(x, w)):
        torch.testing.assert_close(got, want)


def test_int64_ids_and_bool_masks() -> None:
    ids = torch.randint(0, 1000, (4, 33), device="cuda")
    mask = ids > 500

    def fn(ids, mask):
        return torch.where(mask, ids * 3, -ids), (ids % 7 == 0) | mask, ids.sum(-1), torch.fmod(-ids, 5)

    cm = minicomp.compile(fn, (ids, mask), target="triton")
    for got, want in zip(cm(ids, mask), fn(ids, mask)):
        torch.testing.assert_close(got, want)


@settings(max_examples=60)
@given(graphs(max_nodes=6, dtypes=tuple(DType), special_values=True))
def test_random_graphs_on_the_gpu(case: Case) -> None:
    check_compile(case, targets=("triton",), check_interpreter=False)
