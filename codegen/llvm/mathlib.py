"""Inline transcendental functions for f32 that LLVM's loop vectorizer can vectorize.

Each function is emitted once per module as an ``internal alwaysinline`` function
built only from arithmetic, selects and vectorizable intrinsics (no libm call),
so that after inlining a loop over ``exp`` becomes SIMD code. f64 calls libm
(``exp``, ``log``, ...; resolved from the process by MCJIT).

Accuracy (f32): exp, log, sin, cos about 1-2 ulp; tanh and erf about 2e-7
absolute. sin/cos use a three-part Cody-Waite reduction: accurate for
|x| < 1e5, degrading beyond (documented limitation).
"""
from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm.intrinsics import call, declare
from minicomp.codegen.llvm.types import F32, F64, I32

FnBody = Callable[[ir.IRBuilder, ir.Value], ir.Value]


def _c(v: float) -> ir.Constant:
    return ir.Constant(F32, v)


def _poly(b: ir.IRBuilder, x: ir.Value, coeffs: list[float]) -> ir.Value:
    """Horner evaluation; ``coeffs`` from the highest degree down to the constant term."""
    acc = _c(coeffs[0])
    for c in coeffs[1:]:
        acc = b.fadd(b.fmul(acc, x), _c(c))
    return acc


def _isnan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def _exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    # maxnum/minnum turn NaN into a bound, so the integer conversion below is always defined.
    xc = call(b, "llvm.minnum", call(b, "llvm.maxnum", x, _c(-104.0)), _c(89.0))
    kf = call(b, "llvm.rint", b.fmul(xc, _c(1.0 / math.log(2.0))))
    r = b.fsub(xc, b.fmul(kf, _c(0.693145751953125)))
    r = b.fsub(r, b.fmul(kf, _c(1.428606765330187e-06)))
    p = _poly(b, r, [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0])
    k = b.fptosi(kf, I32)
    k1 = b.ashr(k, ir.Constant(I32, 1))
    k2 = b.sub(k, k1)
    # 2^k1 * 2^k2 with both halves normal, so exp over/underflows gracefully.
    s1 = b.bitcast(b.shl(b.add(k1, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
    s2 = b.bitcast(b.shl(b.add(k2, ir.Constant(I32, 127)), ir.Constant(I32, 23)), F32)
    res = b.fmul(b.fmul(p, s1), s2)
    return b.select(_isnan(b, x), x, res)


def _log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    tiny = b.fcmp_ordered("<", x, _c(1.1754943508222875e-38))
    xs = b.select(tiny, b.fmul(x, _c(8388608.0)), x)  # scale denormals by 2^23
    bits = b.bitcast(xs, I32)
    e = b.sub(b.and_(b.lshr(bits, ir.Constant(I32, 23)), ir.Constant(I32, 255)), ir.Constant(I32, 127))
    e = b.select(tiny, b.sub(e, ir.Constant(I32, 23)), e)
    m = b.bitcast(b.or_(b.and_(bits, ir.Constant(I32, 0x7FFFFF)), ir.Constant(I32, 0x3F800000)), F32)
    big = b.fcmp_ordered(">", m, _c(math.sqrt(2.0)))
    m = b.select(big, b.fmul(m, _c(0.5)), m)
    e = b.select(big, b.add(e, ir.Constant(I32, 1)), e)
    f = b.fsub(m, _c(1.0))
    s = b.fdiv(f, b.fadd(f, _c(2.0)))
    s2 = b.fmul(s, s)
    # log(m) = 2 atanh(s) = 2s + 2s^3/3 + ...
    p = _poly(b, s2, [2 / 11, 2 / 9, 2 / 7, 2 / 5, 2 / 3, 2.0])
    logm = b.fmul(s, p)
    ef = b.sitofp(e, F32)
    res = b.fadd(b.fmul(ef, _c(0.693145751953125)), b.fadd(logm, b.fmul(ef, _c(1.428606765330187e-06))))
    res = b.select(b.fcmp_ordered("==", x, _c(math.inf)), x, res)
    res = b.select(b.fcmp_ordered("==", x, _c(0.0)), _c(-math.inf), res)
    return b.select(b.fcmp_unordered("<", x, _c(0.0)), _c(math.nan), res)  # x < 0 or NaN


def _tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    ax = call(b, "llvm.fabs", x)
    e = _exp(b, b.fmul(ax, _c(-2.0)))  # in (0, 1]: no overflow
    t = b.fdiv(b.fsub(_c(1.0), e), b.fadd(_c(1.0), e))
    # small |x|: odd Taylor series keeps relative accuracy near 0
    x2 = b.fmul(x, x)
    small = b.fmul(x, _poly(b, x2, [62 / 2835, -17 / 315, 2 / 15, -1 / 3, 1.0]))
    big = call(b, "llvm.copysign", t, x)
    return b.select(b.fcmp_ordered("<", ax, _c(0.125)), small, big)


def _erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    ax = call(b, "llvm.fabs", x)
    t = b.fdiv(_c(1.0), b.fadd(_c(1.0), b.fmul(ax, _c(0.3275911))))
    p = b.fmul(t, _poly(b, t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]))
    big = b.fsub(_c(1.0), b.fmul(p, _exp(b, b.fneg(b.fmul(ax, ax)))))
    # |x| < 0.5: Maclaurin series (relative accuracy for small x)
    x2 = b.fmul(x, x)
    c = 2 / math.sqrt(math.pi)
    small = b.fmul(x, _poly(b, x2, [c / 9360, -c / 1320, c / 216, -c / 42, c / 10, -c / 3, c]))
    return b.select(b.fcmp_ordered("<", ax, _c(0.5)), small, call(b, "llvm.copysign", big, x))


def _sincos(b: ir.IRBuilder, x: ir.Value, shift: float) -> ir.Value:
    kf = call(b, "llvm.rint", b.fmul(x, _c(2.0 / math.pi)))
    r = b.fsub(x, b.fmul(kf, _c(1.5703125)))
    r = b.fsub(r, b.fmul(kf, _c(4.837512969970703125e-4)))
    r = b.fsub(r, b.fmul(kf, _c(7.549789948768648e-8)))
    q = b.fadd(kf, _c(shift))  # cos(x) = sin(x + pi/2): one quadrant further
    q = b.fsub(q, b.fmul(_c(4.0), call(b, "llvm.floor", b.fmul(q, _c(0.25)))))  # q mod 4 in float
    r2 = b.fmul(r, r)
    s = b.fmul(r, _poly(b, r2, [1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1.0]))
    c = _poly(b, r2, [-1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -0.5, 1.0])
    odd = b.or_(b.fcmp_ordered("==", q, _c(1.0)), b.fcmp_ordered("==", q, _c(3.0)))
    v = b.select(odd, c, s)
    return b.select(b.fcmp_ordered(">=", q, _c(2.0)), b.fneg(v), v)


_F32_BODIES: dict[str, FnBody] = {
    "exp": _exp, "log": _log, "tanh": _tanh, "erf": _erf,
    "sin": lambda b, x: _sincos(b, x, 0.0), "cos": lambda b, x: _sincos(b, x, 1.0),
}
_LIBM_F64 = {"exp": "exp", "log": "log", "tanh": "tanh", "erf": "erf", "sin": "sin", "cos": "cos"}

SUPPORTED = frozenset(_F32_BODIES)


def math_call(builder: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """``name(x)`` for a float or double ``x``; ``name`` in :data:`SUPPORTED`."""
    module = builder.module
    if x.type == F64:
        return builder.call(declare(module, _LIBM_F64[name], F64, [F64]), [x])
    fname = f"mc_{name}f"
    fn = module.globals.get(fname)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(F32, [F32]), name=fname)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        fb = ir.IRBuilder(fn.append_basic_block("entry"))
        fb.ret(_F32_BODIES[name](fb, fn.args[0]))
    return builder.call(fn, [x])
