"""What every matmul code path shares: index arithmetic, operand loads and the epilogue.

:class:`GemmInfo` describes one :class:`~minicomp.ir.kernel.MatmulKernel` for code
generation (accumulator type, SIMD width, batch size) and emits its epilogue: the
kernel's stores for output element ``(batch..., i, j)`` given the accumulated sum.
The helpers index operands through their :class:`~minicomp.ir.kernel.Access`
(offset + strides), so every path reads strided and broadcast operands the same way.
"""
from __future__ import annotations

from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.runtime.jit import host_vector_bits
from minicomp.codegen.llvm.kernelfn import emit_store
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, register_type, storage_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Access, MatmulKernel


def c64(v: int) -> ir.Constant:
    """An i64 constant."""
    return ir.Constant(I64, v)


def smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """The signed minimum of two i64 values."""
    return b.select(b.icmp_signed("<", x, y), x, y)


def batch_vars(b: ir.IRBuilder, flat: ir.Value, batch: tuple[int, ...]) -> list[ir.Value]:
    """The batch indices (row-major over ``batch``) of the flat batch number ``flat``."""
    out = []
    for d in reversed(range(len(batch))):
        out.append(b.urem(flat, c64(batch[d])) if d else flat)
        flat = b.udiv(flat, c64(batch[d]))
    return list(reversed(out))


def offset(b: ir.IRBuilder, acc: Access, idx: list[ir.Value]) -> ir.Value:
    """The element offset of ``acc`` at indices ``idx`` (batch..., row, column)."""
    off = c64(acc.offset)
    for s, v in zip(acc.strides, idx):
        if s:
            off = b.add(off, b.mul(v, c64(s)))
    return off


def load_acc(b: ir.IRBuilder, tab: list, acc: Access, idx: list[ir.Value], acc_dt: DType) -> ir.Value:
    """The element of ``acc`` at ``idx`` from buffer table ``tab``, converted to ``acc_dt``."""
    ptr, _, dt = tab[acc.buf]
    raw = b.load(b.gep(ptr, [offset(b, acc, idx)], inbounds=True, source_etype=storage_type(dt)),
                 typ=storage_type(dt))
    return convert.cast(b, convert.from_storage(b, raw, dt), dt, acc_dt)


def madd(b: ir.IRBuilder, x: ir.Value, y: ir.Value, acc: ir.Value, is_float: bool) -> ir.Value:
    """``x * y + acc``: one ``fma`` for floats, a multiply and an add for integers."""
    if is_float:
        return call(b, "llvm.fma", x, y, acc)
    return b.add(b.mul(x, y), acc)


class GemmInfo:
    """A matmul kernel seen by the code generator.

    ``dt``/``T``: accumulator dtype and its LLVM register type; ``W``: SIMD lanes of the
    host for that type (at least 2); ``NR = 2*W``; ``nbatch``: product of the batch dims;
    ``nin``: number of input buffers (kernel pointers are inputs then outputs).
    Raises TypeError for bool accumulation.
    """

    def __init__(self, k: MatmulKernel) -> None:
        self.k = k
        self.dt = k.acc_dtype
        self.T = register_type(k.acc_dtype)
        if self.dt is DType.bool:
            raise TypeError(f"matmul kernel {k.name}: bool accumulation is not supported")
        self.bits = 8 * self.dt.itemsize
        self.W = max(2, host_vector_bits() // self.bits)
        self.NR = 2 * self.W
        self.nbatch = prod(k.batch)
        self.nin = len(k.inputs)

    def epilogue(self, b, tab, out_ptrs, bvars, i, j, acc) -> None:
        """Emit the kernel's stores for output element ``(bvars..., i, j)`` whose sum is ``acc``."""
        em = ExprEmitter(b, tab, bvars + [i, j], {0: acc})
        for st in self.k.stores:
            emit_store(em, out_ptrs, self.k.outputs, st)

    def b_varies(self) -> bool:
        """B differs between batches (some batch stride of B is non-zero)."""
        nb = len(self.k.batch)
        return any(s for s in self.k.b.strides[:nb])

    def shared_rows(self) -> int:
        """Rows of C that one packed copy of B would serve."""
        return self.k.m if self.b_varies() else self.nbatch * self.k.m

    def same_float_storage(self) -> bool:
        """f32/f64 accumulation with A and B stored in that same dtype (vector loads apply)."""
        k = self.k
        return (self.dt in (DType.f32, DType.f64)
                and k.inputs[k.a.buf].type.dtype is self.dt and k.inputs[k.b.buf].type.dtype is self.dt)

    def unit_k_vectors(self) -> bool:
        """Vector dot products along k apply: :meth:`same_float_storage`, k >= W, A and B unit stride along k."""
        k = self.k
        return self.same_float_storage() and k.k >= self.W and k.a.strides[-1] == 1 and k.b.strides[-2] == 1
