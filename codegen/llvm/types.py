"""dtype -> LLVM types.

Every dtype has a *storage* type (what sits in memory) and a *register* type
(what expressions compute in):

=====  =========  ========
dtype  storage    register
=====  =========  ========
f32    float      float
f64    double     double
f16    half       float    (fpext on load, fptrunc on store)
bf16   i16        float    (bit shifts; round-to-nearest-even on store)
i32    i32        i32
i64    i64        i64
bool   i8 (0/1)   i1
=====  =========  ========
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.ir.dtypes import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F16 = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()  # opaque pointer
VOID = ir.VoidType()

_STORAGE = {DType.f32: F32, DType.f64: F64, DType.f16: F16, DType.bf16: I16,
            DType.i32: I32, DType.i64: I64, DType.bool: I8}
_REGISTER = {DType.f32: F32, DType.f64: F64, DType.f16: F32, DType.bf16: F32,
             DType.i32: I32, DType.i64: I64, DType.bool: I1}


def storage_type(dtype: DType) -> ir.Type:
    """The in-memory LLVM type of one element of ``dtype``."""
    return _STORAGE[dtype]


def register_type(dtype: DType) -> ir.Type:
    """The LLVM type expressions of ``dtype`` compute in (f16/bf16 compute in f32)."""
    return _REGISTER[dtype]


def i64(value: int) -> ir.Constant:
    """An i64 constant."""
    return ir.Constant(I64, int(value))
