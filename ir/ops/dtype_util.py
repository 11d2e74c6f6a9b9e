"""Conversions between numpy dtypes and IR dtypes, and small shared helpers for references.

Reference implementations receive *storage* arrays: bf16 values arrive as float32
arrays, so a reference treats them like f32 (both compute in f32) and the caller
(:func:`minicomp.ir.interpreter.evaluate_node`) rounds the result to bf16.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, promote

_FROM_NP = {np.dtype(np.float32): DType.f32, np.dtype(np.float64): DType.f64, np.dtype(np.float16): DType.f16,
            np.dtype(np.int32): DType.i32, np.dtype(np.int64): DType.i64, np.dtype(np.bool_): DType.bool}


def dtype_of_numpy(dt: np.dtype) -> DType:
    """The IR dtype for a numpy dtype (float32 maps to f32, never bf16)."""
    try:
        return _FROM_NP[np.dtype(dt)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no minicomp dtype") from None


def dtype_of(array: np.ndarray) -> DType:
    """The IR dtype a reference sees for a storage array (bf16 arrays read as f32)."""
    return dtype_of_numpy(np.asarray(array).dtype)


def promote_all(dtypes: Sequence[DType]) -> DType:
    """:func:`promote` folded over several dtypes (at least one)."""
    out = dtypes[0]
    for d in dtypes[1:]:
        out = promote(out, d)
    return out


def float_of(dtype: DType) -> DType:
    """The dtype a float op gives for ``dtype``: ints and bool become f32 (torch's default float)."""
    return dtype if dtype.is_float else DType.f32


def as_dtype(value: Any) -> DType | None:
    """Read an optional dtype attribute (None, a DType, or its IR spelling)."""
    if value is None or isinstance(value, DType):
        return value
    return DType.parse(str(value))


def to_compute(array: np.ndarray, dtype: DType) -> np.ndarray:
    """``array`` converted to the numpy type ``dtype`` computes in (f16/bf16 -> float32)."""
    return np.asarray(array).astype(dtype.compute.np, copy=False)


def precise(fn):
    """Wrap a float numpy function so float32 inputs are evaluated in float64 and rounded once.

    Gives correctly rounded results for transcendental functions, which PyTorch's
    (1-ulp) implementations match within default tolerances.
    """
    def wrapped(x: np.ndarray, *rest, **attrs) -> np.ndarray:
        if x.dtype == np.float32:
            rest = tuple(r.astype(np.float64) if r.dtype == np.float32 else r for r in rest)
            return np.asarray(fn(x.astype(np.float64), *rest, **attrs)).astype(np.float32)
        return np.asarray(fn(x, *rest, **attrs))
    return wrapped
