"""The Triton "ops handler": one table entry per scalar primitive of ``ir/kernel.py``.

Values in generated kernels are held in their *compute* representation:
f16 and bf16 values live in float32 registers, rounded to their storage
precision after every primitive (what eager PyTorch computes), f32/f64/int/bool
values in their own Triton type. Each handler takes the operand expressions
(Python source text) and returns the expression text of the result.

:data:`PRELUDE` holds the small ``@triton.jit`` helpers the handlers call. Where a
libdevice function exists on the GPU but not in the Triton interpreter (tanh,
pow), the prelude defines an accurate formula for the interpreter instead.

Generated code calls only Triton builtins (``tl.where``, ``tl.full``, ``tl.reduce``,
...) and prelude helpers, never the ``@triton.jit`` functions of Triton's standard
library (``tl.sum``, ``tl.cdiv``, ``tl.zeros``, ``tl.max``, ...): those are
built once, in the mode (interpreter or compiler) ``triton.language`` was first
imported in, and cannot be called from a kernel loaded in the other mode. The
generated module is therefore loadable in either mode, whatever order imports ran in.
"""
from __future__ import annotations

import math
from typing import Callable

from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import PRIMITIVES, REDUCE_KINDS

#: Triton element type of each storage dtype.
TL_DTYPE: dict[DType, str] = {
    DType.f32: "tl.float32", DType.f64: "tl.float64", DType.f16: "tl.float16", DType.bf16: "tl.bfloat16",
    DType.i32: "tl.int32", DType.i64: "tl.int64", DType.bool: "tl.int1",
}

#: Pointer type strings for ``triton.compile`` signatures.
PTR_SIG: dict[DType, str] = {
    DType.f32: "*fp32", DType.f64: "*fp64", DType.f16: "*fp16", DType.bf16: "*bf16",
    DType.i32: "*i32", DType.i64: "*i64", DType.bool: "*i1",
}


def compute_tl(dtype: DType) -> str:
    """Triton type of the register representation of ``dtype`` (f16/bf16 -> float32)."""
    return TL_DTYPE[dtype.compute]


def round_to(dtype: DType, expr: str) -> str:
    """Round a float32 register value to ``dtype``'s precision (identity for other dtypes)."""
    if dtype is DType.f16:
        return f"_round_f16({expr})"
    if dtype is DType.bf16:
        return f"_round_bf16({expr})"
    return expr


Handler = Callable[..., str]

_COMMON: dict[str, Handler] = {
    "add": lambda a, b: f"{a} + {b}",
    "sub": lambda a, b: f"{a} - {b}",
    "mul": lambda a, b: f"{a} * {b}",
    "neg": lambda a: f"-{a}",
    "abs": lambda a: f"tl.abs({a})",
    "lt": lambda a, b: f"{a} < {b}",
    "le": lambda a, b: f"{a} <= {b}",
    "gt": lambda a, b: f"{a} > {b}",
    "ge": lambda a, b: f"{a} >= {b}",
    "eq": lambda a, b: f"{a} == {b}",
    "ne": lambda a, b: f"{a} != {b}",
    "where": lambda c, a, b: f"tl.where({c}, {a}, {b})",
}

FLOAT_OPS: dict[str, Handler] = {
    **_COMMON,
    # times -1.0, not unary minus: some Triton releases lower float ``-x`` to ``0 - x``,
    # which turns +0.0 into +0.0 instead of -0.0 (and the product is exact for every value)
    "neg": lambda a: f"{a} * -1.0",
    "div": lambda a, b: f"{a} / {b}",
    "max": lambda a, b: f"tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)",
    "min": lambda a, b: f"tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)",
    "pow": lambda a, b: f"_pow({a}, {b})",
    "mod": lambda a, b: f"{a} % {b}",  # Triton's float % is fmod (sign of the dividend)
    "floordiv": lambda a, b: f"tl.floor({a} / {b})",
    "exp": lambda a: f"tl.exp({a})",
    "log": lambda a: f"tl.log({a})",
    "sqrt": lambda a: f"tl.sqrt_rn({a})",
    "sin": lambda a: f"tl.sin({a})",
    "cos": lambda a: f"tl.cos({a})",
    "tanh": lambda a: f"_tanh({a})",
    "erf": lambda a: f"tl.erf({a})",
    "floor": lambda a: f"tl.floor({a})",
    "ceil": lambda a: f"tl.ceil({a})",
    "isnan": lambda a: f"{a} != {a}",
}

#: f64 overrides (tl.sqrt_rn is f32-only; f64 sqrt is correctly rounded anyway).
F64_OPS: dict[str, Handler] = {"sqrt": lambda a: f"tl.sqrt({a})"}

INT_OPS: dict[str, Handler] = {
    **_COMMON,
    "div": lambda a, b: f"{a} // {b}",  # Triton's integer // truncates toward zero, like C
    "max": lambda a, b: f"tl.maximum({a}, {b})",
    "min": lambda a, b: f"tl.minimum({a}, {b})",
    "pow": lambda a, b: f"_ipow({a}, {b})",
    "mod": lambda a, b: f"_imod({a}, {b})",
    "floordiv": lambda a, b: f"_ifloordiv({a}, {b})",
    "isnan": lambda a: f"{a} != {a}",
    "and": lambda a, b: f"{a} & {b}",
    "or": lambda a, b: f"{a} | {b}",
    "xor": lambda a, b: f"{a} ^ {b}",
    "not": lambda a: f"~{a}",
}

BOOL_OPS: dict[str, Handler] = {
    **{k: _COMMON[k] for k in ("lt", "le", "gt", "ge", "eq", "ne", "where")},
    "and": lambda a, b: f"{a} & {b}",
    "or": lambda a, b: f"{a} | {b}",
    "xor": lambda a, b: f"{a} ^ {b}",
    "not": lambda a: f"{a} == 0",
    "max": lambda a, b: f"{a} | {b}",
    "min": lambda a, b: f"{a} & {b}",
    "isnan": lambda a: f"{a} != {a}",
    "add": lambda a, b: f"{a} | {b}",
    "mul": lambda a, b: f"{a} & {b}",
}


#: Primitives implemented by prelude functions (their operands must be tensors, not literals).
HELPER_OPS = frozenset({"pow", "mod", "floordiv", "tanh"})


def handler(op: str, operand: DType) -> Handler:
    """The handler for primitive ``op`` on operands of dtype ``operand``; ValueError if none."""
    if op not in PRIMITIVES:
        raise ValueError(f"unknown primitive {op!r}")
    if operand is DType.f64 and op in F64_OPS:
        return F64_OPS[op]
    table = FLOAT_OPS if operand.is_float else INT_OPS if operand.is_int else BOOL_OPS
    if op not in table:
        raise ValueError(f"primitive {op!r} is not defined on {operand} operands")
    return table[op]


# Reductions: op -> (identity for floats, identity for ints, combine helper or None)
def reduce_identity(op: str, dtype: DType) -> str:
    """Source text of the identity element of reduction ``op`` in ``dtype`` (its compute type),
    from :data:`~minicomp.ir.kernel.REDUCE_KINDS` (one table for both backends)."""
    kind = REDUCE_KINDS.get(op)
    if kind is None:
        raise ValueError(f"unknown reduction {op!r}")
    value = kind.identity(dtype)
    if isinstance(value, float) and math.isinf(value):
        return 'float("-inf")' if value < 0 else 'float("inf")'
    return str(int(value))


def combine_fn(op: str, dtype: DType) -> str:
    """Name of the prelude ``@triton.jit`` function combining two partial results of ``op``."""
    kind = "f" if dtype.is_float else "i"
    return {"sum": "_add", "prod": "_mul", "max": f"_{kind}max", "min": f"_{kind}min",
            "argmax": "_argmax", "argmin": "_argmin"}[op]


PRELUDE = '''
INTERPRET = bool(triton.knobs.runtime.interpret)


@triton.jit
def _round_f16(x):
    return x.to(tl.float16).to(tl.float32)


@triton.jit
def _round_bf16(x):
    # round-to-nearest-even by bit arithmetic: exact in the interpreter and on the GPU
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))


@triton.jit
def _imod(a, b):
    r = a % b  # C remainder; shift to the divisor's sign (floor semantics)
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


@triton.jit
def _ifloordiv(a, b):
    q = a // b
    return tl.where(((a % b) != 0) & ((a < 0) != (b < 0)), q - 1, q)


@triton.jit
def _ipow(a, b):
    r = a * 0 + 1
    for _ in tl.static_range(64):
        r = tl.where((b & 1) != 0, r * a, r)
        a = a * a
        b = b >> 1
    return r


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _fmax(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _fmin(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _imax(a, b):
    return tl.maximum(a, b)


@triton.jit
def _imin(a, b):
    return tl.minimum(a, b)


@triton.jit
def _argmax(v1, i1, v2, i2):
    # first index of the largest value; NaN is larger than everything
    n1 = v1 != v1
    n2 = v2 != v2
    first = (v1 > v2) | ((v1 == v2) & (i1 < i2)) | (n1 & (n2 == 0)) | (n1 & n2 & (i1 < i2))
    return tl.where(first, v1, v2), tl.where(first, i1, i2)


@triton.jit
def _argmin(v1, i1, v2, i2):
    n1 = v1 != v1
    n2 = v2 != v2
    first = (v1 < v2) | ((v1 == v2) & (i1 < i2)) | (n1 & (n2 == 0)) | (n1 & n2 & (i1 < i2))
    return tl.where(first, v1, v2), tl.where(first, i1, i2)


if INTERPRET:
    # Sum of each row of a [XBLOCK, RBLOCK] tile. The interpreter's tl.reduce with a combine
    # function adds the lanes one after another (in Python): a pairwise tree instead, as a
    # GPU's reduction tree adds them, so a long row is as accurate here as on the GPU.
    @triton.jit
    def _row_sum(x):
        while x.shape[1] > 1:
            a, b = tl.split(tl.permute(tl.reshape(x, [x.shape[0], 2, x.shape[1] // 2]), (0, 2, 1)))
            x = a + b
        return tl.reshape(x, [x.shape[0]])

    # The interpreter multiplies bf16 tiles as their raw uint16 storage: widen first
    # (bf16 products are exact in float32, so the float32 sum is what tl.dot computes).
    @triton.jit
    def _dot_bf16(a, b):
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")

    # libdevice is unavailable in the interpreter: accurate formulas evaluated in float64
    @triton.jit
    def _tanh(x):
        d = x.to(tl.float64)
        a = tl.abs(d)
        t = tl.exp(-2.0 * a)
        big = (1.0 - t) / (1.0 + t)
        s = d * d
        small = a * (1.0 + s * (-1.0 / 3 + s * (2.0 / 15 + s * (-17.0 / 315 + s * (62.0 / 2835)))))
        # the odd series keeps the sign of zero: tanh(-0.0) is -0.0
        r = tl.where(a < 0.05, d * (small / tl.where(a == 0, 1.0, a)), tl.where(d < 0, big * -1.0, big))
        return r.to(x.dtype)

    @triton.jit
    def _pow(a, b):
        x = a.to(tl.float64)
        y = b.to(tl.float64)
        mag = tl.exp(y * tl.log(tl.abs(x)))
        is_int = tl.floor(y) == y
        odd = is_int & (tl.abs(y % 2.0) == 1.0)
        neg = (x < 0) | ((x == 0) & (1.0 / x < 0))  # -0.0 counts as negative (C pow)
        r = tl.where(neg & odd, mag * -1.0, mag)  # not -mag: see FLOAT_OPS["neg"]
        r = tl.where((x < 0) & (x > float("-inf")) & (is_int == 0), float("nan"), r)
        r = tl.where((x == -1) & (tl.abs(y) == float("inf")), 1.0, r)
        r = tl.where(y == 0, 1.0, tl.where(x == 1, 1.0, r))
        return r.to(a.dtype)
else:
    @triton.jit
    def _row_sum(x):
        return tl.reduce(x, 1, _add)

    @triton.jit
    def _dot_bf16(a, b):
        return tl.dot(a, b)

    @triton.jit
    def _tanh(x):
        return libdevice.tanh(x)

    # libdevice's pow drops the sign of a zero or infinite result for a negative base
    # (-0.0 or -inf) and an odd integer exponent (seen on an H100): C gives -0.0 / -inf
    @triton.jit
    def _pow(a, b):
        r = libdevice.pow(a, b)
        odd = (tl.floor(b) == b) & (tl.abs(b % 2.0) == 1.0)
        neg = (a < 0) | ((a == 0) & (1.0 / a < 0))
        return tl.where(odd & neg, tl.abs(r) * -1.0, r)
'''
