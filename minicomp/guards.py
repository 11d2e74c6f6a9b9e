"""Input guards: what a compiled program accepts, checked on every call.

A :class:`Signature` is the tuple of (shape, dtype) of the graph inputs. Inputs
must be CPU tensors (numpy arrays are converted) of exactly these shapes and
dtypes. Any strides are accepted: the runtime makes non-contiguous inputs
contiguous before the native call (the compiled code assumes dense row-major
buffers), which costs one copy for such inputs and nothing for the common case.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minicomp.errors import GuardError
from minicomp.ir.dtypes import DType

TORCH_DTYPE = {DType.f32: torch.float32, DType.f64: torch.float64, DType.f16: torch.float16,
               DType.bf16: torch.bfloat16, DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}
IR_DTYPE = {v: k for k, v in TORCH_DTYPE.items()}


@dataclass(frozen=True)
class Signature:
    """Shapes and dtypes of a program's inputs: the key of its compiled code."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @staticmethod
    def of(tensors: Sequence[torch.Tensor]) -> "Signature":
        return Signature(tuple(tuple(t.shape) for t in tensors), tuple(t.dtype for t in tensors))

    def __str__(self) -> str:
        return ", ".join(f"{str(d).replace('torch.', '')}{list(s)}" for s, d in zip(self.shapes, self.dtypes))


def as_tensors(args: Sequence[object], expected: int | None = None) -> list[torch.Tensor]:
    """Convert call arguments to CPU tensors, rejecting what cannot be an input."""
    if expected is not None and len(args) != expected:
        raise GuardError(f"compiled model takes {expected} tensor input(s), got {len(args)}")
    out = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(np.ascontiguousarray(a))
        if not isinstance(a, torch.Tensor):
            raise GuardError(f"input {i} is a {type(a).__name__}, expected a torch.Tensor or numpy array")
        check_device(i, a)
        if a.dtype not in IR_DTYPE:
            raise GuardError(f"input {i} has dtype {a.dtype}, which minicomp does not support "
                             f"(supported: {', '.join(str(d) for d in IR_DTYPE)})")
        out.append(a)
    return out


def check_device(i: int, t: torch.Tensor) -> None:
    """CPU tensors only: the native code dereferences host pointers."""
    if t.device.type != "cpu":
        raise GuardError(f"input {i} is on device '{t.device}', but this model was compiled for the CPU; "
                         "move it with .cpu() or compile with a GPU target")


def mismatch(sig: Signature, tensors: Sequence[torch.Tensor]) -> str:
    """A human-readable description of how ``tensors`` differ from ``sig``."""
    for i, (t, shape, dtype) in enumerate(zip(tensors, sig.shapes, sig.dtypes)):
        if tuple(t.shape) != shape:
            return f"input {i} has shape {list(t.shape)}, compiled for {list(shape)}"
        if t.dtype != dtype:
            return f"input {i} has dtype {t.dtype}, compiled for {dtype}"
    return f"inputs ({Signature.of(tensors)}) differ from the compiled signature ({sig})"
