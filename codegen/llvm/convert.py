"""Conversions between storage and register values and between dtypes (C/PyTorch casts)."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from minicomp.codegen.llvm.intrinsics import call, declare, type_suffix
from minicomp.codegen.llvm.types import F16, F32, F64, I1, I8, I16, I32, register_type
from minicomp.ir.dtypes import DType, round_to_dtype


def from_storage(b: ir.IRBuilder, v: ir.Value, dtype: DType) -> ir.Value:
    """A loaded element of ``dtype`` as a register value."""
    if dtype is DType.f16:
        return b.fpext(v, F32)
    if dtype is DType.bf16:
        return b.bitcast(b.shl(b.zext(v, I32), ir.Constant(I32, 16)), F32)
    if dtype is DType.bool:
        return b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
    return v


def bf16_bits(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """Round an f32 register value to bf16 bits (nearest even; NaN stays a quiet NaN)."""
    bits = b.bitcast(v, I32)
    lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = b.lshr(b.add(b.add(bits, ir.Constant(I32, 0x7FFF)), lsb), ir.Constant(I32, 16))
    nan = b.or_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 0x40))
    isnan = b.fcmp_unordered("uno", v, v)
    return b.trunc(b.select(isnan, nan, rounded), I16)


def to_storage(b: ir.IRBuilder, v: ir.Value, dtype: DType) -> ir.Value:
    """A register value of ``dtype`` as the element to store."""
    if dtype is DType.f16:
        return b.fptrunc(v, F16)
    if dtype is DType.bf16:
        return bf16_bits(b, v)
    if dtype is DType.bool:
        return b.zext(v, I8)
    return v


def _fptosi_sat(b: ir.IRBuilder, v: ir.Value, ty: ir.IntType) -> ir.Value:
    # Saturating conversion: NaN -> 0, out of range -> min/max; plain fptosi would be poison.
    fn = declare(b.module, f"llvm.fptosi.sat.{type_suffix(ty)}.{type_suffix(v.type)}", ty, [v.type])
    return b.call(fn, [v])


def cast(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """Convert register value ``v`` of ``src`` to ``dst`` with torch ``.to()`` semantics.

    float -> int truncates toward zero (saturating; NaN -> 0), x -> bool is ``x != 0``
    (NaN -> True), bool -> number is 0/1. Casting to f16/bf16 rounds to that precision
    (the register value stays f32).
    """
    if src == dst:
        return v
    rt = register_type(dst)
    if dst is DType.bool:
        if src.is_float:
            return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
        return b.icmp_signed("!=", v, ir.Constant(v.type, 0))
    if src is DType.bool:
        return b.uitofp(v, rt) if dst.is_float else b.zext(v, rt)
    if src.is_int and dst.is_int:
        return b.sext(v, rt) if rt.width > v.type.width else b.trunc(v, rt)
    if src.is_float and dst.is_int:
        return _fptosi_sat(b, v, rt)
    if src.is_int:  # int -> float
        if dst is DType.f16:
            return b.fpext(b.sitofp(v, F16), F32)
        out = b.sitofp(v, rt)
        return round_register(b, out, dst)
    # float -> float
    if dst is DType.f64:
        return b.fpext(v, F64)
    if src is DType.f64:
        v = _f64_to_f32_round_to_odd(b, v) if dst is DType.f16 else b.fptrunc(v, F32)
    return round_register(b, v, dst)


def _f64_to_f32_round_to_odd(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """double -> float rounding to odd, so a following float -> half rounding is exact.

    (A direct ``fptrunc double to half`` becomes a libcall, ``__truncdfhf2``, that
    the process may not provide.)
    """
    f = b.fptrunc(d, F32)
    back = b.fpext(f, F64)
    inexact = b.fcmp_ordered("!=", back, d)
    over = b.fcmp_ordered(">", call(b, "llvm.fabs", back), call(b, "llvm.fabs", d))
    bits = b.bitcast(f, I32)
    bits = b.select(b.and_(inexact, over), b.sub(bits, ir.Constant(I32, 1)), bits)
    bits = b.select(inexact, b.or_(bits, ir.Constant(I32, 1)), bits)
    return b.bitcast(bits, F32)


def round_register(b: ir.IRBuilder, v: ir.Value, dtype: DType) -> ir.Value:
    """Round an f32 register value to ``dtype``'s precision (no-op unless f16/bf16)."""
    if dtype is DType.f16:
        return b.fpext(b.fptrunc(v, F16), F32)
    if dtype is DType.bf16:
        return b.bitcast(b.shl(b.zext(bf16_bits(b, v), I32), ir.Constant(I32, 16)), F32)
    return v


def constant(value, dtype: DType) -> ir.Constant:
    """A register constant of ``dtype`` (f16/bf16 values rounded to their precision)."""
    rt = register_type(dtype)
    if dtype is DType.bool:
        return ir.Constant(I1, int(bool(value)))
    if dtype.is_int:
        return ir.Constant(rt, int(value))
    if dtype is DType.f16:
        value = float(np.float16(value))
    elif dtype is DType.bf16:
        value = float(round_to_dtype(np.array([value], dtype=np.float32), dtype)[0])
    elif dtype is DType.f32:
        value = float(np.float32(value))
    return ir.Constant(rt, float(value))
