"""Element types of the IR: the seven dtypes minicomp carries end to end.

Each :class:`DType` knows its short IR name (``f32``), its numpy storage type and
its size. ``bf16`` has no numpy type: the reference interpreter stores bf16
values in float32 arrays rounded to bfloat16 precision after every op
(:func:`round_to_dtype`), which is exactly what PyTorch computes.
"""
from __future__ import annotations

import enum

import numpy as np


class DType(enum.Enum):
    """A tensor element type. ``value`` is the IR spelling."""

    f32 = "f32"
    f64 = "f64"
    f16 = "f16"
    bf16 = "bf16"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def np(self) -> np.dtype:
        """numpy dtype used to *store* values of this type (bf16 -> float32)."""
        return np.dtype(_NP[self])

    @property
    def compute(self) -> "DType":
        """The type arithmetic runs in: f16 and bf16 compute in f32, as PyTorch does on CPU."""
        return DType.f32 if self in (DType.f16, DType.bf16) else self

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    @staticmethod
    def parse(text: str) -> "DType":
        try:
            return DType(text)
        except ValueError:
            raise ValueError(f"unknown dtype {text!r}; expected one of {[d.value for d in DType]}") from None


_FLOATS = {DType.f32, DType.f64, DType.f16, DType.bf16}
_ITEMSIZE = {DType.f32: 4, DType.f64: 8, DType.f16: 2, DType.bf16: 2, DType.i32: 4, DType.i64: 8, DType.bool: 1}
_NP = {DType.f32: np.float32, DType.f64: np.float64, DType.f16: np.float16, DType.bf16: np.float32,
       DType.i32: np.int32, DType.i64: np.int64, DType.bool: np.bool_}

_PROMOTION_ORDER = [DType.bool, DType.i32, DType.i64, DType.bf16, DType.f16, DType.f32, DType.f64]


def promote(a: DType, b: DType) -> DType:
    """Result dtype of a binary op on tensors of dtypes ``a`` and ``b`` (torch's rules for tensors)."""
    if a == b:
        return a
    if {a, b} == {DType.f16, DType.bf16}:
        return DType.f32
    return max(a, b, key=_PROMOTION_ORDER.index)


def round_to_dtype(x: np.ndarray, dtype: DType) -> np.ndarray:
    """Store ``x`` as ``dtype`` in numpy, rounding to bfloat16 (nearest even) for bf16."""
    if dtype is DType.bf16:
        f = np.asarray(x, dtype=np.float32)
        bits = f.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
        out = rounded.view(np.float32)
        return np.where(np.isnan(f), f, out).astype(np.float32)
    return np.asarray(x).astype(dtype.np, copy=False)
