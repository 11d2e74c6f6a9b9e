"""Elementwise ops: one OpDef each, with dtype rule, numpy reference and scalar rule.

Every op here is defined by three small pieces written side by side:

* a *dtype rule* ``(in_dtypes, attrs) -> (operand_dtypes, result_dtype)``: the
  dtype each operand is cast to before computing (f16/bf16 compute in f32, binary
  ops in the promoted dtype) and the op's result dtype (PyTorch's rules);
* a numpy function over operands already in their ``operand_dtypes``;
* a ``scalar`` rule over :class:`minicomp.ir.kernel.E` primitives, receiving Exprs
  of the ``operand_dtypes`` and returning an Expr of ``result_dtype.compute``
  (``bool`` for predicates).

:func:`scalar_expr` does the whole cast -> rule -> cast dance for lowering.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, promote, round_to_dtype
from minicomp.ir.kernel import CHECK_ZERO_DIVISION, Const, E, Expr
from minicomp.ir.ops import Attr, Category, IRError, OpDef, get_op, register
from minicomp.ir.ops.dtype_util import as_dtype, dtype_of, float_of, precise
from minicomp.ir.types import TensorType, broadcast_shapes

DtypeRule = Callable[[list[DType], dict[str, Any]], tuple[list[DType], DType]]
B = DType.bool
_AND, _OR, _NOT = getattr(E, "and"), getattr(E, "or"), getattr(E, "not")  # Python keywords


# -- shared machinery ----------------------------------------------------------------------
def compute_dtypes(op: str | OpDef, in_dtypes: list[DType], attrs: dict[str, Any]) -> list[DType]:
    """The dtype each operand of elementwise ``op`` is cast to before its ``scalar`` rule."""
    opdef = get_op(op) if isinstance(op, str) else op
    return opdef.dtype_rule(list(in_dtypes), attrs)[0]


def compute_dtype(op: str | OpDef, in_dtypes: list[DType], attrs: dict[str, Any]) -> DType:
    """The dtype the ``scalar`` rule of ``op`` returns: the result dtype's compute type."""
    opdef = get_op(op) if isinstance(op, str) else op
    return opdef.dtype_rule(list(in_dtypes), attrs)[1].compute


def result_dtype(op: str | OpDef, in_dtypes: list[DType], attrs: dict[str, Any]) -> DType:
    """The IR dtype of the result of elementwise ``op`` (same as its inference)."""
    opdef = get_op(op) if isinstance(op, str) else op
    return opdef.dtype_rule(list(in_dtypes), attrs)[1]


def scalar_expr(op: str | OpDef, args: list[Expr], attrs: dict[str, Any],
                index: list[Expr] | None = None) -> Expr:
    """The op applied to scalar Exprs (of the operands' IR dtypes), as an Expr of its result dtype.

    Casts operands to the compute dtypes, applies the op's ``scalar`` rule and
    casts (rounds) the result to the result dtype, which is what eager PyTorch does
    once per op. Generators (``full``, ``arange``: no operands) need ``index``, the
    output multi-index as i64 Exprs.
    """
    opdef = get_op(op) if isinstance(op, str) else op
    operand_dts, out = opdef.dtype_rule([a.dtype for a in args], attrs)
    if opdef.arity == 0:
        if index is None:
            raise IRError(f"generator '{opdef.name}' needs the output index")
        return E.cast(opdef.scalar(index=list(index), **attrs), out)
    value = opdef.scalar(*[E.cast(a, d) for a, d in zip(args, operand_dts)], **attrs)
    return E.cast(value, out)


def _infer(rule: DtypeRule):
    def infer(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        try:
            shape = broadcast_shapes(*[t.shape for t in types])
        except ValueError as e:
            raise IRError(str(e)) from None
        return [TensorType(rule([t.dtype for t in types], attrs)[1], shape)]
    return infer


def _reference(rule: DtypeRule, fn: Callable[..., np.ndarray]):
    def reference(*arrays: np.ndarray, **attrs: Any) -> np.ndarray:
        operand_dts, out = rule([dtype_of(a) for a in arrays], attrs)
        args = [np.asarray(a).astype(d.np, copy=False) for a, d in zip(arrays, operand_dts)]
        with np.errstate(all="ignore"):
            return round_to_dtype(np.asarray(fn(*args, **attrs)), out)
    return reference


def _def(name: str, arity: int, rule: DtypeRule, fn: Callable[..., np.ndarray], scalar: Callable[..., Expr],
         attrs: dict[str, Attr] | None = None, doc: str = "", **more: Any) -> OpDef:
    return register(OpDef(name, Category.ELEMENTWISE, arity, _infer(rule), _reference(rule, fn), attrs or {},
                          scalar=scalar, doc=doc, dtype_rule=rule, **more))


# -- dtype rules ---------------------------------------------------------------------------
def _to_float(ins, attrs):
    out = float_of(ins[0])
    return [out.compute], out


def _numeric(name: str, floats_only: bool = False) -> DtypeRule:
    def rule(ins, attrs):
        if ins[0] is B or (floats_only and not ins[0].is_float):
            kind = "floating-point" if floats_only else "numeric"
            raise IRError(f"op '{name}' needs a {kind} operand, got {ins[0]}")
        return [ins[0].compute], ins[0]
    return rule


def _predicate(ins, attrs):
    return [ins[0].compute], B


def _logical(ins, attrs):
    return [B] * len(ins), B


def _arith(name: str, bool_ok: bool = True, any_bool_ok: bool = True) -> DtypeRule:
    def rule(ins, attrs):
        d = promote(*ins)
        if (d is B and not bool_ok) or (B in ins and not any_bool_ok):
            raise IRError(f"op '{name}' does not accept bool operands (got {ins[0]} and {ins[1]})")
        return [d.compute] * 2, d
    return rule


def _compare(ins, attrs):
    return [promote(*ins).compute] * 2, B


def _div_rule(ins, attrs):
    d, mode = promote(*ins), attrs["rounding_mode"]
    if mode is None:
        return [float_of(d).compute] * 2, float_of(d)
    if mode not in ("trunc", "floor"):
        raise IRError(f"div rounding_mode must be None, 'trunc' or 'floor', got {mode!r}")
    if d is B:
        raise IRError(f"div with rounding_mode={mode!r} does not accept bool operands")
    return [d.compute] * 2, d


def _where_rule(ins, attrs):
    if ins[0] is not B:
        raise IRError(f"where needs a bool condition, got {ins[0]}")
    d = promote(ins[1], ins[2])
    return [B, d.compute, d.compute], d


def _clamp_rule(ins, attrs):
    d = ins[0]
    if attrs["min"] is None and attrs["max"] is None:
        raise IRError("clamp needs at least one of min or max")
    for key in ("min", "max"):
        bound = attrs[key]
        if isinstance(bound, float) and not d.is_float:
            d = DType.f32  # a Python float bound makes an int tensor float, as in torch
        elif isinstance(bound, int) and not isinstance(bound, bool) and d is B:
            d = DType.i64
    return [d.compute], d


def _cast_rule(ins, attrs):
    if not isinstance(attrs["dtype"], DType):
        raise IRError(f"cast needs a dtype attribute, got {attrs['dtype']!r}")
    return [ins[0].compute], attrs["dtype"]


# -- scalar helpers --------------------------------------------------------------------------
def _clamp_expr(x: Expr, lo: float | None, hi: float | None) -> Expr:
    """min(max(x, lo), hi) that keeps NaN and returns ``hi`` when lo > hi, like torch.clamp."""
    if lo is not None:
        x = E.where(E.lt(x, lo), lo, x)
    if hi is not None:
        x = E.where(E.gt(x, hi), hi, x)
    return x


def _clamp_np(x: np.ndarray, lo, hi) -> np.ndarray:
    if lo is not None:
        x = np.where(x < lo, np.asarray(lo).astype(x.dtype), x)
    if hi is not None:
        x = np.where(x > hi, np.asarray(hi).astype(x.dtype), x)
    return x


def _trunc_expr(q: Expr) -> Expr:
    return E.where(E.lt(q, 0), E.ceil(q), E.floor(q))


def _is_float(x: Expr) -> bool:
    return x.dtype.is_float


_SQRT1_2 = 0.7071067811865476
_GELU_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
_GELU_KAPPA = 0.044715
_erf_np = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf_np(x) if x.size else x, dtype=x.dtype)


def _gelu_np(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_GELU_BETA * (x + _GELU_KAPPA * x * x * x)))
    return 0.5 * x * (1 + _erf(x * _SQRT1_2))


def _gelu_expr(x: Expr, approximate: str) -> Expr:
    if approximate == "tanh":
        inner = E.mul(_GELU_BETA, E.add(x, E.mul(E.mul(E.mul(_GELU_KAPPA, x), x), x)))
        return E.mul(E.mul(0.5, x), E.add(1.0, E.tanh(inner)))
    return E.mul(E.mul(0.5, x), E.add(1.0, E.erf(E.mul(x, _SQRT1_2))))


def _gelu_rule(ins, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        raise IRError(f"gelu approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return _numeric("gelu", floats_only=True)(ins, attrs)


# -- unary ops ---------------------------------------------------------------------------------
def _recip(x):
    return 1 / x


_FLOAT_UNARY: dict[str, tuple[Callable, Callable]] = {
    "exp": (np.exp, E.exp),
    "log": (np.log, E.log),
    "sqrt": (np.sqrt, E.sqrt),
    "rsqrt": (lambda x: 1 / np.sqrt(x), lambda x: E.div(1.0, E.sqrt(x))),
    "sin": (np.sin, E.sin),
    "cos": (np.cos, E.cos),
    "tanh": (np.tanh, E.tanh),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: E.div(1.0, E.add(1.0, E.exp(E.neg(x))))),
    "erf": (_erf, E.erf),
    "reciprocal": (_recip, lambda x: E.div(1.0, x)),
}
# sqrt, 1/sqrt and 1/x are IEEE operations PyTorch evaluates in the storage precision
# (f32 for f16/bf16): computing them in f64 and rounding once would differ from it by
# one ulp now and then, which later ops (log of a value near 1) can amplify.
_NATIVE_PRECISION = {"sqrt", "rsqrt", "reciprocal"}
for _name, (_fn, _sc) in _FLOAT_UNARY.items():
    _ref = _fn if _name in _NATIVE_PRECISION else precise(_fn)
    _def(_name, 1, _to_float, lambda x, _f=_ref: _f(x), lambda x, _s=_sc: _s(x),
         doc=f"torch.{_name}; int/bool operands compute in f32")

_def("neg", 1, _numeric("neg"), np.negative, E.neg)
_def("abs", 1, _numeric("abs"), np.abs, E.abs)
_def("relu", 1, _numeric("relu"), lambda x: np.where(x < 0, np.zeros((), x.dtype), x),
     lambda x: E.where(E.lt(x, 0), 0, x), doc="where(x < 0, 0, x): NaN and -0.0 pass through, as in torch")
_def("relu6", 1, _numeric("relu6"), lambda x: _clamp_np(x, 0, 6), lambda x: _clamp_expr(x, 0, 6))
_def("floor", 1, _numeric("floor"), lambda x: np.floor(x) if x.dtype.kind == "f" else x,
     lambda x: E.floor(x) if _is_float(x) else x, doc="identity on ints, as in torch")
_def("silu", 1, _numeric("silu", True), precise(lambda x: x / (1 + np.exp(-x))),
     lambda x: E.div(x, E.add(1.0, E.exp(E.neg(x)))),
     decompose=lambda node, b: b.op("mul", b.up(node.operands[0]), b.op("sigmoid", b.up(node.operands[0]))))
_def("isnan", 1, _predicate, lambda x: np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool),
     lambda x: E.isnan(x) if _is_float(x) else E.const(False, B))
_def("logical_not", 1, _logical, np.logical_not, _NOT)
_def("leaky_relu", 1, _numeric("leaky_relu", True),
     lambda x, negative_slope: np.where(x > 0, x, x * np.asarray(negative_slope, x.dtype)),
     lambda x, negative_slope: E.where(E.gt(x, 0), x, E.mul(x, negative_slope)),
     {"negative_slope": Attr("float", 0.01)})
_def("hardtanh", 1, _numeric("hardtanh"), lambda x, min_val, max_val: _clamp_np(x, min_val, max_val),
     lambda x, min_val, max_val: _clamp_expr(x, min_val, max_val),
     {"min_val": Attr("float", -1.0), "max_val": Attr("float", 1.0)})
def _gelu_decompose(node, b):
    x = b.up(node.operands[0])
    if node.attrs["approximate"] == "tanh":
        inner = b.op("mul", b.c(math.sqrt(2 / math.pi)),
                     b.op("add", x, b.op("mul", b.c(0.044715), b.op("mul", x, b.op("mul", x, x)))))
        t = b.op("tanh", inner)
    else:
        t = b.op("erf", b.op("mul", x, b.c(1 / math.sqrt(2))))
    return b.op("mul", b.op("mul", b.c(0.5), x), b.op("add", b.c(1.0), t))


_def("gelu", 1, _gelu_rule, precise(_gelu_np), _gelu_expr, {"approximate": Attr("str", "none")},
     doc="exact (erf) or tanh approximation, with torch's constants", decompose=_gelu_decompose)
_def("clamp", 1, _clamp_rule, lambda x, min, max: _clamp_np(x, min, max),
     lambda x, min, max: _clamp_expr(x, min, max), {"min": Attr("any", None), "max": Attr("any", None)},
     doc="NaN propagates; min > max gives max everywhere, as in torch")


def _cast_np(x: np.ndarray, dtype: DType) -> np.ndarray:
    if dtype in (DType.f16, DType.bf16) and x.dtype == np.float64:
        x = x.astype(np.float32)  # torch converts double to half via float
    return round_to_dtype(x, dtype)


def _cast_expr(x: Expr, dtype: DType) -> Expr:
    if dtype in (DType.f16, DType.bf16) and x.dtype is DType.f64:
        return E.cast(x, DType.f32)  # the lowering's final cast rounds f32 -> f16, as torch does
    return E.cast(x, dtype.compute)


_def("cast", 1, _cast_rule, _cast_np, _cast_expr, {"dtype": Attr("dtype")},
     doc="torch .to(dtype): floats truncate toward zero to ints, nonzero (and NaN) is True",
     no_op=lambda t, a: True)


# -- binary ops ---------------------------------------------------------------------------------
def _int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torch's integer pow: negative exponents give 0 except for bases 1 and -1."""
    a, b = np.broadcast_arrays(a, b)
    pos = np.power(a, np.where(b < 0, 0, b))
    odd = (np.abs(b) % 2) == 1
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0)).astype(a.dtype)
    return np.where(b < 0, neg, pos)


def _pow_np(a, b):
    return _int_pow(a, b) if a.dtype.kind in "iu" else precise(np.power)(a, b)


def _check_int_zero(a: np.ndarray, b: np.ndarray) -> None:
    if b.dtype.kind in "iu" and np.any(np.broadcast_to(b, np.broadcast_shapes(a.shape, b.shape)) == 0):
        raise ZeroDivisionError("integer division by zero")


def _div_np(a, b, rounding_mode):
    if rounding_mode is None:
        return np.true_divide(a, b)
    _check_int_zero(a, b)
    if rounding_mode == "floor":
        return np.floor_divide(a, b)
    if a.dtype.kind == "f":
        return np.trunc(a / b)
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(q.dtype)


def _int_divisor(b: Expr) -> Expr:
    """Integer divisor ``b``, checked nonzero at run time: eager raises "ZeroDivisionError" for an
    integer division or remainder by zero, so the kernel reports it (CHECK_ZERO_DIVISION)."""
    if isinstance(b, Const) and b.value != 0:
        return b
    return E.check(E.ne(b, 0), b, CHECK_ZERO_DIVISION)


def _div_expr(a: Expr, b: Expr, rounding_mode) -> Expr:
    if rounding_mode is None:
        return E.div(a, b)
    if not _is_float(a):
        b = _int_divisor(b)
        q = E.floordiv(a, b)
        if rounding_mode == "floor":
            return q
        fix = _AND(E.ne(E.mod(a, b), 0), E.xor(E.lt(a, 0), E.lt(b, 0)))
        return E.where(fix, E.add(q, 1), q)
    if rounding_mode == "trunc":
        return _trunc_expr(E.div(a, b))
    # torch's div_floor_floating: Python's floor division, signed zeros included
    mod = E.mod(a, b)
    div = E.div(E.sub(a, mod), b)
    div = E.where(_AND(E.ne(mod, 0), E.xor(E.lt(b, 0), E.lt(mod, 0))), E.sub(div, 1.0), div)
    fl = E.floor(div)
    fl = E.where(E.gt(E.sub(div, fl), 0.5), E.add(fl, 1.0), fl)
    fl = E.where(E.eq(div, 0), E.mul(E.div(a, b), 0.0), fl)
    return E.where(E.eq(b, 0), E.div(a, b), fl)


def _remainder_np(a, b):
    _check_int_zero(a, b)
    if a.dtype.kind != "f":
        return np.remainder(a, b)
    m = np.fmod(a, b)
    return np.where((m != 0) & ((b < 0) != (m < 0)), m + b, m)


def _remainder_expr(a: Expr, b: Expr) -> Expr:
    m = E.mod(a, b if _is_float(a) else _int_divisor(b))  # ints: floor semantics already; floats: fmod, then take the divisor's sign
    if not _is_float(a):
        return m
    return E.where(_AND(E.ne(m, 0), E.xor(E.lt(b, 0), E.lt(m, 0))), E.add(m, b), m)


def _fmod_np(a, b):
    _check_int_zero(a, b)
    return np.fmod(a, b)


def _fmod_expr(a: Expr, b: Expr) -> Expr:
    m = E.mod(a, b if _is_float(a) else _int_divisor(b))  # floats: fmod already; ints: floor semantics, then take the dividend's sign
    if _is_float(a):
        return m
    return E.where(_AND(E.ne(m, 0), E.xor(E.lt(a, 0), E.lt(m, 0))), E.sub(m, b), m)


def _bool_or(numeric, logical):
    return lambda a, b: logical(a, b) if a.dtype is B else numeric(a, b)


_XOR = E.xor
_def("add", 2, _arith("add"), np.add, _bool_or(E.add, _OR), doc="bool + bool is logical or")
_def("sub", 2, _arith("sub", bool_ok=False, any_bool_ok=False), np.subtract, E.sub)
_def("mul", 2, _arith("mul"), np.multiply, _bool_or(E.mul, _AND), doc="bool * bool is logical and")
_def("maximum", 2, _arith("maximum"), np.maximum, _bool_or(E.max, _OR), doc="NaN propagates")
_def("minimum", 2, _arith("minimum"), np.minimum, _bool_or(E.min, _AND), doc="NaN propagates")
_def("pow", 2, _arith("pow", bool_ok=False), _pow_np, E.pow,
     doc="int ** int is torch's integer pow (negative exponent: 0 unless the base is +-1)")
_def("remainder", 2, _arith("remainder", bool_ok=False), _remainder_np, _remainder_expr,
     doc="Python's modulo: the result takes the divisor's sign; integer division by zero raises")
_def("fmod", 2, _arith("fmod", bool_ok=False), _fmod_np, _fmod_expr,
     doc="C's fmod: the result takes the dividend's sign; integer division by zero raises")
_def("div", 2, _div_rule, _div_np, _div_expr, {"rounding_mode": Attr("any", None)},
     doc="true division (ints give f32) or rounding_mode 'trunc' / 'floor'; integer division by zero raises")
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    _def(_name, 2, _compare, getattr(np, {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal",
                                          "gt": "greater", "ge": "greater_equal"}[_name]),
         getattr(E, _name), doc="compares in the promoted dtype; result bool")
for _name, _sc in (("logical_and", _AND), ("logical_or", _OR), ("logical_xor", _XOR)):
    _def(_name, 2, _logical, getattr(np, _name), _sc, doc="operands are cast to bool (nonzero is True)")
_def("where", 3, _where_rule, np.where, E.where, doc="cond must be bool; a and b promote")
