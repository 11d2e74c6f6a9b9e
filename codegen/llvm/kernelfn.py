"""The calling convention shared by all kernel kinds.

Every kernel becomes ``void NAME(ptr in0, ..., ptr out0, ...)`` (buffers in the
order inputs then outputs). Its work is a body over an outer range [0, total),
run on one thread or claimed in grains by ``threads`` threads (:func:`.parallel.dynamic_for`).
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, BodyEmitter, dynamic_for
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, PTR, VOID, storage_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Access, Buffer, Store


def kernel_function(module: ir.Module, name: str, nptrs: int, noalias: bool) -> ir.Function:
    """The empty ``void name(ptr, ...)`` of a kernel; every pointer ``noalias`` when ``noalias``."""
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * nptrs), name=name)
    if noalias:
        for a in fn.args:
            a.add_attribute("noalias")
    return fn


def define_kernel(module: ir.Module, name: str, nptrs: int, noalias: bool, total: int, work: int,
                  threads: int, emit: BodyEmitter) -> ir.Function:
    """Define kernel ``name``; ``emit(builder, ptrs, begin, end)`` writes the body for [begin, end)."""
    fn = kernel_function(module, name, nptrs, noalias)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if total > 0:
        dynamic_for(b, f"{name}.body", list(fn.args), noalias, emit, total, threads if work >= PARALLEL_MIN_WORK else 1)
    b.ret_void()
    return fn


def buffer_table(ptrs: list[ir.Value], buffers: tuple[Buffer, ...]) -> list:
    """(pointer, numel, dtype) triples for :class:`ExprEmitter`."""
    return [(p, buf.type.numel, buf.type.dtype) for p, buf in zip(ptrs, buffers)]


def emit_store(em: ExprEmitter, out_ptrs: list[ir.Value], outputs: tuple[Buffer, ...], st: Store) -> None:
    """``outputs[st.buf][st.index] = st.value`` converted to the buffer's dtype."""
    b = em.b
    buf = outputs[st.buf]
    dtype = buf.type.dtype
    if buf.type.numel == 0:
        return
    value = convert.to_storage(b, em.emit_as(st.value, dtype), dtype)
    idx = em.index(st.index, buf.type.numel)
    b.store(value, b.gep(out_ptrs[st.buf], [idx], inbounds=True, source_etype=storage_type(dtype)))


def load_access(b: ir.IRBuilder, tab: list, acc: Access, idx: list[ir.Value], dt: DType) -> ir.Value:
    """The element of ``acc`` (offset + strides . ``idx``) from buffer table ``tab``, as ``dt``."""
    ptr, _, sdt = tab[acc.buf]
    off = ir.Constant(I64, acc.offset)
    for s, v in zip(acc.strides, idx):
        if s:
            off = b.add(off, b.mul(v, ir.Constant(I64, s)))
    raw = b.load(b.gep(ptr, [off], inbounds=True, source_etype=storage_type(sdt)), typ=storage_type(sdt))
    return convert.cast(b, convert.from_storage(b, raw, sdt), sdt, dt)
