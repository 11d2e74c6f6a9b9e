"""Conversions between torch tensors and the numpy arrays the IR and interpreter hold.

bf16 has no numpy type: a bf16 tensor travels as a float32 array holding bf16
values, tagged ``DType.bf16`` (see :mod:`minicomp.ir.dtypes`).
"""
from __future__ import annotations

import numpy as np
import torch

from minicomp.errors import UnsupportedOpError
from minicomp.ir.dtypes import DType

_TORCH_DTYPES = {torch.float32: DType.f32, torch.float64: DType.f64, torch.float16: DType.f16,
                 torch.bfloat16: DType.bf16, torch.int32: DType.i32, torch.int64: DType.i64,
                 torch.bool: DType.bool}

_TO_TORCH = {v: k for k, v in _TORCH_DTYPES.items()}


def ir_dtype(dtype: torch.dtype, op: str = "dtype", where: str | None = None) -> DType:
    """The IR dtype of a torch dtype; UnsupportedOpError for the ones minicomp lacks."""
    try:
        return _TORCH_DTYPES[dtype]
    except KeyError:
        raise UnsupportedOpError(op, where, f"dtype {dtype} is not supported "
                                            f"(minicomp has {', '.join(d.value for d in DType)})") from None


def to_numpy(t: torch.Tensor) -> tuple[np.ndarray, DType]:
    """A tensor's values as a numpy array plus its IR dtype (bf16 values held in float32)."""
    dt = ir_dtype(t.dtype)
    t = t.detach().cpu()
    if dt is DType.bf16:
        t = t.float()
    return t.contiguous().numpy().copy(), dt


def to_torch(array: np.ndarray, dtype: DType) -> torch.Tensor:
    """A torch tensor of IR dtype ``dtype`` from a numpy array (bf16: float32 storage)."""
    arr = np.array(array, copy=True, order="C")  # keeps 0-d arrays 0-d
    return torch.from_numpy(arr).to(torch_dtype(dtype))


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch dtype of an IR dtype."""
    return _TO_TORCH[dtype]
