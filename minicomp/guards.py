"""Input guards: what a compiled program accepts, checked on every call.

A :class:`Signature` is the tuple of (shape, dtype) of the graph inputs. Inputs
must be CPU tensors (numpy arrays are converted) of exactly these shapes and
dtypes. Any strides are accepted: the runtime makes non-contiguous inputs
contiguous before the native call (the compiled code assumes dense row-major
buffers), which costs one copy for such inputs and nothing for the common case.

Tensor kinds: only dense (strided) tensors with data are inputs. Sparse, MKL-DNN,
nested, quantized and meta tensors, and numpy arrays in a non-native byte order,
get one :class:`GuardError` naming the input and how to convert it
(:func:`check_kind`). Lazy flags are resolved: a tensor with the negative or
conjugate bit set (``z.conj().imag``, ``t._neg_view()``) is a view whose memory
holds the un-negated values, so it is materialized (``resolve_neg``/``resolve_conj``)
before native code reads its memory (:func:`resolved`).
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
            a = from_numpy(f"input {i}", a)
        if not isinstance(a, torch.Tensor):
            raise GuardError(f"input {i} is a {type(a).__name__}, expected a torch.Tensor or numpy array")
        check_device(i, a)
        a = resolved(f"input {i}", a)
        if a.dtype not in IR_DTYPE:
            raise GuardError(f"input {i} has dtype {a.dtype}, which minicomp does not support "
                             f"(supported: {', '.join(str(d) for d in IR_DTYPE)})")
        out.append(a)
    return out


def from_numpy(label: str, a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory (made C-contiguous); GuardError for arrays torch cannot take."""
    if not a.dtype.isnative:
        raise GuardError(f"{label} is a numpy array in non-native byte order ({a.dtype.str}); convert it with "
                         "a.astype(a.dtype.newbyteorder('='))")
    try:
        return torch.from_numpy(np.ascontiguousarray(a))
    except (TypeError, ValueError, RuntimeError) as err:
        raise GuardError(f"{label} is a numpy array of dtype {a.dtype}, which torch cannot take: {err}") from None


def check_kind(label: str, t: torch.Tensor) -> None:
    """GuardError unless ``t`` is a dense tensor with data (what native code can read)."""
    if t.is_nested:
        raise GuardError(f"{label} is a nested tensor; minicomp takes dense tensors (pad it with "
                         "torch.nested.to_padded_tensor)")
    if t.layout is not torch.strided:
        kind = "an MKL-DNN" if t.layout is torch._mkldnn else "a sparse"
        raise GuardError(f"{label} is {kind} tensor (layout {t.layout}); minicomp takes dense tensors "
                         "(convert it with .to_dense())")
    if t.is_quantized:
        raise GuardError(f"{label} is a quantized tensor ({t.dtype}); minicomp takes float and integer tensors "
                         "(convert it with .dequantize())")
    if t.is_meta:
        raise GuardError(f"{label} is a meta tensor (on device 'meta': a shape without data); pass a tensor that "
                         "holds values")


def resolved(label: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` checked by :func:`check_kind`, with a pending negation or conjugation applied.

    Such a view's memory holds the values before negation/conjugation, and native code
    reads memory: it gets a materialized copy (for such inputs only).
    """
    check_kind(label, t)
    if t.is_neg():
        t = t.resolve_neg()
    if t.is_conj():
        t = t.resolve_conj()
    return t


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
