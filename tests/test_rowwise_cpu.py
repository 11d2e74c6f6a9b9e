"""CPU row-wise kernels and inline transcendentals against PyTorch.

Covers the f32 rational erf (and GELU built on it), exp/tanh/sigmoid over dense
sweeps and special values, the f64 libm path, f16/bf16, and softmax / log_softmax /
layer_norm whose rows are split across the two threads of the pool (the split
must not change a single bit, and must match torch at default tolerances).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import minicomp
from eager_ref import eager

SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e30, -1e30, 3.925, -3.925, 3.9, -3.9,
            1e-45, -1e-45, 1e-38, 88.7, -88.7, 89.5, -104.5, 1e4, -1e4]


def sweep(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense values over the interesting range, tiny magnitudes and special values."""
    tiny = torch.logspace(-38, 1, 2001)
    x = torch.cat([torch.linspace(-9, 9, 36001), tiny, -tiny, torch.tensor(SPECIALS)])
    return x.to(dtype)


UNARY = {
    "erf": torch.erf,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_sweep_matches_torch(name, dtype):
    fn = UNARY[name]
    x = sweep(dtype)
    cm = minicomp.compile(fn, (x,), target="cpu")
    torch.testing.assert_close(cm(x), eager(fn, x), equal_nan=True)


def test_erf_f32_saturates_exactly_and_stays_in_range():
    x = sweep()
    got = minicomp.compile(torch.erf, (x,), target="cpu")(x)
    finite = ~x.isnan()
    assert bool((got[finite].abs() <= 1.0).all())
    big = x.abs() >= 3.925
    assert torch.equal(got[big], torch.sign(x[big]))  # exactly +-1, as float32 erf rounds
    assert bool(got[x.isnan()].isnan().all())
    assert torch.equal(torch.signbit(got[x == 0]), torch.signbit(x[x == 0]))  # erf(-0.0) = -0.0
    # relative accuracy near 0 (where the absolute tolerance alone would hide errors)
    small = (x.abs() < 1e-3) & (x != 0)
    torch.testing.assert_close(got[small], torch.erf(x[small]), atol=0.0, rtol=1.3e-6)


def test_gelu_f32_far_tail_is_zero_not_rounding_noise():
    """gelu(x) = x/2 (1 + erf(x/sqrt 2)): for very negative x, 1 + erf must be exactly 0."""
    x = torch.tensor([-1e4, -1e6, -1e30, -20.0, -6.0])
    got = minicomp.compile(F.gelu, (x,), target="cpu")(x)
    assert bool((got.abs() <= 1e-7).all()), got


def test_erf_f64_uses_a_float64_accurate_path():
    x = sweep(torch.float64)
    got = minicomp.compile(torch.erf, (x,), target="cpu")(x)
    ok = ~x.isnan()
    assert float((got[ok] - torch.erf(x[ok])).abs().max()) <= 1e-15
    assert bool(got[~ok].isnan().all())


def test_unary_non_contiguous_input():
    base = torch.randn(64, 96, generator=torch.Generator().manual_seed(3)) * 3
    x = base.t()[::2]
    cm = minicomp.compile(F.gelu, (x,), target="cpu")
    torch.testing.assert_close(cm(x), F.gelu(x))


ROWWISE = {
    "softmax": lambda x: torch.softmax(x, -1),
    "scaled_softmax": lambda x: torch.softmax(x * 0.17, -1),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "layer_norm": lambda x: F.layer_norm(x, x.shape[-1:]),
}

# (rows, cols): small single-threaded kernels, rows enough to split across threads,
# a single row, size-1 rows, size-0 rows, no rows.
SHAPES = [(3, 5), (256, 64), (1024, 128), (1, 4096), (4096, 1), (16, 0), (0, 16), (257, 33)]


def rows_with_specials(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(rows * 31 + cols)
    x = torch.randn(rows, cols, generator=g) * 4
    if rows >= 8 and cols >= 4:
        x[1, 2] = math.nan
        x[2, 0] = math.inf
        x[3, :] = -math.inf
        x[4, 1] = -math.inf
        x[5, :] = -0.0
        x[6, 3] = 1e30
        x[7, :] = 1e-40
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(ROWWISE))
def test_rowwise_matches_torch_and_split_is_bit_identical(name, shape, dtype):
    fn = ROWWISE[name]
    x = rows_with_specials(*shape, dtype)
    one = minicomp.compile(fn, (x,), target="cpu", threads=1)(x)
    two = minicomp.compile(fn, (x,), target="cpu", threads=2)(x)
    ref = fn(x)
    if name == "layer_norm" and shape[1] == 1 and dtype in (torch.float16, torch.bfloat16):
        # torch's half-precision CPU layer_norm leaves rounding noise (~1e-5 * rstd) in
        # x - mean for one-element rows; the exact answer, which float32 torch gives, is 0.
        ref = fn(x.float()).to(dtype)
    torch.testing.assert_close(two, ref, equal_nan=True)
    assert torch.equal(bits(one), bits(two))


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of a float tensor (so NaN == NaN and -0.0 != 0.0)."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.dtype.itemsize])


@pytest.mark.parametrize("name", sorted(ROWWISE))
def test_rowwise_non_contiguous_and_3d(name):
    fn = ROWWISE[name]
    base = torch.randn(8, 4, 96, 130, generator=torch.Generator().manual_seed(5))
    x = base[:, :, :, 1:129].transpose(1, 2)  # strided rows, 8*96*4 of them
    cm = minicomp.compile(fn, (x,), target="cpu")
    torch.testing.assert_close(cm(x), fn(x))


def test_costly_rowwise_kernels_split_and_cheap_small_ones_do_not():
    """Softmax over 16K elements (exp per element) is split across the pool; a
    16K-element add (memory bound) is not."""
    x = torch.randn(1, 4, 64, 64)
    soft = minicomp.compile(lambda t: torch.softmax(t, -1), (x,), target="cpu")
    add = minicomp.compile(lambda t: t + 1.0, (x,), target="cpu")
    assert "minicomp_pool_run" in soft.source("llvm")
    assert "minicomp_pool_run" not in add.source("llvm")
    torch.testing.assert_close(soft(x), torch.softmax(x, -1))
