"""Conversions between numpy dtypes and IR dtypes."""
from __future__ import annotations

import numpy as np

from minicomp.ir.dtypes import DType

_FROM_NP = {np.dtype(np.float32): DType.f32, np.dtype(np.float64): DType.f64, np.dtype(np.float16): DType.f16,
            np.dtype(np.int32): DType.i32, np.dtype(np.int64): DType.i64, np.dtype(np.bool_): DType.bool}


def dtype_of_numpy(dt: np.dtype) -> DType:
    """The IR dtype for a numpy dtype (float32 maps to f32, never bf16)."""
    try:
        return _FROM_NP[np.dtype(dt)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no minicomp dtype") from None
