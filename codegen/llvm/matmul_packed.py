"""The packed matmul path: a register-blocked GEMM with a SIMD micro-kernel, per batch.

1. B is packed into panels of NR = 2 vectors of columns, each ``k x NR`` contiguous
   and zero-padded, converted to the accumulator type (f16/bf16 -> f32); panels are
   split across threads. One packed copy serves all batches when B does not vary.
2. Rows are split in blocks of MC; each thread packs its A block into MR-row panels
   and runs the micro-kernel: MR x NR accumulators (MR*2 SIMD registers) updated over
   all of k, then the epilogue is applied per output element of the tile.

The micro-kernel (one per distinct k), A packing and B packing are functions the
kernel only declares; they are compiled once per process (:mod:`.gemm_shared`,
:mod:`.runtime.library`), so each kernel adds only its loop nest and epilogue. Works for every accumulator dtype but bool, any strides, k >= 1. If a
scratch allocation fails the kernel writes nothing (callers size work so it does not).
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import gemm_shared
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.kernelfn import buffer_table
from minicomp.codegen.llvm.matmul_common import GemmInfo, batch_vars, c64, offset, smin
from minicomp.codegen.llvm.parallel import make_body, parallel_for
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID

MR = gemm_shared.MR
MC_MAX = 48 // MR * MR  # rows of A packed per block: whole MR panels (the buffer holds MC rows)


def _compute_body(g: GemmInfo, MC: int):
    """Row blocks [begin, end) of (batch x MC-row block); ptrs = inputs + outputs + [Bp]."""
    def emit(b, ptrs, begin, end):
        k, NR, W = g.k, g.NR, g.W
        nio = g.nin + len(k.outputs)
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        out_ptrs = ptrs[g.nin:nio]
        bp = ptrs[nio]
        nmb = -(-k.m // MC)
        npan = -(-k.n // NR)
        elt = g.bits // 8
        ap_bytes = MC * k.k * elt
        alloc = declare(b.module, "aligned_alloc", PTR, [I64, I64])
        ap = b.call(alloc, [c64(64), c64(-(-ap_bytes // 64) * 64)])
        ok = b.icmp_unsigned("!=", ap, ir.Constant(PTR, None))
        tile = entry_alloca(b, ir.ArrayType(g.T, MR * NR), "tile")
        micro = gemm_shared.micro(b.module, g.dt, W, k.k)  # shared by kernels of equal k
        with b.if_then(ok):
            with for_range(b, begin, end, name="blk") as blk:
                bidx = b.udiv(blk, c64(nmb))
                bvars = batch_vars(b, bidx, k.batch) if k.batch else []
                i0 = b.mul(b.urem(blk, c64(nmb)), c64(MC))
                rows = smin(b, c64(MC), b.sub(c64(k.m), i0))
                npanels_a = b.udiv(b.add(rows, c64(MR - 1)), c64(MR))
                adt = k.inputs[k.a.buf].type.dtype
                aoff = offset(b, k.a, bvars + [c64(0), c64(0)])
                b.call(gemm_shared.packa(b.module, g.dt, adt),
                       [tab[k.a.buf][0], ap, aoff, i0, c64(k.m), c64(k.k), c64(k.a.strides[-2]),
                        c64(k.a.strides[-1]), rows])
                bbase = b.mul(bidx, c64(npan * k.k * NR)) if g.b_varies() else c64(0)
                with for_range(b, 0, npan, name="jp") as jp:
                    bpan = b.gep(bp, [b.add(bbase, b.mul(jp, c64(k.k * NR)))], source_etype=g.T)
                    j0 = b.mul(jp, c64(NR))
                    ncols = smin(b, c64(NR), b.sub(c64(k.n), j0))
                    with for_range(b, 0, npanels_a, name="ir") as ia:
                        apan = b.gep(ap, [b.mul(ia, c64(k.k * MR))], source_etype=g.T)
                        b.call(micro, [apan, bpan, tile, c64(k.k)])
                        r0 = b.add(i0, b.mul(ia, c64(MR)))
                        nrows = smin(b, c64(MR), b.sub(c64(k.m), r0))
                        with for_range(b, 0, nrows, name="er") as r:
                            with for_range(b, 0, ncols, name="ec") as c:
                                acc = b.load(b.gep(tile, [b.add(b.mul(r, c64(NR)), c)], source_etype=g.T),
                                             typ=g.T)
                                g.epilogue(b, tab, out_ptrs, bvars, b.add(r0, r), b.add(j0, c), acc)
            b.call(declare(b.module, "free", VOID, [PTR]), [ap])
    return emit


def _packb_params(b, g: GemmInfo, bptr, bp, table_name: str):
    """A stack :data:`gemm_shared.PACKB_PARAMS` for kernel ``g`` (B batch offsets in a constant table)."""
    k = g.k
    nb = len(k.batch)
    if g.b_varies():
        offs = []
        for flat in range(g.nbatch):
            idx, off = flat, k.b.offset
            for d in reversed(range(nb)):
                off += (idx % k.batch[d]) * k.b.strides[d]
                idx //= k.batch[d]
            offs.append(off)
    else:
        offs = [k.b.offset]
    table = ir.GlobalVariable(b.module, ir.ArrayType(I64, len(offs)), name=table_name)
    table.linkage = "internal"
    table.global_constant = True
    table.initializer = ir.Constant(ir.ArrayType(I64, len(offs)), offs)
    params = entry_alloca(b, gemm_shared.PACKB_PARAMS, "pbp")
    vals = [bptr, bp, table, c64(k.n), c64(k.k), c64(k.b.strides[-2]), c64(k.b.strides[-1]), c64(-(-k.n // g.NR))]
    zero = ir.Constant(I32, 0)
    for i, v in enumerate(vals):
        b.store(v, b.gep(params, [zero, ir.Constant(I32, i)], source_etype=gemm_shared.PACKB_PARAMS))
    return params


def emit_packed(b: ir.IRBuilder, fn: ir.Function, g: GemmInfo, name: str, noalias: bool, threads: int) -> None:
    """At ``b`` in kernel ``fn``: pack B (parallel), then the blocked GEMM (parallel) on ``threads``."""
    module, k = b.module, g.k
    nio = g.nin + len(k.outputs)
    MC = max(MR, min(MC_MAX, -(-(-(-k.m // max(threads, 1))) // MR) * MR))
    npan = -(-k.n // g.NR)
    nb_b = g.nbatch if g.b_varies() else 1
    bp_bytes = nb_b * npan * k.k * g.NR * (g.bits // 8)
    alloc = declare(module, "aligned_alloc", PTR, [I64, I64])
    bp = b.call(alloc, [c64(64), c64(-(-bp_bytes // 64) * 64)])
    with b.if_then(b.icmp_unsigned("!=", bp, ir.Constant(PTR, None))):
        params = _packb_params(b, g, fn.args[k.b.buf], bp, f"{name}.boff")
        pack = gemm_shared.packb(module, g.dt, k.inputs[k.b.buf].type.dtype, g.NR)
        parallel_for(b, pack, [params], nb_b * npan, threads)
        comp = make_body(module, f"{name}.gemm", nio + 1, noalias, _compute_body(g, MC))
        parallel_for(b, comp, list(fn.args) + [bp], g.nbatch * (-(-k.m // MC)), threads)
        b.call(declare(module, "free", VOID, [PTR]), [bp])
