"""MatmulKernel -> LLVM: a packed, register-blocked GEMM with a SIMD micro-kernel.

Large products (the *packed* path), per batch:

1. B is packed into panels of NR = 2 vectors of columns, each ``k x NR``
   contiguous and zero-padded (converted to the accumulator type; f16/bf16 -> f32);
   panels are split across threads.
2. Rows are split in blocks of MC; each thread packs its A block into MR-row
   panels and runs the micro-kernel: MR x NR accumulators (MR*2 SIMD registers)
   updated with ``fma`` over all of k, then the epilogue is applied per output element.

The micro-kernel (one per distinct k), A packing and B packing are functions emitted
once per module (:mod:`.gemm_shared`): each kernel adds only its loop nest and
epilogue, so a model with many matmuls compiles the SIMD code once.

Small products with at most DT_MAX_SHARED_ROWS rows per B skip packing (f32/f64):
*dot tiles* (A and B contiguous along k, e.g. linear layers) compute 3x4 tiles of
vector dot products along k; *row tiles* (B contiguous along n, e.g. attention's
``@ v``) compute 6 x 2-vector tiles from a broadcast ``A[i, p]`` times rows of B.
Other small products (the *simple* path) loop directly: a dot product over k
(vectorized with ``reassoc`` adds) when B is contiguous along k, else a row
update ``acc[:] += a * B[p, :]`` over a stack row.
"""
from __future__ import annotations

from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import convert, gemm_shared
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import call, declare
from minicomp.codegen.llvm.jit import host_vector_bits
from minicomp.codegen.llvm.kernelfn import buffer_table, emit_store, kernel_function
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, make_body, parallel_for
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID, register_type, storage_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Access, Buffer, MatmulKernel

MR = gemm_shared.MR
MC_MAX = 48
GEMV_COLS = 8
GEMV_MAX_ROWS = 4
GEMV_PARALLEL_WORK = 1 << 17
SIMPLE_ROW_LIMIT = 16384
#: Register tile of the unpacked dot-product path: rows of A x columns of B (rows of B^T).
DT_ROWS, DT_COLS = 3, 4
DT_MAX_N, DT_MAX_K = 4096, 2048
#: Packing B pays off once it serves more rows than this; below DT_MIN_VECS vectors of k
#: the per-tile horizontal sums cost more than the products (measured on the block's shapes).
DT_MAX_SHARED_ROWS, DT_MIN_VECS = 96, 8
#: Register tile of the unpacked broadcast path (B unit stride along n): rows x vectors of columns;
#: each block of rows streams one batch's B (at most RT_MAX_B_BYTES, so it stays in cache).
RT_ROWS, RT_VECS, RT_MAX_B_BYTES = 6, 2, 1 << 20


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _batch_vars(b, flat: ir.Value, batch: tuple[int, ...]) -> list[ir.Value]:
    out = []
    for d in reversed(range(len(batch))):
        out.append(b.urem(flat, _c(batch[d])) if d else flat)
        flat = b.udiv(flat, _c(batch[d]))
    return list(reversed(out))


def _offset(b, acc: Access, idx: list[ir.Value]) -> ir.Value:
    off = _c(acc.offset)
    for s, v in zip(acc.strides, idx):
        if s:
            off = b.add(off, b.mul(v, _c(s)))
    return off


def _load_acc(b, tab, acc: Access, idx, acc_dt: DType) -> ir.Value:
    ptr, _, dt = tab[acc.buf]
    raw = b.load(b.gep(ptr, [_offset(b, acc, idx)], inbounds=True, source_etype=storage_type(dt)),
                 typ=storage_type(dt))
    return convert.cast(b, convert.from_storage(b, raw, dt), dt, acc_dt)


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


def _madd(b, x, y, acc, is_float):
    if is_float:
        return call(b, "llvm.fma", x, y, acc)
    return b.add(b.mul(x, y), acc)


class _Gemm:
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

    # ---- epilogue -------------------------------------------------------------
    def epilogue(self, b, tab, out_ptrs, bvars, i, j, acc):
        em = ExprEmitter(b, tab, bvars + [i, j], {0: acc})
        for st in self.k.stores:
            emit_store(em, out_ptrs, self.k.outputs, st)

    # ---- simple path ----------------------------------------------------------
    def simple_dot(self, b, ptrs, begin, end):
        k = self.k
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        bm = len(k.batch)
        with for_range(b, begin, end, name="ij") as idx:
            row, j = b.udiv(idx, _c(k.n)), b.urem(idx, _c(k.n))
            bvars = _batch_vars(b, b.udiv(row, _c(k.m)), k.batch) if bm else []
            i = b.urem(row, _c(k.m))
            acc = entry_alloca(b, self.T, "dot")
            b.store(convert.constant(0, self.dt), acc)
            with for_range(b, 0, k.k, name="p") as p:
                x = _load_acc(b, tab, k.a, bvars + [i, p], self.dt)
                y = _load_acc(b, tab, k.b, bvars + [p, j], self.dt)
                cur = b.load(acc, typ=self.T)
                if self.dt.is_float:
                    nxt = b.fadd(cur, b.fmul(x, y), flags=("reassoc", "contract"))
                else:
                    nxt = b.add(cur, b.mul(x, y))
                b.store(nxt, acc)
            self.epilogue(b, tab, ptrs[self.nin:], bvars, i, j, b.load(acc, typ=self.T))

    def simple_axpy(self, b, ptrs, begin, end):
        k = self.k
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        rowbuf = entry_alloca(b, ir.ArrayType(self.T, k.n), "row")
        with for_range(b, begin, end, name="row") as row:
            bvars = _batch_vars(b, b.udiv(row, _c(k.m)), k.batch) if k.batch else []
            i = b.urem(row, _c(k.m))
            with for_range(b, 0, k.n, name="z") as j:
                b.store(convert.constant(0, self.dt), b.gep(rowbuf, [j], source_etype=self.T))
            with for_range(b, 0, k.k, name="p") as p:
                x = _load_acc(b, tab, k.a, bvars + [i, p], self.dt)
                with for_range(b, 0, k.n, name="j") as j:
                    y = _load_acc(b, tab, k.b, bvars + [p, j], self.dt)
                    slot = b.gep(rowbuf, [j], source_etype=self.T)
                    b.store(_madd(b, x, y, b.load(slot, typ=self.T), self.dt.is_float), slot)
            with for_range(b, 0, k.n, name="e") as j:
                acc = b.load(b.gep(rowbuf, [j], source_etype=self.T), typ=self.T)
                self.epilogue(b, tab, ptrs[self.nin:], bvars, i, j, acc)

    # ---- gemv path: few rows, A and B contiguous along k ------------------------
    def gemv_ok(self) -> bool:
        """Vector dot products apply: float storage == accumulator type, unit k strides."""
        k = self.k
        return (self.dt in (DType.f32, DType.f64) and k.k >= self.W
                and k.inputs[k.a.buf].type.dtype is self.dt and k.inputs[k.b.buf].type.dtype is self.dt
                and k.a.strides[-1] == 1 and k.b.strides[-2] == 1)

    def gemv(self, b, ptrs, begin, end):
        """Items [begin, end) of (row x block of GEMV_COLS columns): GEMV_COLS vector dot products at once."""
        k, JB = self.k, GEMV_COLS
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        out_ptrs = ptrs[self.nin:]
        nj = -(-k.n // JB)
        with for_range(b, begin, end, name="blk") as blk:
            row, jb = b.udiv(blk, _c(nj)), b.urem(blk, _c(nj))
            bvars = _batch_vars(b, b.udiv(row, _c(k.m)), k.batch) if k.batch else []
            i = b.urem(row, _c(k.m))
            j0 = b.mul(jb, _c(JB))
            full = b.icmp_signed("<=", b.add(j0, _c(JB)), _c(k.n))
            with b.if_else(full) as (then, other):
                with then:
                    self.gemv_cols(b, tab, out_ptrs, bvars, i, [b.add(j0, _c(c)) for c in range(JB)])
                with other:
                    with for_range(b, j0, k.n, name="jt") as j:
                        self.gemv_cols(b, tab, out_ptrs, bvars, i, [j])

    def gemv_cols(self, b, tab, out_ptrs, bvars, i, cols):
        """acc[c] = sum_p A[i, p] * B[p, cols[c]] with one vector accumulator per column; epilogues."""
        k, W, T = self.k, self.W, self.T
        vt = ir.VectorType(T, W)
        esize = self.bits // 8
        aptr = tab[k.a.buf][0]
        bptr = tab[k.b.buf][0]
        abase = _offset(b, k.a, bvars + [i, _c(0)])
        bbases = [_offset(b, k.b, bvars + [_c(0), j]) for j in cols]
        kv = k.k - k.k % W
        zero = ir.Constant(vt, [convert.constant(0, self.dt)] * W)
        pre = b.block
        loop = b.append_basic_block("gv.loop")
        done = b.append_basic_block("gv.done")
        b.branch(loop)
        b.position_at_end(loop)
        p = b.phi(I64, "p")
        p.add_incoming(_c(0), pre)
        accs = [b.phi(vt) for _ in cols]
        av = b.load(b.gep(aptr, [b.add(abase, p)], inbounds=True, source_etype=T), typ=vt, align=esize)
        new = []
        for acc, base in zip(accs, bbases):
            bv = b.load(b.gep(bptr, [b.add(base, p)], inbounds=True, source_etype=T), typ=vt, align=esize)
            new.append(call(b, "llvm.fma", av, bv, acc))
            acc.add_incoming(zero, pre)
        p2 = b.add(p, _c(W))
        p.add_incoming(p2, loop)
        for acc, v in zip(accs, new):
            acc.add_incoming(v, loop)
        b.cbranch(b.icmp_signed("<", p2, _c(kv)), loop, done)
        b.position_at_end(done)
        red = declare(b.module, f"llvm.vector.reduce.fadd.{'v%d' % W}{'f32' if self.bits == 32 else 'f64'}",
                      T, [T, vt])
        sums = [b.call(red, [convert.constant(0, self.dt), v], fastmath=("reassoc",)) for v in new]
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
            self.epilogue(b, tab, out_ptrs, bvars, i, j, s)

    # ---- dot-tile path: A and B contiguous along k, no packing -------------------
    def dot_tile_ok(self) -> bool:
        """The unpacked register-tile path applies (see :meth:`dot_tiles`)."""
        k = self.k
        shared = k.m if self.b_varies() else self.nbatch * k.m  # rows one packed copy of B would serve
        return (self.gemv_ok() and self.W >= DT_COLS and k.n <= DT_MAX_N and DT_MIN_VECS * self.W <= k.k <= DT_MAX_K
                and shared <= DT_MAX_SHARED_ROWS)

    def dot_tiles(self, b, ptrs, begin, end):
        """Items [begin, end) of (batch x block of DT_ROWS rows).

        Per block, each DT_ROWS x DT_COLS tile of C is DT_ROWS*DT_COLS vector dot products
        over k read straight from A and B (both unit stride along k: linear layers' weights,
        q @ k^T), reduced into a stack row block; then the epilogue runs along each row
        (a unit-stride loop LLVM vectorizes). Rows and columns past the edge are computed
        on clamped indices and never stored.
        """
        k, R, C, W, T = self.k, DT_ROWS, DT_COLS, self.W, self.T
        vt = ir.VectorType(T, W)
        esize = self.bits // 8
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        out_ptrs = ptrs[self.nin:]
        aptr, bptr = tab[k.a.buf][0], tab[k.b.buf][0]
        nrb = -(-k.m // R)
        ncb = -(-k.n // C)
        npad = ncb * C
        buf = entry_alloca(b, ir.ArrayType(T, R * npad), "dtbuf")
        kv = k.k - k.k % W
        zero = ir.Constant(vt, [convert.constant(0, self.dt)] * W)
        with for_range(b, begin, end, name="blk") as blk:
            bvars = _batch_vars(b, b.udiv(blk, _c(nrb)), k.batch) if k.batch else []
            i0 = b.mul(b.urem(blk, _c(nrb)), _c(R))
            abases = [_offset(b, k.a, bvars + [_smin(b, b.add(i0, _c(r)), _c(k.m - 1)), _c(0)]) for r in range(R)]
            with for_range(b, 0, ncb, name="ct") as ct:
                j0 = b.mul(ct, _c(C))
                bbases = [_offset(b, k.b, bvars + [_c(0), _smin(b, b.add(j0, _c(c)), _c(k.n - 1))])
                          for c in range(C)]
                pre = b.block
                loop = b.append_basic_block("dt.loop")
                done = b.append_basic_block("dt.done")
                b.branch(loop)
                b.position_at_end(loop)
                p = b.phi(I64, "p")
                p.add_incoming(_c(0), pre)
                accs = [[b.phi(vt) for _ in range(C)] for _ in range(R)]
                avs = [b.load(b.gep(aptr, [b.add(base, p)], inbounds=True, source_etype=T), typ=vt, align=esize)
                       for base in abases]
                new = [[None] * C for _ in range(R)]
                for c in range(C):
                    bv = b.load(b.gep(bptr, [b.add(bbases[c], p)], inbounds=True, source_etype=T),
                                typ=vt, align=esize)
                    for r in range(R):
                        new[r][c] = call(b, "llvm.fma", avs[r], bv, accs[r][c])
                p2 = b.add(p, _c(W))
                p.add_incoming(p2, loop)
                for r in range(R):
                    for c in range(C):
                        accs[r][c].add_incoming(zero, pre)
                        accs[r][c].add_incoming(new[r][c], loop)
                b.cbranch(b.icmp_signed("<", p2, _c(kv)), loop, done)
                b.position_at_end(done)
                for r in range(R):
                    slot = b.gep(buf, [b.add(_c(r * npad), j0)], source_etype=T)
                    b.store(_column_sums(b, new[r]), slot, align=esize)
                if kv < k.k:  # k % W leftover products, added in place
                    with for_range(b, kv, k.k, name="pt") as pt:
                        xs = [b.load(b.gep(aptr, [b.add(base, pt)], inbounds=True, source_etype=T), typ=T)
                              for base in abases]
                        for c in range(C):
                            y = b.load(b.gep(bptr, [b.add(bbases[c], pt)], inbounds=True, source_etype=T), typ=T)
                            for r in range(R):
                                slot = b.gep(buf, [b.add(_c(r * npad + c), j0)], source_etype=T)
                                b.store(call(b, "llvm.fma", xs[r], y, b.load(slot, typ=T)), slot)
            nrows = _smin(b, _c(R), b.sub(_c(k.m), i0))
            with for_range(b, 0, nrows, name="er") as r:
                i = b.add(i0, r)
                rbase = b.mul(r, _c(npad))
                with for_range(b, 0, k.n, name="ec") as j:
                    acc = b.load(b.gep(buf, [b.add(rbase, j)], source_etype=T), typ=T)
                    self.epilogue(b, tab, out_ptrs, bvars, i, j, acc)

    # ---- row-tile path: B contiguous along n, no packing ------------------------
    def row_tile_ok(self) -> bool:
        """The unpacked broadcast path applies (see :meth:`row_tiles`)."""
        k, W = self.k, self.W
        shared = k.m if self.b_varies() else self.nbatch * k.m
        return (self.dt in (DType.f32, DType.f64) and k.k >= 1 and k.m >= RT_ROWS
                and k.n % (RT_VECS * W) == 0 and k.k * k.n * (self.bits // 8) <= RT_MAX_B_BYTES
                and shared <= DT_MAX_SHARED_ROWS
                and k.inputs[k.a.buf].type.dtype is self.dt and k.inputs[k.b.buf].type.dtype is self.dt
                and k.b.strides[-1] == 1)

    def row_tiles(self, b, ptrs, begin, end):
        """Items [begin, end) of (batch x block of RT_ROWS rows).

        Per block, each RT_ROWS x (RT_VECS vectors) tile of C accumulates ``A[i, p]``
        (broadcast) times the vectors ``B[p, j:j+W]`` read straight from B (unit stride along
        n: attention's ``@ v``) over all of k, into a stack row block; then the epilogue
        runs along each row. Rows past the edge are computed on clamped indices, never stored.
        """
        k, R, NV, W, T = self.k, RT_ROWS, RT_VECS, self.W, self.T
        vt = ir.VectorType(T, W)
        esize = self.bits // 8
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        out_ptrs = ptrs[self.nin:]
        aptr, bptr = tab[k.a.buf][0], tab[k.b.buf][0]
        nrb = -(-k.m // R)
        buf = entry_alloca(b, ir.ArrayType(T, R * k.n), "rtbuf")
        zero = ir.Constant(vt, [convert.constant(0, self.dt)] * W)
        mask = ir.Constant(ir.VectorType(I32, W), [0] * W)
        sak, sbk = k.a.strides[-1], k.b.strides[-2]
        with for_range(b, begin, end, name="blk") as blk:
            bvars = _batch_vars(b, b.udiv(blk, _c(nrb)), k.batch) if k.batch else []
            i0 = b.mul(b.urem(blk, _c(nrb)), _c(R))
            abases = [_offset(b, k.a, bvars + [_smin(b, b.add(i0, _c(r)), _c(k.m - 1)), _c(0)]) for r in range(R)]
            with for_range(b, 0, k.n // (NV * W), name="ct") as ct:
                j0 = b.mul(ct, _c(NV * W))
                bbase = _offset(b, k.b, bvars + [_c(0), j0])
                pre = b.block
                loop = b.append_basic_block("rt.loop")
                done = b.append_basic_block("rt.done")
                b.branch(loop)
                b.position_at_end(loop)
                p = b.phi(I64, "p")
                p.add_incoming(_c(0), pre)
                accs = [[b.phi(vt) for _ in range(NV)] for _ in range(R)]
                brow = b.add(bbase, b.mul(p, _c(sbk)))
                bvs = [b.load(b.gep(bptr, [b.add(brow, _c(c * W))], inbounds=True, source_etype=T),
                              typ=vt, align=esize) for c in range(NV)]
                new = []
                for r in range(R):
                    x = b.load(b.gep(aptr, [b.add(abases[r], b.mul(p, _c(sak)))], inbounds=True, source_etype=T),
                               typ=T)
                    splat = b.shuffle_vector(b.insert_element(ir.Constant(vt, ir.Undefined), x, _c(0)),
                                             ir.Constant(vt, ir.Undefined), mask)
                    new.append([call(b, "llvm.fma", splat, bvs[c], accs[r][c]) for c in range(NV)])
                p2 = b.add(p, _c(1))
                p.add_incoming(p2, loop)
                for r in range(R):
                    for c in range(NV):
                        accs[r][c].add_incoming(zero, pre)
                        accs[r][c].add_incoming(new[r][c], loop)
                b.cbranch(b.icmp_signed("<", p2, _c(k.k)), loop, done)
                b.position_at_end(done)
                for r in range(R):
                    for c in range(NV):
                        slot = b.gep(buf, [b.add(_c(r * k.n + c * W), j0)], source_etype=T)
                        b.store(new[r][c], slot, align=esize)
            nrows = _smin(b, _c(R), b.sub(_c(k.m), i0))
            with for_range(b, 0, nrows, name="er") as r:
                i = b.add(i0, r)
                rbase = b.mul(r, _c(k.n))
                with for_range(b, 0, k.n, name="ec") as j:
                    acc = b.load(b.gep(buf, [b.add(rbase, j)], source_etype=T), typ=T)
                    self.epilogue(b, tab, out_ptrs, bvars, i, j, acc)

    # ---- packed path ----------------------------------------------------------
    def b_varies(self) -> bool:
        nb = len(self.k.batch)
        return any(s for s in self.k.b.strides[:nb])

    def compute(self, b, ptrs, begin, end):
        """Row blocks [begin, end) of (batch x m-block); ptrs = inputs + outputs + [Bp]."""
        k, NR, W = self.k, self.NR, self.W
        nio = self.nin + len(k.outputs)
        tab = buffer_table(ptrs[:self.nin], k.inputs)
        out_ptrs = ptrs[self.nin:nio]
        bp = ptrs[nio]
        nmb = -(-k.m // self.MC)
        npan = -(-k.n // NR)
        elt = self.bits // 8
        ap_bytes = self.MC * k.k * elt
        alloc = declare(b.module, "aligned_alloc", PTR, [I64, I64])
        ap = b.call(alloc, [_c(64), _c(-(-ap_bytes // 64) * 64)])
        ok = b.icmp_unsigned("!=", ap, ir.Constant(PTR, None))
        tile = entry_alloca(b, ir.ArrayType(self.T, MR * NR), "tile")
        micro = gemm_shared.micro(b.module, self.dt, W, k.k)  # shared by kernels of equal k
        with b.if_then(ok):
            with for_range(b, begin, end, name="blk") as blk:
                bidx = b.udiv(blk, _c(nmb))
                bvars = _batch_vars(b, bidx, k.batch) if k.batch else []
                i0 = b.mul(b.urem(blk, _c(nmb)), _c(self.MC))
                rows = _smin(b, _c(self.MC), b.sub(_c(k.m), i0))
                npanels_a = b.udiv(b.add(rows, _c(MR - 1)), _c(MR))
                adt = k.inputs[k.a.buf].type.dtype
                aoff = _offset(b, k.a, bvars + [_c(0), _c(0)])
                b.call(gemm_shared.packa(b.module, self.dt, adt),
                       [tab[k.a.buf][0], ap, aoff, i0, _c(k.m), _c(k.k), _c(k.a.strides[-2]),
                        _c(k.a.strides[-1]), rows])
                bbase = b.mul(bidx, _c(npan * k.k * NR)) if self.b_varies() else _c(0)
                with for_range(b, 0, npan, name="jp") as jp:
                    bpan = b.gep(bp, [b.add(bbase, b.mul(jp, _c(k.k * NR)))], source_etype=self.T)
                    j0 = b.mul(jp, _c(NR))
                    ncols = _smin(b, _c(NR), b.sub(_c(k.n), j0))
                    with for_range(b, 0, npanels_a, name="ir") as ia:
                        apan = b.gep(ap, [b.mul(ia, _c(k.k * MR))], source_etype=self.T)
                        b.call(micro, [apan, bpan, tile, _c(k.k)])
                        r0 = b.add(i0, b.mul(ia, _c(MR)))
                        nrows = _smin(b, _c(MR), b.sub(_c(k.m), r0))
                        with for_range(b, 0, nrows, name="er") as r:
                            with for_range(b, 0, ncols, name="ec") as c:
                                acc = b.load(b.gep(tile, [b.add(b.mul(r, _c(NR)), c)], source_etype=self.T),
                                             typ=self.T)
                                self.epilogue(b, tab, out_ptrs, bvars, b.add(r0, r), b.add(j0, c), acc)
            b.call(declare(b.module, "free", VOID, [PTR]), [ap])


def _packb_params(b, g: _Gemm, bptr, bp, table_name: str):
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
    vals = [bptr, bp, table, _c(k.n), _c(k.k), _c(k.b.strides[-2]), _c(k.b.strides[-1]), _c(-(-k.n // g.NR))]
    zero = ir.Constant(I32, 0)
    for i, v in enumerate(vals):
        b.store(v, b.gep(params, [zero, ir.Constant(I32, i)], source_etype=gemm_shared.PACKB_PARAMS))
    return params


def emit_matmul_kernel(module: ir.Module, name: str, k: MatmulKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function for matmul ``k`` in ``module``."""
    g = _Gemm(k)
    nin, nio = len(k.inputs), len(k.inputs) + len(k.outputs)
    fn = kernel_function(module, name, nio, noalias)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    work = g.nbatch * k.m * k.n * max(k.k, 1)
    th = threads if work >= PARALLEL_MIN_WORK * 2 else 1  # the pooled helper makes a split cheap
    rows = g.nbatch * k.m
    packed = k.k > 0 and rows >= MR and k.n >= g.W and k.m * k.n * k.k >= 32 ** 3
    if rows * k.n == 0:
        b.ret_void()
        return fn
    if not packed and k.n > SIMPLE_ROW_LIMIT:
        packed = k.k > 0
    if rows > GEMV_MAX_ROWS and g.dot_tile_ok() and (packed or k.m >= DT_ROWS):
        body = make_body(module, f"{name}.dtile", nio, noalias, g.dot_tiles)
        parallel_for(b, body, list(fn.args), g.nbatch * -(-k.m // DT_ROWS), th)
        b.ret_void()
        return fn
    if rows > GEMV_MAX_ROWS and g.row_tile_ok():
        body = make_body(module, f"{name}.rtile", nio, noalias, g.row_tiles)
        parallel_for(b, body, list(fn.args), g.nbatch * -(-k.m // RT_ROWS), th)
        b.ret_void()
        return fn
    if not packed and g.gemv_ok() and rows <= GEMV_MAX_ROWS:
        body = make_body(module, f"{name}.gemv", nio, noalias, g.gemv)
        parallel_for(b, body, list(fn.args), rows * -(-k.n // GEMV_COLS), threads if work >= GEMV_PARALLEL_WORK else 1)
        b.ret_void()
        return fn
    if not packed:
        dot = k.k == 0 or k.b.strides[-2] == 1 or k.n == 1 or k.n > SIMPLE_ROW_LIMIT
        if dot:
            body = make_body(module, f"{name}.dot", nio, noalias, g.simple_dot)
            parallel_for(b, body, list(fn.args), rows * k.n, th)
        else:
            body = make_body(module, f"{name}.axpy", nio, noalias, g.simple_axpy)
            parallel_for(b, body, list(fn.args), rows, th)
        b.ret_void()
        return fn
    g.MC = max(MR, min(MC_MAX, -(-(-(-k.m // max(th, 1))) // MR) * MR))
    npan = -(-k.n // g.NR)
    nb_b = g.nbatch if g.b_varies() else 1
    bp_bytes = nb_b * npan * k.k * g.NR * (g.bits // 8)
    alloc = declare(module, "aligned_alloc", PTR, [I64, I64])
    bp = b.call(alloc, [_c(64), _c(-(-bp_bytes // 64) * 64)])
    with b.if_then(b.icmp_unsigned("!=", bp, ir.Constant(PTR, None))):
        params = _packb_params(b, g, fn.args[k.b.buf], bp, f"{name}.boff")
        pack = gemm_shared.packb(module, g.dt, k.inputs[k.b.buf].type.dtype, g.NR)
        parallel_for(b, pack, [params], nb_b * npan, th)
        comp = make_body(module, f"{name}.gemm", nio + 1, noalias, g.compute)
        parallel_for(b, comp, list(fn.args) + [bp], g.nbatch * (-(-k.m // g.MC)), th)
        b.call(declare(module, "free", VOID, [PTR]), [bp])
    b.ret_void()
    return fn
