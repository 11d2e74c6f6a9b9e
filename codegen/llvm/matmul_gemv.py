"""The GEMV matmul path: a few rows of C, A and B both contiguous along k (f32/f64).

Items are (row of C) x (block of GEMV_COLS columns). Per item, one SIMD accumulator
per column runs ``fma(A[i, p:p+W], B[p:p+W, j], acc)`` over the vector part of k;
the accumulators are reduced (``reassoc``), the k % W tail is added in scalar ``fma``s
and the epilogue runs per element. The last block of a row may be narrower.
Applies when :meth:`~.matmul_common.GemmInfo.unit_k_vectors` holds.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import carried_loop, entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import call, declare
from minicomp.codegen.llvm.kernelfn import buffer_table
from minicomp.codegen.llvm.matmul_common import GemmInfo, batch_vars, c64, offset

#: Columns of C per item; most rows (batch included) the GEMV path serves.
GEMV_COLS = 8
GEMV_MAX_ROWS = 4
#: Multiply-adds from which a GEMV is split across threads.
GEMV_PARALLEL_WORK = 1 << 17


def items(g: GemmInfo) -> int:
    """The number of parallel items of the GEMV body."""
    return g.nbatch * g.k.m * -(-g.k.n // GEMV_COLS)


def body(g: GemmInfo):
    """The parallel body over items [begin, end) of (row x block of GEMV_COLS columns)."""
    def emit(b, ptrs, begin, end):
        k, JB = g.k, GEMV_COLS
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        out_ptrs = ptrs[g.nin:]
        nj = -(-k.n // JB)
        with for_range(b, begin, end, name="blk") as blk:
            row, jb = b.udiv(blk, c64(nj)), b.urem(blk, c64(nj))
            bvars = batch_vars(b, b.udiv(row, c64(k.m)), k.batch) if k.batch else []
            i = b.urem(row, c64(k.m))
            j0 = b.mul(jb, c64(JB))
            full = b.icmp_signed("<=", b.add(j0, c64(JB)), c64(k.n))
            with b.if_else(full) as (then, other):
                with then:
                    _columns(g, b, tab, out_ptrs, bvars, i, [b.add(j0, c64(c)) for c in range(JB)])
                with other:
                    with for_range(b, j0, k.n, name="jt") as j:
                        _columns(g, b, tab, out_ptrs, bvars, i, [j])
    return emit


def _columns(g: GemmInfo, b, tab, out_ptrs, bvars, i, cols) -> None:
    """acc[c] = sum_p A[i, p] * B[p, cols[c]] with one vector accumulator per column; epilogues."""
    k, W, T = g.k, g.W, g.T
    vt = ir.VectorType(T, W)
    esize = g.bits // 8
    aptr = tab[k.a.buf][0]
    bptr = tab[k.b.buf][0]
    abase = offset(b, k.a, bvars + [i, c64(0)])
    bbases = [offset(b, k.b, bvars + [c64(0), j]) for j in cols]
    kv = k.k - k.k % W
    zero = ir.Constant(vt, [convert.constant(0, g.dt)] * W)

    def step(p, accs):
        av = b.load(b.gep(aptr, [b.add(abase, p)], inbounds=True, source_etype=T), typ=vt, align=esize)
        return [call(b, "llvm.fma", av, b.load(b.gep(bptr, [b.add(base, p)], inbounds=True, source_etype=T),
                                               typ=vt, align=esize), acc) for acc, base in zip(accs, bbases)]
    new = carried_loop(b, "gv", kv, W, [zero] * len(cols), step)
    red = declare(b.module, f"llvm.vector.reduce.fadd.{'v%d' % W}{'f32' if g.bits == 32 else 'f64'}",
                  T, [T, vt])
    sums = [b.call(red, [convert.constant(0, g.dt), v], fastmath=("reassoc",)) for v in new]
    if kv < k.k:
        slots = []
        for s in sums:
            slot = entry_alloca(b, T, "gvt")
            b.store(s, slot)
            slots.append(slot)
        with for_range(b, kv, k.k, name="pt") as pt:
            x = b.load(b.gep(aptr, [b.add(abase, pt)], inbounds=True, source_etype=T), typ=T)
            for slot, base in zip(slots, bbases):
                y = b.load(b.gep(bptr, [b.add(base, pt)], inbounds=True, source_etype=T), typ=T)
                b.store(call(b, "llvm.fma", x, y, b.load(slot, typ=T)), slot)
        sums = [b.load(slot, typ=T) for slot in slots]
    for j, s in zip(cols, sums):
        g.epilogue(b, tab, out_ptrs, bvars, i, j, s)
