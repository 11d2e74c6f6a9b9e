"""Kernel descriptions: what fusion produces and both backends (LLVM, Triton) read.

A kernel is a loop nest over dense buffers, with its body written in a tiny
scalar expression language. Backends implement only the primitives listed in
:data:`PRIMITIVES` (plus loads, loop indices and constants); every op's meaning
is written once, as a formula over these primitives, in its OpDef.

Loop kernels (:class:`LoopKernel`) cover pointwise, reduction and row-wise
kernels (softmax, layer_norm: several passes over a row in one kernel).
Contraction kernels (:class:`MatmulKernel`, :class:`ConvKernel`,
:class:`PoolKernel`) are templates with a pointwise epilogue;
:class:`AttentionKernel` chains two products around a softmax.

Index arithmetic is ``i64``. Loop variable ``Var(d)`` is the d-th loop of the
kernel (outer dims first, then inner/reduction dims).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from minicomp.ir import expr_walk
from minicomp.ir.dtypes import DType
from minicomp.ir.symbolic import Dim, Sym
from minicomp.ir.types import TensorType

#: Scalar primitives: name -> number of operands. Comparison results are ``bool``.
PRIMITIVES: dict[str, int] = {
    # arithmetic
    "add": 2, "sub": 2, "mul": 2, "div": 2, "neg": 1, "abs": 1,
    "max": 2, "min": 2,  # NaN-propagating, like torch.maximum / minimum
    "pow": 2, "mod": 2,  # mod: integer index arithmetic (floor semantics), floats: fmod
    "floordiv": 2,       # integer division rounding toward -inf
    # transcendental (floats only)
    "exp": 1, "log": 1, "sqrt": 1, "sin": 1, "cos": 1, "tanh": 1, "erf": 1, "floor": 1, "ceil": 1,
    # comparisons -> bool
    "lt": 2, "le": 2, "gt": 2, "ge": 2, "eq": 2, "ne": 2, "isnan": 1,
    # logic on bool
    "and": 2, "or": 2, "xor": 2, "not": 1,
    # select
    "where": 3,
    # run-time check: check(ok, value, code) is value; where ok is false the kernel records
    # ``code`` (a CHECK_* bit, an i32 Const) in its program's error word (see E.check)
    "check": 3,
}

#: Error bits a program reports from its kernels' ``check`` primitives (bit 0, value 1, is the
#: CPU entry's failed arena allocation). :func:`check_failure` turns them into eager's exception.
CHECK_ZERO_DIVISION = 2  # an integer division or remainder by zero
CHECK_INDEX = 4          # a data-dependent index (embedding id) outside its dimension


@dataclass(frozen=True)
class Var:
    """The value of loop variable ``dim`` (i64)."""

    dim: int
    dtype: DType = DType.i64


@dataclass(frozen=True)
class Size:
    """The run-time value (i64) of size symbol ``name``: a program compiled for symbolic
    shapes reads it from its sizes array (:attr:`Program.symbols`)."""

    name: str
    dtype: DType = DType.i64


@dataclass(frozen=True)
class Const:
    """A scalar constant. ``value`` is a Python int, float or bool."""

    value: Union[int, float, bool]
    dtype: DType


@dataclass(frozen=True)
class Load:
    """``inputs[buf]`` at flat element offset ``index`` (an i64 expression).

    The loaded value has the buffer's storage dtype.
    """

    buf: int
    index: "Expr"
    dtype: DType


@dataclass(frozen=True)
class Op:
    """A primitive applied to operands; ``dtype`` is the result type."""

    op: str
    args: tuple["Expr", ...]
    dtype: DType


@dataclass(frozen=True)
class Cast:
    """Convert ``arg`` to ``dtype`` with C/PyTorch semantics (floats truncate toward 0 to ints)."""

    arg: "Expr"
    dtype: DType


@dataclass(frozen=True)
class Ref:
    """The result of stage ``stage`` (a Reduce) for the current outer point, or
    the accumulator of a contraction kernel (``stage=0``) inside its epilogue."""

    stage: int
    dtype: DType


Expr = Union[Var, Const, Load, Op, Cast, Ref, Size]
_LEAVES = (Var, Const, Load, Op, Cast, Ref, Size)
# ==, hash and repr of the inner nodes without recursion (expressions can be thousands deep).
expr_walk.install(Op, Cast, Load)


@dataclass(frozen=True)
class ReduceKind:
    """A reduction a :class:`Reduce` stage can perform: its identity and result type, written once.

    ``identity(dtype)`` is the value an empty fold yields and the value masked-off lanes
    contribute (a Python scalar of ``dtype``'s compute type); ``arg`` kinds return the
    i64 inner index of the extreme value instead of the value.
    """

    name: str
    #: the identity: "zero", "one", "lowest" (of a maximum) or "highest" (of a minimum) of the dtype
    unit: str
    arg: bool = False

    def identity(self, dtype: DType) -> int | float | bool:
        """The identity element of this reduction in ``dtype``."""
        if self.unit in ("zero", "one"):
            one = self.unit == "one"
            return one if dtype is DType.bool else float(one) if dtype.is_float else int(one)
        low = self.unit == "lowest"
        if dtype is DType.bool:
            return not low
        if dtype.is_float:
            return -math.inf if low else math.inf
        info = np.iinfo(dtype.np)
        return int(info.min) if low else int(info.max)

    def result_dtype(self, dtype: DType) -> DType:
        """The dtype of the stage's result when it folds values of ``dtype``."""
        return DType.i64 if self.arg else dtype


#: Every reduction kind, by the name a :class:`Reduce` stage carries in ``op``.
REDUCE_KINDS: dict[str, ReduceKind] = {k.name: k for k in (
    ReduceKind("sum", "zero"), ReduceKind("prod", "one"), ReduceKind("max", "lowest"),
    ReduceKind("min", "highest"), ReduceKind("argmax", "lowest", arg=True),
    ReduceKind("argmin", "highest", arg=True))}


@dataclass(frozen=True)
class Reduce:
    """Fold ``value`` over all inner points. ``op`` names a :data:`REDUCE_KINDS` entry.

    argmax/argmin return the i64 flat inner index of the first extreme value
    (NaN counts as the extreme, as in PyTorch).
    """

    op: str
    value: Expr
    dtype: DType


@dataclass(frozen=True)
class Store:
    """``outputs[buf][index] = value``; ``inner`` stores at every inner point."""

    buf: int
    index: Expr
    value: Expr
    inner: bool = False


@dataclass(frozen=True)
class Buffer:
    """A kernel argument: a dense buffer of ``type`` (its strides follow the type's layout)."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class LoopKernel:
    """for p in outer: for each stage: (reduce over inner | store).

    Stages run in order for each outer point; a ``Ref(s)`` reads stage ``s``'s
    reduction result. Kind is "pointwise", "reduction" or "copy" (a kernel that
    only moves data).
    """

    name: str
    kind: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    outer: tuple[int, ...]
    inner: tuple[int, ...]
    stages: tuple[Union[Reduce, Store], ...]


@dataclass(frozen=True)
class Access:
    """An affine view of an input buffer: element offset = offset + sum(strides[d] * idx[d])."""

    buf: int
    strides: tuple[int, ...]
    offset: int = 0


@dataclass(frozen=True)
class MatmulKernel:
    """C[b, i, j] = epilogue(sum_k A[b, i, k] * B[b, k, j]), accumulated in ``acc_dtype``.

    ``a`` strides are over (batch..., m, k), ``b`` over (batch..., k, n). The
    epilogue sees ``Ref(0)`` (the accumulator) and loop vars (batch..., i, j);
    each Store writes one output.
    """

    name: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Access
    b: Access
    acc_dtype: DType
    stores: tuple[Store, ...]
    kind: str = "matmul"


@dataclass(frozen=True)
class ConvKernel:
    """2-d convolution out[n, co, oh, ow] = epilogue(sum x[n, ci, ih, iw] * w[co, ci/g, kh, kw]).

    ``x`` strides over (n, c, h, w), ``w`` over (co, ci_per_group, kh, kw). Zero
    padding. Epilogue loop vars are (n, co, oh, ow); ``Ref(0)`` is the accumulator.
    """

    name: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    x: Access
    weight: Access
    acc_dtype: DType
    stores: tuple[Store, ...]
    kind: str = "conv"


@dataclass(frozen=True)
class PoolKernel:
    """2-d max or average pooling over windows of x[n, c, ih, iw]; loop vars (n, c, oh, ow).

    ``op`` is "max" or "avg". For avg, a nonzero ``divisor`` (negative too) overrides the count;
    otherwise the count includes padding iff ``count_include_pad`` (padding is
    clipped to the padded input as in PyTorch).
    """

    name: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    op: str
    n: int
    c: int
    h: int
    w: int
    oh: int
    ow: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    count_include_pad: bool
    divisor: int
    x: Access
    acc_dtype: DType
    stores: tuple[Store, ...]
    kind: str = "pool"


@dataclass(frozen=True)
class AttentionKernel:
    """O[b, i, c] = epilogue(sum_j P[b, i, j] * V[b, j, c]), where each row of P is
    ``softmax_j(score)`` and ``score`` is a pointwise expression of ``Ref(0)`` = sum_p
    Q[b, i, p] * K[b, p, j] (attention's scale, a mask) over loop vars (batch..., i, j).

    ``q`` strides are over (batch..., m, d), ``k`` over (batch..., d, n) (K^T, as a
    MatmulKernel's B), ``v`` over (batch..., n, e). The epilogue (``stores``) sees
    ``Ref(0)`` = O[b, i, c] and loop vars (batch..., i, c). Everything is computed in
    ``acc_dtype``; P never leaves the kernel.
    """

    name: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    batch: tuple[int, ...]
    m: int
    n: int
    d: int
    e: int
    q: Access
    k: Access
    v: Access
    score: "Expr"
    acc_dtype: DType
    stores: tuple[Store, ...]
    kind: str = "attention"


Kernel = Union[LoopKernel, MatmulKernel, ConvKernel, PoolKernel, AttentionKernel]


# -- building expressions ---------------------------------------------------------------
def result_dtype(op: str, args: tuple[Expr, ...]) -> DType:
    if op in ("lt", "le", "gt", "ge", "eq", "ne", "isnan", "and", "or", "xor", "not"):
        return DType.bool
    if op in ("where", "check"):
        return args[1].dtype
    return args[0].dtype


class E:
    """Helpers that build :data:`Expr` trees; used by OpDef ``scalar`` rules.

    Binary helpers accept Python numbers for either side and make constants of
    the other side's dtype.
    """

    @staticmethod
    def const(value, dtype: DType) -> Const:
        if dtype is DType.bool:
            value = bool(value)
        elif dtype.is_int:
            value = int(value)
        else:
            value = float(value)
        return Const(value, dtype)

    @staticmethod
    def _lift(a, b):
        if isinstance(a, Sym):
            a = size_expr(a)
        if isinstance(b, Sym):
            b = size_expr(b)
        if not isinstance(a, _LEAVES):
            a = E.const(a, b.dtype)
        if not isinstance(b, _LEAVES):
            b = E.const(b, a.dtype)
        return a, b

    @staticmethod
    def op(name: str, *args) -> Op:
        if PRIMITIVES[name] != len(args):
            raise ValueError(f"primitive {name} takes {PRIMITIVES[name]} operands")
        if len(args) == 2:
            args = E._lift(*args)
        elif len(args) == 3:
            b, c = E._lift(args[1], args[2])
            args = (args[0], b, c)
        return Op(name, tuple(args), result_dtype(name, tuple(args)))

    @staticmethod
    def cast(x: Expr, dtype: DType) -> Expr:
        return x if x.dtype == dtype else Cast(x, dtype)


def size_expr(x: Dim) -> Expr:
    """A size (an ``int`` or a :class:`~minicomp.ir.symbolic.Sym`) as an i64 expression over
    :class:`Size` leaves: how kernels compute loop bounds, strides and offsets at run time."""
    if not isinstance(x, Sym):
        return Const(int(x), DType.i64)
    total: Expr | None = None
    for mono, coef in x.terms.items():
        term: Expr = Const(coef, DType.i64)
        for atom in mono:
            if isinstance(atom, str):
                leaf: Expr = Size(atom)
            else:
                kind, inner, d = atom
                leaf = Op("floordiv" if kind == "floordiv" else "mod", (size_expr(inner), Const(d, DType.i64)), DType.i64)
            term = leaf if (isinstance(term, Const) and term.value == 1) else Op("mul", (term, leaf), DType.i64)
        total = term if total is None else Op("add", (total, term), DType.i64)
    return total if total is not None else Const(0, DType.i64)


def _binary(name):
    return staticmethod(lambda a, b: E.op(name, a, b))


def _unary(name):
    return staticmethod(lambda a: E.op(name, a))


def _check(ok: Expr, value: Expr, code: int) -> Op:
    """``value``, recording error bit ``code`` (CHECK_*) in the program's error word where ``ok``
    (bool) is false: the call then raises :func:`check_failure`'s exception, as eager would."""
    if code not in (CHECK_ZERO_DIVISION, CHECK_INDEX):
        raise ValueError(f"unknown check code {code}")
    return Op("check", (ok, value, Const(code, DType.i32)), value.dtype)


E.check = staticmethod(_check)


def check_failure(code: int) -> Exception:
    """The exception eager PyTorch raises for error word ``code`` (CHECK_* bits; an integer
    division by zero first, when several are set)."""
    if code & CHECK_ZERO_DIVISION:
        return RuntimeError("ZeroDivisionError (integer division or remainder by zero in a compiled kernel)")
    if code & CHECK_INDEX:
        return IndexError("index out of range in self (an embedding or index_select id in a compiled kernel)")
    return RuntimeError(f"compiled kernel reported unknown error code {code}")


def kernel_checks(kernel: Kernel) -> bool:
    """True when some expression of ``kernel`` holds a ``check`` (it then needs an error word)."""
    todo = [kernel]
    seen: set[int] = set()
    while todo:  # iterative: expression trees may be thousands of nodes deep
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Op):
            if x.op == "check":
                return True
            todo.extend(x.args)
        elif isinstance(x, (Cast,)):
            todo.append(x.arg)
        elif isinstance(x, Load):
            todo.append(x.index)
        elif isinstance(x, (Store, Reduce)):
            todo.append(x.value)
            if isinstance(x, Store):
                todo.append(x.index)
        elif isinstance(x, (LoopKernel, MatmulKernel, ConvKernel, PoolKernel, AttentionKernel)):
            todo.extend(getattr(x, "stages", ()) or ())
            todo.extend(getattr(x, "stores", ()) or ())
            if isinstance(x, AttentionKernel):
                todo.append(x.score)
    return False


for _name, _n in PRIMITIVES.items():
    if not hasattr(E, _name):
        setattr(E, _name, _unary(_name) if _n == 1 else _binary(_name) if _n == 2 else
                staticmethod(lambda c, a, b, _nm=_name: E.op(_nm, c, a, b)))
