"""The unpacked register-tile matmul paths for small products (f32/f64, no packing).

Both split C into parallel items (dot tiles: batch x block of rows; row tiles: batch x
block of rows x group of columns), keep a register tile of accumulators over all of k
reading A and B in place, write the tile to a stack block and then run the epilogue along
each row (a unit-stride loop LLVM vectorizes) in a function of its own, whose constants
never compete with the tile loop for registers. Rows (and dot-tile columns) past the edge
are computed on clamped indices and never stored; row tiles load the columns past the
last full block of B with a lane mask. So any m and n are exact.

* **Dot tiles** (A and B unit stride along k: linear layers' weights, ``q @ k^T``):
  DT_ROWS x DT_COLS vector dot products along k, reduced horizontally per tile.
* **Row tiles** (B unit stride along n: attention's ``@ v``, linear weights the layout pass
  stored [k, n]): RT_ROWS x RT_VECS vectors of columns, each updated with a broadcast
  ``A[i, p]`` times a row of B.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import carried_loop, entry_alloca, for_range, outlined, splat
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.runtime.jit import host_vector_bits
from minicomp.codegen.llvm.kernelfn import buffer_table
from minicomp.codegen.llvm.matmul_common import GemmInfo, batch_vars, c64, offset, smin
from minicomp.codegen.llvm.types import I32
from minicomp.codegen.llvm.vectors import masked_load

#: Register tile of the dot-tile path: rows of A x columns of B (rows of B^T).
DT_ROWS, DT_COLS = 3, 4
DT_MAX_N, DT_MAX_K = 4096, 2048
#: Packing B pays off once it serves more rows than this; below DT_MIN_VECS vectors of k
#: the per-tile horizontal sums cost more than the products (measured on the block's shapes).
DT_MAX_SHARED_ROWS, DT_MIN_VECS = 96, 8
#: Register tile of the row-tile path: rows x vectors of columns; each block of rows
#: streams one batch's B (at most RT_MAX_B_BYTES, so it stays in cache).
RT_ROWS, RT_VECS, RT_MAX_B_BYTES = (8 if host_vector_bits() >= 512 else 6), 2, 1 << 20
#: Columns of C per row-tile item (rounded up to whole blocks): items small enough to balance two threads.
RT_GROUP_COLS = 64


def dot_tiles_apply(g: GemmInfo) -> bool:
    """The dot-tile path applies (see :func:`dot_tile_body`)."""
    k = g.k
    return (g.unit_k_vectors() and g.W >= DT_COLS and k.n <= DT_MAX_N and DT_MIN_VECS * g.W <= k.k <= DT_MAX_K
            and g.shared_rows() <= DT_MAX_SHARED_ROWS)


def row_tiles_apply(g: GemmInfo) -> bool:
    """The row-tile path applies (see :func:`row_tile_body`)."""
    k = g.k
    return (g.same_float_storage() and k.k >= 1 and k.m >= RT_ROWS
            and k.k * k.n * (g.bits // 8) <= RT_MAX_B_BYTES
            and g.shared_rows() <= DT_MAX_SHARED_ROWS and k.b.strides[-1] == 1)


def _group_cols(g: GemmInfo) -> int:
    """Columns of one row-tile item: a whole number of RT_VECS-vector blocks, at least RT_GROUP_COLS."""
    bw = RT_VECS * g.W
    return -(-RT_GROUP_COLS // bw) * bw


def row_tile_items(g: GemmInfo) -> int:
    """The number of parallel items of :func:`row_tile_body`: batch x row block x column group."""
    k = g.k
    return g.nbatch * -(-k.m // RT_ROWS) * -(-k.n // _group_cols(g))


def _fold(b, x, y):
    """``[x0+x1, x2+x3, ..., y0+y1, ...]``: adjacent pairs of ``x`` then of ``y`` summed (same width)."""
    n = x.type.count
    ev = ir.Constant(ir.VectorType(I32, n), list(range(0, 2 * n, 2)))
    od = ir.Constant(ir.VectorType(I32, n), list(range(1, 2 * n, 2)))
    return b.fadd(b.shuffle_vector(x, y, ev), b.shuffle_vector(x, y, od), flags=("reassoc",))


def _column_sums(b, vecs: list[ir.Value]) -> ir.Value:
    """``<len(vecs) x T>`` of the horizontal sums of ``vecs`` (W lanes each, W >= len(vecs), powers of 2)."""
    while len(vecs) > 1:
        vecs = [_fold(b, vecs[i], vecs[i + 1]) for i in range(0, len(vecs), 2)]
    v, want = vecs[0], DT_COLS
    while v.type.count > want:  # each column's partial sums are adjacent: halve the width
        half = v.type.count // 2
        ev = ir.Constant(ir.VectorType(I32, half), list(range(0, 2 * half, 2)))
        od = ir.Constant(ir.VectorType(I32, half), list(range(1, 2 * half, 2)))
        v = b.fadd(b.shuffle_vector(v, v, ev), b.shuffle_vector(v, v, od), flags=("reassoc",))
    return v


def row_epilogues(g: GemmInfo, b, ptrs, bvars, i0, j0, ncols, buf, row_len: int, R: int) -> None:
    """The epilogue of rows i0 .. min(i0+R, m), columns j0 .. j0+ncols, from the stack block
    ``buf`` (rows of ``row_len``, column 0 = j0), in a function of its own
    (:func:`.control.outlined`) so that its constants never crowd the tile loop's registers."""
    k = g.k
    nptrs = len(ptrs)

    def emit(eb, params):
        eptrs, (ebuf, ei0, ej0, encols), ebvars = params[:nptrs], params[nptrs:nptrs + 4], params[nptrs + 4:]
        tab = buffer_table(eptrs[:g.nin], k.inputs)
        nrows = smin(eb, c64(R), eb.sub(c64(k.m), ei0))
        with for_range(eb, 0, nrows, name="er") as r:
            i = eb.add(ei0, r)
            rbase = eb.mul(r, c64(row_len))
            with for_range(eb, 0, encols, name="ec") as c:
                acc = eb.load(eb.gep(ebuf, [eb.add(rbase, c)], source_etype=g.T), typ=g.T)
                g.epilogue(eb, tab, eptrs[g.nin:], ebvars, i, eb.add(ej0, c), acc)
    outlined(b, f"{b.function.name}.epilogue", list(ptrs) + [buf, i0, j0, ncols] + list(bvars), emit)


def dot_tile_body(g: GemmInfo):
    """The parallel body over items [begin, end) of (batch x block of DT_ROWS rows)."""
    def emit(b, ptrs, begin, end):
        k, R, C, W, T = g.k, DT_ROWS, DT_COLS, g.W, g.T
        vt = ir.VectorType(T, W)
        esize = g.bits // 8
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        aptr, bptr = tab[k.a.buf][0], tab[k.b.buf][0]
        nrb = -(-k.m // R)
        ncb = -(-k.n // C)
        npad = ncb * C
        buf = entry_alloca(b, ir.ArrayType(T, R * npad), "dtbuf")
        kv = k.k - k.k % W
        zero = ir.Constant(vt, [convert.constant(0, g.dt)] * W)
        with for_range(b, begin, end, name="blk") as blk:
            bvars = batch_vars(b, b.udiv(blk, c64(nrb)), k.batch) if k.batch else []
            i0 = b.mul(b.urem(blk, c64(nrb)), c64(R))
            abases = [offset(b, k.a, bvars + [smin(b, b.add(i0, c64(r)), c64(k.m - 1)), c64(0)]) for r in range(R)]
            with for_range(b, 0, ncb, name="ct") as ct:
                j0 = b.mul(ct, c64(C))
                bbases = [offset(b, k.b, bvars + [c64(0), smin(b, b.add(j0, c64(c)), c64(k.n - 1))])
                          for c in range(C)]

                def step(p, accs, abases=abases, bbases=bbases):  # accs[r * C + c]
                    avs = [b.load(b.gep(aptr, [b.add(base, p)], inbounds=True, source_etype=T), typ=vt,
                                  align=esize) for base in abases]
                    new = [None] * (R * C)
                    for c in range(C):
                        bv = b.load(b.gep(bptr, [b.add(bbases[c], p)], inbounds=True, source_etype=T),
                                    typ=vt, align=esize)
                        for r in range(R):
                            new[r * C + c] = call(b, "llvm.fma", avs[r], bv, accs[r * C + c])
                    return new
                new = carried_loop(b, "dt", kv, W, [zero] * (R * C), step)
                for r in range(R):
                    slot = b.gep(buf, [b.add(c64(r * npad), j0)], source_etype=T)
                    b.store(_column_sums(b, new[r * C:(r + 1) * C]), slot, align=esize)
                if kv < k.k:  # k % W leftover products, added in place
                    with for_range(b, kv, k.k, name="pt") as pt:
                        xs = [b.load(b.gep(aptr, [b.add(base, pt)], inbounds=True, source_etype=T), typ=T)
                              for base in abases]
                        for c in range(C):
                            y = b.load(b.gep(bptr, [b.add(bbases[c], pt)], inbounds=True, source_etype=T), typ=T)
                            for r in range(R):
                                slot = b.gep(buf, [b.add(c64(r * npad + c), j0)], source_etype=T)
                                b.store(call(b, "llvm.fma", xs[r], y, b.load(slot, typ=T)), slot)
            row_epilogues(g, b, ptrs, bvars, i0, c64(0), c64(k.n), buf, npad, R)
    return emit


def row_tile(g: GemmInfo, b: ir.IRBuilder, aptr, abases, bptr, bbase, sbk: int, buf, col, row_len: int,
             lanes: list[int]) -> None:
    """One RT_ROWS x RT_VECS-vector register tile: ``buf[r, col + c] = sum_p A[r, p] * B[p, j + c]``
    over all of k, for the rows whose elements ``(r, p)`` are at ``abases[r] + p * (A's stride along k)``
    of ``aptr`` and B's row p at ``bbase + p * sbk`` of ``bptr`` (unit stride along the columns).
    Vector c of B has ``lanes[c]`` valid lanes (W: a plain load; fewer: a masked load that reads
    nothing past them; 0: skipped). ``buf`` has rows of ``row_len``."""
    k, R, NV, W, T = g.k, RT_ROWS, RT_VECS, g.W, g.T
    vt = ir.VectorType(T, W)
    esize = g.bits // 8
    zero = ir.Constant(vt, [convert.constant(0, g.dt)] * W)
    sak = k.a.strides[-1]
    live = [c for c in range(NV) if lanes[c] > 0]

    def step(p, accs):  # accs[r * len(live) + c]
        brow = b.add(bbase, b.mul(p, c64(sbk)))
        bvs = []
        for c in live:
            at = b.gep(bptr, [b.add(brow, c64(c * W))], inbounds=True, source_etype=T)
            bvs.append(b.load(at, typ=vt, align=esize) if lanes[c] == W else masked_load(b, at, vt, lanes[c], esize))
        new = []
        for r in range(R):
            x = b.load(b.gep(aptr, [b.add(abases[r], b.mul(p, c64(sak)))], inbounds=True, source_etype=T), typ=T)
            new += [call(b, "llvm.fma", splat(b, x, vt), bv, accs[r * len(live) + c]) for c, bv in enumerate(bvs)]
        return new
    new = carried_loop(b, "rt", k.k, 1, [zero] * (R * len(live)), step)
    for r in range(R):
        for c_i, c in enumerate(live):
            slot = b.gep(buf, [b.add(c64(r * row_len + c * W), col)], source_etype=T)
            b.store(new[r * len(live) + c_i], slot, align=esize)


def row_block_bases(g: GemmInfo, b: ir.IRBuilder, bvars, i0) -> list[ir.Value]:
    """The offsets of A's rows i0 .. i0 + RT_ROWS (indices past m clamped to m - 1: computed, never stored)."""
    k = g.k
    return [offset(b, k.a, bvars + [smin(b, b.add(i0, c64(r)), c64(k.m - 1)), c64(0)]) for r in range(RT_ROWS)]


def row_tile_body(g: GemmInfo):
    """The parallel body over items [begin, end) of (batch x block of RT_ROWS rows x group of columns).

    Each item runs RT_ROWS x RT_VECS-vector register tiles over the full column blocks of its
    group; the block holding the last ``n % (RT_VECS * W)`` columns (if any) loads B with a
    constant lane mask, so no element past a row of B is read and any n is exact.
    """
    def emit(b, ptrs, begin, end):
        k, R, W, T = g.k, RT_ROWS, g.W, g.T
        tab = buffer_table(ptrs[:g.nin], k.inputs)
        aptr, bptr = tab[k.a.buf][0], tab[k.b.buf][0]
        bw, cg = RT_VECS * W, _group_cols(g)
        nrb, ncg = -(-k.m // R), -(-k.n // cg)
        nfull = k.n - k.n % bw  # columns covered by full blocks; the rest is the masked tail block
        buf = entry_alloca(b, ir.ArrayType(T, R * cg), "rtbuf")
        sbk = k.b.strides[-2]
        with for_range(b, begin, end, name="blk") as blk:
            rest = b.udiv(blk, c64(ncg))
            jg0 = b.mul(b.urem(blk, c64(ncg)), c64(cg))
            bvars = batch_vars(b, b.udiv(rest, c64(nrb)), k.batch) if k.batch else []
            i0 = b.mul(b.urem(rest, c64(nrb)), c64(R))
            abases = row_block_bases(g, b, bvars, i0)
            with for_range(b, jg0, smin(b, b.add(jg0, c64(cg)), c64(nfull)), step=bw, name="ct") as j0:
                row_tile(g, b, aptr, abases, bptr, offset(b, k.b, bvars + [c64(0), j0]), sbk, buf,
                         b.sub(j0, jg0), cg, [W] * RT_VECS)
            if nfull < k.n:  # only the last group reaches the tail block
                with b.if_then(b.icmp_signed(">", b.add(jg0, c64(cg)), c64(nfull))):
                    lanes = [max(0, min(W, k.n - nfull - c * W)) for c in range(RT_VECS)]
                    row_tile(g, b, aptr, abases, bptr, offset(b, k.b, bvars + [c64(0), c64(nfull)]), sbk, buf,
                             b.sub(c64(nfull), jg0), cg, lanes)
            ncols = smin(b, c64(cg), b.sub(c64(k.n), jg0))
            row_epilogues(g, b, ptrs, bvars, i0, jg0, ncols, buf, cg, R)
    return emit
