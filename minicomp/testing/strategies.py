"""Hypothesis strategies for minicomp tensor types and tensor values.

* :func:`tensor_types` draws a :class:`~minicomp.ir.types.TensorType` with small
  shapes where size-0 and size-1 dims are common (they are where compilers break).
* :func:`broadcastable` draws a type whose shape broadcasts against a given one.
* :func:`tensor_values` draws a numpy array for a type: finite values in a modest
  range by default, NaN, +-inf and -0.0 mixed in when ``special=True`` (large and tiny
  magnitudes too with ``magnitudes=True``); ints in a
  small range; bf16 values are float32 arrays rounded to bfloat16.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.types import TensorType, broadcast_shapes

ALL_DTYPES: tuple[DType, ...] = tuple(DType)
FLOAT_DTYPES: tuple[DType, ...] = (DType.f32, DType.f64, DType.f16, DType.bf16)

#: Default magnitude bound of finite float values: keeps exp/pow chains finite and
#: random graphs well conditioned enough for default tolerances.
FLOAT_BOUND = 4.0
#: Default bound of integer values: products of a few stay far from i32 overflow.
INT_BOUND = 20


@st.composite
def shapes(draw: st.DrawFn, max_rank: int = 5, max_side: int = 5, allow_empty: bool = True,
           min_rank: int = 0, max_numel: int = 256) -> tuple[int, ...]:
    """A shape of rank in ``[min_rank, max_rank]`` with sides in ``[0 or 1, max_side]``.

    Size-1 dims are drawn often (a third of dims); size-0 dims only when
    ``allow_empty``. The product of the sides is at most ``max_numel``.
    """
    rank = draw(st.integers(min_rank, max_rank))
    low = 0 if allow_empty else 1
    side = st.one_of(st.just(1), st.integers(low, max_side)) if max_side >= 1 else st.just(low)
    dims = [draw(side) for _ in range(rank)]
    while int(np.prod(dims, dtype=np.int64)) > max_numel:
        # Shrink the largest side until the tensor is small enough.
        i = int(np.argmax(dims))
        dims[i] = max(1, dims[i] // 2)
    return tuple(dims)


@st.composite
def tensor_types(draw: st.DrawFn, dtypes: Sequence[DType] = ALL_DTYPES, max_rank: int = 5,
                 allow_empty: bool = True, max_side: int = 5, min_rank: int = 0,
                 max_numel: int = 256) -> TensorType:
    """A dense row-major :class:`TensorType` with a dtype from ``dtypes``.

    Guarantees: ``min_rank <= rank <= max_rank``, every side ``<= max_side``,
    ``numel <= max_numel``, and no size-0 side unless ``allow_empty``.
    """
    dtype = draw(st.sampled_from(list(dtypes)))
    shape = draw(shapes(max_rank=max_rank, max_side=max_side, allow_empty=allow_empty,
                        min_rank=min_rank, max_numel=max_numel))
    return TensorType(dtype, shape)


@st.composite
def broadcastable(draw: st.DrawFn, base: TensorType | tuple[int, ...], dtypes: Sequence[DType] | None = None,
                  max_rank: int = 5) -> TensorType:
    """A type whose shape broadcasts with ``base`` (numpy rules).

    The dtype is ``base``'s dtype unless ``dtypes`` is given. Dims may be dropped
    from the front, set to 1, or (when ``base`` has a 1 there) grown.
    """
    shape = base.shape if isinstance(base, TensorType) else tuple(base)
    if dtypes is None:
        dtype = base.dtype if isinstance(base, TensorType) else DType.f32
    else:
        dtype = draw(st.sampled_from(list(dtypes)))
    other = draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=max(max_rank, len(shape)),
                                          min_side=1 if 0 not in shape else 0, max_side=4))
    broadcast_shapes(shape, other)  # guaranteed by hypothesis; raises loudly if not
    return TensorType(dtype, other)


@st.composite
def broadcastable_pairs(draw: st.DrawFn, dtypes: Sequence[DType] = ALL_DTYPES, max_rank: int = 4,
                        allow_empty: bool = True) -> tuple[TensorType, TensorType]:
    """Two types whose shapes broadcast together (dtypes drawn independently)."""
    a = draw(tensor_types(dtypes, max_rank=max_rank, allow_empty=allow_empty))
    b = draw(broadcastable(a, dtypes=dtypes, max_rank=max_rank))
    return (a, b) if draw(st.booleans()) else (b, a)


#: Large and tiny finite magnitudes per float dtype (all normal numbers): squares overflow, products
#: underflow, and sums with ordinary values lose their low bits.
MAGNITUDES = {DType.f16: (3.0e4, 1.0e-4), DType.bf16: (1.0e30, 1.0e-30), DType.f32: (1.0e30, 1.0e-30),
              DType.f64: (1.0e200, 1.0e-200)}


#: The special float values ``special=True`` mixes in.
SPECIALS = (float("nan"), float("inf"), float("-inf"), -0.0, 0.0)


def _float_elements(dtype: DType, special: bool, bound: float, magnitudes: bool = False) -> st.SearchStrategy[float]:
    width = {DType.f16: 16, DType.f64: 64}.get(dtype, 32)
    finite = st.floats(-bound, bound, width=width, allow_subnormal=False)
    if not special:
        return finite
    values = list(SPECIALS)
    if magnitudes:
        big, tiny = MAGNITUDES[dtype]
        values += [big, -big, tiny, -tiny]
    return st.one_of(finite, st.sampled_from(values))


def elements(dtype: DType, special: bool = False, bound: float | None = None,
             magnitudes: bool = False) -> st.SearchStrategy:
    """Scalar values of ``dtype``: see :func:`tensor_values` for the ranges."""
    if dtype is DType.bool:
        return st.booleans()
    if dtype.is_int:
        b = int(bound) if bound is not None else INT_BOUND
        return st.integers(-b, b)
    return _float_elements(dtype, special, bound if bound is not None else FLOAT_BOUND, magnitudes)


@st.composite
def tensor_values(draw: st.DrawFn, ttype: TensorType, special: bool = False,
                  bound: float | None = None, magnitudes: bool = False) -> np.ndarray:
    """A C-contiguous numpy array holding a value of type ``ttype``.

    Floats are finite and within ``[-bound, bound]`` (default :data:`FLOAT_BOUND`)
    unless ``special``, which mixes in NaN, +inf, -inf and -0.0 (and, with
    ``magnitudes``, the large and tiny values of :data:`MAGNITUDES`). Ints are within
    ``[-bound, bound]`` (default :data:`INT_BOUND`). The array's dtype is
    ``ttype.dtype.np`` (float32 for bf16, with values already rounded to bf16).
    """
    dtype = ttype.dtype
    arr = draw(hnp.arrays(dtype.np, ttype.shape, elements=elements(dtype, special, bound, magnitudes)))
    if special and dtype.is_float and arr.size:
        # hypothesis fills most of an array with one value: place a few specials explicitly
        flat = arr.reshape(-1).copy()
        for _ in range(draw(st.integers(0, min(3, flat.size)))):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIALS))
        arr = flat.reshape(arr.shape)
    arr = np.array(round_to_dtype(arr, dtype), order="C")  # (ascontiguousarray makes 0-d 1-d)
    return arr


def to_torch(array: np.ndarray, dtype: DType):
    """The torch tensor for a numpy value of IR dtype ``dtype`` (bf16 from its float32 storage)."""
    import torch
    t = torch.from_numpy(np.array(array, order="C"))
    return t.to(torch.bfloat16) if dtype is DType.bf16 else t
