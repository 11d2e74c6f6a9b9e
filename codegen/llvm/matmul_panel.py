"""Row tiles on a transposed B: a Linear's weight ``W [n, k]`` read at call time, packed per item.

A Linear computes ``x @ W^T``: B is ``W^T``, unit stride along k and ``k`` apart along n. The
row tiles of :mod:`.matmul_tiles` want the opposite (vectors of B along n: a broadcast of
``A[i, p]`` times a row of B, no horizontal sums); the dot tiles read this layout in place but
reduce every accumulator horizontally, which costs as much as the products when k is a few
vectors long. When the weight is a constant, the layout pass stores it ``[k, n]`` once
(``kn_weight``); a weight read at call time is a runtime input and cannot be stored so ahead.

So each parallel item here takes one block of PT_COLS = RT_VECS x W columns of C (and, when
there are few such blocks, one chunk of its rows) and:

1. packs ``B[:, j0 : j0 + PT_COLS]`` into a stack panel ``[k, PT_COLS]`` (rows of B along n,
   columns past n zero): whole W x W blocks are read as W vectors along k and transposed in
   registers (:func:`.vectors.transpose`), the edges element by element;
2. runs the row tiles (:func:`.matmul_tiles.row_tile`) over its rows of C -- all that this copy
   of B serves (every batch when B is shared by them, else the item's batch), or a chunk of
   them -- reading the panel;
3. runs the epilogue of each row block on its columns (:func:`.matmul_tiles.row_epilogues`).

The panel is the only copy of B, packed once per call, column block and row chunk: k x n
elements per chunk, beside the m x n x k products that read it m times.
Columns past n are computed from the zero padding and never stored; rows past m are computed
on clamped indices and never stored; so any m, n and k are exact.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.kernelfn import buffer_table
from minicomp.codegen.llvm.matmul_common import GemmInfo, batch_vars, c64, offset, smin
from minicomp.codegen.llvm.matmul_tiles import DT_MAX_SHARED_ROWS, RT_ROWS, RT_VECS, row_block_bases, row_epilogues, \
    row_tile
from minicomp.codegen.llvm.vectors import transpose

#: Bound on one thread's panel (k x RT_VECS x W elements on the stack), small beside a default
#: thread stack (8 MiB with glibc): f32 on AVX-512 packs up to k = 512 so.
PT_MAX_PANEL_BYTES = 64 << 10
#: Items the product is cut into at least (when it has enough row tiles), and row tiles per item at least.
PT_MIN_ITEMS, PT_MIN_TILES = 16, 2


def panel_cols(g: GemmInfo) -> int:
    """Columns of C (and of the panel) per item: one row tile's RT_VECS vectors."""
    return RT_VECS * g.W


def panel_tiles_apply(g: GemmInfo) -> bool:
    """The panel path applies: f32/f64 stored as such, B unit stride along k (and not along n),
    at least one row tile of rows, few enough rows per copy of B, and the panel within
    PT_MAX_PANEL_BYTES."""
    k = g.k
    return (g.same_float_storage() and k.k >= 1 and k.m >= RT_ROWS and k.b.strides[-2] == 1
            and k.b.strides[-1] != 1 and g.shared_rows() <= DT_MAX_SHARED_ROWS
            and k.k * panel_cols(g) * (g.bits // 8) <= PT_MAX_PANEL_BYTES)


def _tiles_per_copy(g: GemmInfo) -> int:
    """Row tiles one copy of B serves: every batch's rows when B is shared, else one batch's."""
    return (1 if g.b_varies() else g.nbatch) * -(-g.k.m // RT_ROWS)


def _chunks(g: GemmInfo) -> int:
    """Row chunks per column block: enough for PT_MIN_ITEMS items when the column blocks are few
    (a thread that starts late, or a machine with more cores, still finds work), but at least
    PT_MIN_TILES row tiles per chunk, so each packed panel serves several tiles."""
    copies = -(-g.k.n // panel_cols(g)) * (g.nbatch if g.b_varies() else 1)
    tiles = _tiles_per_copy(g)
    chunks = max(1, min(-(-PT_MIN_ITEMS // copies), tiles // PT_MIN_TILES))
    return -(-tiles // -(-tiles // chunks))  # no empty chunk: as many as the chunk length needs


def panel_items(g: GemmInfo) -> int:
    """Parallel items: column blocks, times the batches when B differs between them, times row chunks."""
    blocks = -(-g.k.n // panel_cols(g))
    return blocks * (g.nbatch if g.b_varies() else 1) * _chunks(g)


def _pack(g: GemmInfo, b: ir.IRBuilder, bptr, panel, bvars, j0) -> None:
    """``panel[p * PT_COLS + c] = B[bvars..., p, j0 + c]`` for every p < k, zero where ``j0 + c >= n``."""
    k, W, T, pc = g.k, g.W, g.T, panel_cols(g)
    vt = ir.VectorType(T, W)
    esize = g.bits // 8
    kv = k.k - k.k % W  # the steps covered by whole W x W blocks

    def at(base, index):
        return b.gep(base, [index], inbounds=True, source_etype=T)
    whole = smin(b, c64(RT_VECS), b.udiv(b.sub(c64(k.n), j0), c64(W)))  # whole W-column blocks inside n
    with for_range(b, 0, whole, name="pkc") as cb:
        c0 = b.mul(cb, c64(W))
        if kv:
            with for_range(b, 0, kv, step=W, name="pkp") as p0:
                rows = [b.load(at(bptr, offset(b, k.b, bvars + [p0, b.add(b.add(j0, c0), c64(i))])), typ=vt,
                               align=esize) for i in range(W)]
                for c, col in enumerate(transpose(b, rows)):
                    b.store(col, at(panel, b.add(b.mul(b.add(p0, c64(c)), c64(pc)), c0)), align=esize)
        if kv < k.k:  # the last k % W steps of these columns
            with for_range(b, kv, k.k, name="pkr") as p:
                with for_range(b, c0, b.add(c0, c64(W)), name="pkrc") as c:
                    src = offset(b, k.b, bvars + [p, b.add(j0, c)])
                    b.store(b.load(at(bptr, src), typ=T), at(panel, b.add(b.mul(p, c64(pc)), c)))
    zero = convert.constant(0, g.dt)
    with for_range(b, b.mul(whole, c64(W)), pc, name="pke") as c:  # the partial block past them: zero past n
        j = b.add(j0, c)
        inside = b.icmp_signed("<", j, c64(k.n))
        jc = smin(b, j, c64(k.n - 1))
        with for_range(b, 0, k.k, name="pkep") as p:
            x = b.load(at(bptr, offset(b, k.b, bvars + [p, jc])), typ=T)
            b.store(b.select(inside, x, zero), at(panel, b.add(b.mul(p, c64(pc)), c)))


def panel_tile_body(g: GemmInfo):
    """The parallel body over items [begin, end) of :func:`panel_items` (see the module docstring)."""
    def emit(b, ptrs, begin, end):
        k, R, T, pc = g.k, RT_ROWS, g.T, panel_cols(g)
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        aptr, bptr = tab[k.a.buf][0], tab[k.b.buf][0]
        nblocks = -(-k.n // pc)
        panel = entry_alloca(b, ir.ArrayType(T, k.k * pc), "panel")
        buf = entry_alloca(b, ir.ArrayType(T, R * pc), "ptbuf")
        panel.align = buf.align = 64  # whole vectors never straddle a cache line
        varies = g.b_varies()
        tpb = -(-k.m // R)  # row tiles per batch
        per_copy, chunks = _tiles_per_copy(g), _chunks(g)
        per_chunk = -(-per_copy // chunks)
        with for_range(b, begin, end, name="item") as item:
            copy, chunk = b.udiv(item, c64(chunks)), b.urem(item, c64(chunks))
            j0 = b.mul(b.urem(copy, c64(nblocks)), c64(pc))
            ncols = smin(b, c64(pc), b.sub(c64(k.n), j0))
            first = b.mul(b.udiv(copy, c64(nblocks)), c64(tpb)) if varies else c64(0)  # first tile of the copy
            _pack(g, b, bptr, panel, batch_vars(b, b.udiv(first, c64(tpb)), k.batch) if k.batch else [], j0)
            t0 = b.add(first, b.mul(chunk, c64(per_chunk)))
            t1 = smin(b, b.add(t0, c64(per_chunk)), b.add(first, c64(per_copy)))
            with for_range(b, t0, t1, name="tile") as t:
                bvars = batch_vars(b, b.udiv(t, c64(tpb)), k.batch) if k.batch else []
                i0 = b.mul(b.urem(t, c64(tpb)), c64(R))
                row_tile(g, b, aptr, row_block_bases(g, b, bvars, i0), panel, c64(0), pc, buf, c64(0), pc,
                         [g.W] * RT_VECS)
                row_epilogues(g, b, ptrs, bvars, i0, j0, ncols, buf, pc, R)
    return emit
