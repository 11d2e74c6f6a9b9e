"""Tensor types: dtype, shape and memory layout.

A dimension is an ``int`` or a symbolic size (:class:`~minicomp.ir.symbolic.Sym`, printed
``f32[s0,128]``); shape rules use plain arithmetic, which works on both.

A layout is a *dim order*: the dims of the tensor listed from outermost to
innermost in memory. The default (row-major) order ``(0, 1, ..., n-1)`` is not
printed; channels-last for a 4-d tensor is ``(0, 2, 3, 1)`` and prints as
``f32[1,64,56,56]{0,2,3,1}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.symbolic import Sym, shape_symbols, sym_max


@dataclass(frozen=True)
class TensorType:
    """The static type of an SSA value."""

    dtype: DType
    shape: tuple[int, ...]
    order: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(s if isinstance(s, Sym) else int(s) for s in self.shape))
        if any(not isinstance(s, Sym) and s < 0 for s in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")
        if self.order is not None:
            order = tuple(int(o) for o in self.order)
            if sorted(order) != list(range(len(self.shape))):
                raise ValueError(f"layout {order} is not a permutation of the dims of {self.shape}")
            object.__setattr__(self, "order", None if order == tuple(range(len(order))) else order)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def symbolic(self) -> bool:
        """True when some dimension is a symbolic size."""
        return any(isinstance(s, Sym) for s in self.shape)

    @property
    def symbols(self) -> set[str]:
        return shape_symbols(self.shape)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def dim_order(self) -> tuple[int, ...]:
        return self.order if self.order is not None else tuple(range(self.rank))

    @property
    def strides(self) -> tuple[int, ...]:
        """Element strides implied by the shape and layout (a dense buffer)."""
        strides = [0] * self.rank
        step = 1
        for d in reversed(self.dim_order):
            strides[d] = step
            step *= sym_max(self.shape[d], 1)
        return tuple(strides)

    def with_shape(self, shape: tuple[int, ...]) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape, self.order)

    def with_order(self, order: tuple[int, ...] | None) -> "TensorType":
        return TensorType(self.dtype, self.shape, order)

    def __str__(self) -> str:
        text = f"{self.dtype}[{','.join(map(str, self.shape))}]"
        if self.order is not None:
            text += "{" + ",".join(map(str, self.order)) + "}"
        return text


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy/PyTorch broadcasting of shapes; raises ValueError when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {list(shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)
