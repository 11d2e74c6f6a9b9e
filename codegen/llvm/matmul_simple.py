"""The simple matmul paths: direct loops for small products of any dtype and layout.

* :func:`dot_body` (items = output elements): one dot product over k per element,
  vectorizable by LLVM thanks to ``reassoc`` adds (floats) when B is contiguous along k.
* :func:`axpy_body` (items = rows of C): ``row[:] += A[i, p] * B[p, :]`` over k in a
  stack row of n accumulators, then the epilogue along the row.

Both accept every accumulator dtype but bool and read operands through their
accesses (any strides, broadcast batches); k == 0 gives sums of zero.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.kernelfn import buffer_table
from minicomp.codegen.llvm.matmul_common import GemmInfo, batch_vars, c64, load_acc, madd

#: Most columns the axpy path keeps in its stack row; wider products use dot products.
SIMPLE_ROW_LIMIT = 16384


def dot_body(g: GemmInfo):
    """The parallel body over items [begin, end) of (batch x row x column) of C."""
    def emit(b, ptrs, begin, end):
        k = g.k
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        bm = len(k.batch)
        with for_range(b, begin, end, name="ij") as idx:
            row, j = b.udiv(idx, c64(k.n)), b.urem(idx, c64(k.n))
            bvars = batch_vars(b, b.udiv(row, c64(k.m)), k.batch) if bm else []
            i = b.urem(row, c64(k.m))
            acc = entry_alloca(b, g.T, "dot")
            b.store(convert.constant(0, g.dt), acc)
            with for_range(b, 0, k.k, name="p") as p:
                x = load_acc(b, tab, k.a, bvars + [i, p], g.dt)
                y = load_acc(b, tab, k.b, bvars + [p, j], g.dt)
                cur = b.load(acc, typ=g.T)
                if g.dt.is_float:
                    nxt = b.fadd(cur, b.fmul(x, y), flags=("reassoc", "contract"))
                else:
                    nxt = b.add(cur, b.mul(x, y))
                b.store(nxt, acc)
            g.epilogue(b, tab, ptrs[g.nin:], bvars, i, j, b.load(acc, typ=g.T))
    return emit


def axpy_body(g: GemmInfo):
    """The parallel body over rows [begin, end) of (batch x row) of C (n <= :data:`SIMPLE_ROW_LIMIT`)."""
    def emit(b, ptrs, begin, end):
        k = g.k
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        rowbuf = entry_alloca(b, ir.ArrayType(g.T, k.n), "row")
        with for_range(b, begin, end, name="row") as row:
            bvars = batch_vars(b, b.udiv(row, c64(k.m)), k.batch) if k.batch else []
            i = b.urem(row, c64(k.m))
            with for_range(b, 0, k.n, name="z") as j:
                b.store(convert.constant(0, g.dt), b.gep(rowbuf, [j], source_etype=g.T))
            with for_range(b, 0, k.k, name="p") as p:
                x = load_acc(b, tab, k.a, bvars + [i, p], g.dt)
                with for_range(b, 0, k.n, name="j") as j:
                    y = load_acc(b, tab, k.b, bvars + [p, j], g.dt)
                    slot = b.gep(rowbuf, [j], source_etype=g.T)
                    b.store(madd(b, x, y, b.load(slot, typ=g.T), g.dt.is_float), slot)
            with for_range(b, 0, k.n, name="e") as j:
                acc = b.load(b.gep(rowbuf, [j], source_etype=g.T), typ=g.T)
                g.epilogue(b, tab, ptrs[g.nin:], bvars, i, j, acc)
    return emit
