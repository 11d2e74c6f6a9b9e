"""Inline transcendental functions for f32 that LLVM's loop vectorizer can vectorize.

Each function is emitted once per module as an ``internal alwaysinline`` function
built only from arithmetic, selects and vectorizable intrinsics (no libm call),
so that after inlining a loop over ``exp`` becomes SIMD code. f64 calls libm
(``exp``, ``log``, ...; resolved from the process by MCJIT).

Accuracy (f32): exp, log, sin, cos about 1-2 ulp; tanh about 2e-7 absolute, erf
about 3e-7 absolute (relative near 0). Polynomials use ``llvm.fmuladd`` (an FMA on
hosts that have one). sin/cos reduce the argument by pi/2 with a three-part
Cody-Waite step for |x| < 2^10 and, for larger finite |x|, with Payne-Hanek's exact
method (:func:`_reduce_large`: |x| times 24-bit chunks of 2/pi in exact double-precision
products, each reduced mod 4), so every float32 argument is reduced accurately. Both
paths are branch-free and vectorize; the exact one is computed for every element and
selected, which makes sin/cos several times slower than with Cody-Waite alone (and slower
than eager's), the price of correct results beyond |x| = 1e5, where the old reduction
returned values like 1.8e8.
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
        acc = call(b, "llvm.fmuladd", acc, x, _c(c))  # one FMA where the host has it
    return acc


def _poly_estrin(b: ir.IRBuilder, x: ir.Value, coeffs: list[float]) -> ir.Value:
    """Estrin evaluation (same polynomial as :func:`_poly`): pairs ``c1*x + c0`` combined with
    powers ``x^2, x^4, ...``, a dependency chain of about log2(degree) FMAs instead of degree,
    so a vectorized loop of a costly epilogue (GELU's erf) is not bound by FMA latency."""
    terms = [_c(c) for c in reversed(coeffs)]  # constant term first
    power = x
    while len(terms) > 1:
        nxt = [call(b, "llvm.fmuladd", terms[i + 1], power, terms[i]) for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
        if len(terms) > 1:
            power = b.fmul(power, power)
    return terms[0]


def _isnan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def _exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    # Clamp with ordered compares (one vmaxps/vminps each; NaN becomes a bound), so the
    # integer conversion below is always defined; the last select restores NaN.
    xc = b.select(b.fcmp_ordered(">", x, _c(-104.0)), x, _c(-104.0))
    xc = b.select(b.fcmp_ordered("<", xc, _c(89.0)), xc, _c(89.0))
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


# erf(x) = x * P(x^2) / Q(x^2) on |x| <= _ERF_SAT, a rational fit of erf(x)/x made for
# this module (weighted least squares in float64, Lawson iteration; relative error of
# the model 5e-8). Beyond _ERF_SAT erf rounds to +-1 in f32.
_ERF_SAT = 3.925
_ERF_P = [1.9868202230221604e-08, -1.956491424341399e-06, 0.00014216555762597017, 0.0037190846203908625,
          0.050630993515768705, 0.20036392702920666, 1.1283791082164365]
_ERF_Q = [0.0009599331192927987, 0.01438987260676192, 0.1151794243477701, 0.5108995402050056, 1.0]


def _erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    # One division and no exp, no branch: about 3e-7 absolute error (5 ulp below 1.0).
    t = b.fmul(x, x)
    sat = _c(_ERF_SAT * _ERF_SAT)
    t = b.select(b.fcmp_unordered("<", t, sat), t, sat)  # NaN stays NaN, inf -> sat
    r = b.fmul(x, b.fdiv(_poly_estrin(b, t, _ERF_P), _poly_estrin(b, t, _ERF_Q)))
    # |r| > 1 past saturation (x * P/Q grows like x there) or by rounding just below it:
    # exactly +-1, as float32 erf rounds there (so gelu's 1 + erf(x) is exactly 0 far left).
    return b.select(b.fcmp_ordered(">", call(b, "llvm.fabs", r), _c(1.0)), call(b, "llvm.copysign", _c(1.0), x), r)


def _two_over_pi_bits(nbits: int) -> int:
    """``floor(2/pi * 2**nbits)``, exactly (pi by Machin's formula in integers, 64 guard bits)."""
    prec = nbits + 64
    one = 1 << prec

    def arctan_inv(n: int) -> int:  # atan(1/n) * 2**prec
        total, term, k, sign = 0, one // n, 1, 1
        while term:
            total += sign * (term // k)
            term //= n * n
            k += 2
            sign = -sign
        return total
    pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))  # pi * 2**prec (error a few units)
    return (2 << (prec + nbits)) // pi


#: 2/pi in 24-bit chunks: chunk j holds bits 24j+1 .. 24j+24 (bit i worth 2**-i); 8 chunks cover
#: every bit that reaches the fraction of |x| * 2/pi for any finite float32 |x| (below 2**128).
_TWO_OVER_PI_CHUNKS = [math.ldexp((_two_over_pi_bits(24 * (j + 1)) & 0xFFFFFF), -24 * (j + 1)) for j in range(8)]


def _reduce_large(b: ir.IRBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """``(k, r)`` as floats with ``|x| = k*pi/2 + r`` (mod 2*pi), ``|r| <~ pi/4``, for finite |x| >= 2**10.

    Payne-Hanek in double precision, without tables (a gather would keep the loop from
    vectorizing on hosts without fast gathers): ``|x|`` times each 24-bit chunk of 2/pi is
    exact (48 bits), and so is that product reduced mod 4; the reduced terms are summed
    with the nearest integer moved to ``k`` after each addition, so the running fraction
    stays within [-1/2, 1/2] and its rounding error near 2**-53. Lanes with other |x|
    compute an unused value.
    """
    ax = b.fpext(call(b, "llvm.fabs", x), F64)
    k = ir.Constant(F64, 0.0)
    f = ir.Constant(F64, 0.0)
    for chunk in _TWO_OVER_PI_CHUNKS:
        p = b.fmul(ax, ir.Constant(F64, chunk))
        t = b.fsub(p, b.fmul(ir.Constant(F64, 4.0), call(b, "llvm.floor", b.fmul(p, ir.Constant(F64, 0.25)))))
        f = b.fadd(f, t)
        n = call(b, "llvm.rint", f)
        k = b.fadd(k, n)
        f = b.fsub(f, n)
    r = b.fptrunc(b.fmul(f, ir.Constant(F64, math.pi / 2)), F32)
    return b.fptrunc(k, F32), r


def _sincos(b: ir.IRBuilder, x: ir.Value, shift: float) -> ir.Value:
    kf = call(b, "llvm.rint", b.fmul(x, _c(2.0 / math.pi)))
    r = b.fsub(x, b.fmul(kf, _c(1.5703125)))
    r = b.fsub(r, b.fmul(kf, _c(4.837512969970703125e-4)))
    r = b.fsub(r, b.fmul(kf, _c(7.549789948768648e-8)))
    # Large finite |x|: the exact reduction of |x|, negated for x < 0 (x = -k*pi/2 - r).
    ax = call(b, "llvm.fabs", x)
    large = b.and_(b.fcmp_ordered(">=", ax, _c(1024.0)), b.fcmp_ordered("<", ax, _c(math.inf)))
    kl, rl = _reduce_large(b, x)
    neg = b.fcmp_ordered("<", x, _c(0.0))
    kl = b.select(neg, b.fneg(kl), kl)
    rl = b.select(neg, b.fneg(rl), rl)
    kf = b.select(large, kl, kf)
    r = b.select(large, rl, r)
    q = b.fadd(kf, _c(shift))  # cos(x) = sin(x + pi/2): one quadrant further
    q = b.fsub(q, b.fmul(_c(4.0), call(b, "llvm.floor", b.fmul(q, _c(0.25)))))  # q mod 4 in float
    r2 = b.fmul(r, r)
    s = b.fmul(r, _poly(b, r2, [1 / 362880, -1 / 5040, 1 / 120, -1 / 6, 1.0]))
    c = _poly(b, r2, [-1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -0.5, 1.0])
    odd = b.or_(b.fcmp_ordered("==", q, _c(1.0)), b.fcmp_ordered("==", q, _c(3.0)))
    v = b.select(odd, c, s)
    v = b.select(b.fcmp_ordered(">=", q, _c(2.0)), b.fneg(v), v)
    if shift == 0.0:  # sin(+-0) = +-0: the reduction's x - 0*c gives +0 for x = -0
        v = b.select(b.fcmp_ordered("==", x, _c(0.0)), x, v)
    return v


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
