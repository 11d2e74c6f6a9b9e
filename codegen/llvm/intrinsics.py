"""Declaring LLVM intrinsics and C library functions in a module (once per name)."""
from __future__ import annotations

from llvmlite import ir


def type_suffix(ty: ir.Type) -> str:
    """The overload suffix LLVM uses for ``ty`` (``f32``, ``v8f32``, ``i64``)."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    if isinstance(ty, ir.HalfType):
        return "f16"
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    raise TypeError(f"no intrinsic suffix for {ty}")


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Get or declare the external function ``name`` with the given signature."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def intrinsic(module: ir.Module, base: str, ty: ir.Type, nargs: int = 1, ret: ir.Type | None = None,
              suffix_types: list[ir.Type] | None = None) -> ir.Function:
    """An overloaded intrinsic such as ``llvm.maximum`` on ``ty`` (all operands of type ``ty``)."""
    suffix = ".".join(type_suffix(t) for t in (suffix_types or [ty]))
    return declare(module, f"{base}.{suffix}", ret or ty, [ty] * nargs)


def call(builder: ir.IRBuilder, base: str, *args: ir.Value) -> ir.Value:
    """Call overloaded intrinsic ``base`` whose operands and result share the first arg's type."""
    fn = intrinsic(builder.module, base, args[0].type, len(args))
    return builder.call(fn, list(args))
