"""Eager PyTorch as the reference for elementwise tests, with one documented repair.

On the project's AVX-512 machine (Zen 4, torch 2.13.0 CPU, also with ATEN_CPU_CAPABILITY=avx2;
the earlier AVX2-only machine's CI passed these tests), eager's vectorized float32/bfloat16 ``gelu``
returns NaN for ``+inf``: ``F.gelu(torch.full((8,), inf))`` is NaN, while the same call on one
element, or in float64, gives ``inf``, the limit of ``x * Phi(x)``. Where eager's
float32/bfloat16 result is NaN but its float64 result is not, the float64 value (rounded to
the dtype) is the reference instead; every other element is eager's own result.
"""
from __future__ import annotations

import torch


def eager(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` in eager PyTorch, NaNs that float64 contradicts replaced by float64's value."""
    ref = fn(x)
    if x.dtype not in (torch.float32, torch.bfloat16) or ref.dtype != x.dtype:
        return ref
    wide = fn(x.double())
    bad = ref.isnan() & ~wide.isnan()
    return torch.where(bad, wide.to(ref.dtype), ref) if bool(bad.any()) else ref
