"""AttentionKernel -> LLVM: ``softmax(score(Q K^T)) V`` by blocks of rows, P never stored.

Parallel items are (batch, chunk of ROWS_PER_ITEM query rows). An item first copies its
batch's K^T into a stack block (rows of ``npad`` = n rounded up to whole vectors, zero
padded), then for each register tile of RT_ROWS query rows:

1. scores: RT_ROWS x 2-vector register tiles over K^T's columns (a broadcast of Q[i, p]
   times a vector of K^T's row p), written to a stack block of RT_ROWS rows;
2. softmax along each row: ``score`` (the kernel's pointwise expression of the dot
   product), then ``exp(s - max)`` (unit-stride loops LLVM vectorizes); the row maxima
   and sums are vector reductions over all RT_ROWS rows at once (see ``_softmax`` for NaN);
3. ``P @ V``: register tiles of RT_ROWS rows x 2 vectors of V's columns (masked past e),
   over all n keys; each output element is its sum times ``1 / row sum``, then the epilogue.

Rows past m are computed on clamped indices and never stored. Every item reads only
its own batch and writes only its own rows, so results do not depend on the thread split.
"""
from __future__ import annotations

from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import carried_loop, entry_alloca, for_range, splat
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.runtime.jit import host_vector_bits
from minicomp.codegen.llvm.kernelfn import buffer_table, emit_store, kernel_function
from minicomp.codegen.llvm.mathlib import math_call
from minicomp.codegen.llvm.matmul_common import batch_vars, c64, offset, smin
from minicomp.codegen.llvm.matmul_tiles import RT_ROWS
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, dynamic_for
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import register_type
from minicomp.codegen.llvm.vectors import masked_load, transpose
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import AttentionKernel

#: Vectors of columns per register tile (RT_ROWS x NV accumulators).
NV = 2
#: Query rows per parallel item: one copy of K^T serves them (the copy costs about as
#: much as 8 rows of scores).
ROWS_PER_ITEM = 32
#: Bound on the stack blocks of one thread (K^T, scores, output tile), small beside a
#: default thread stack (8 MiB with glibc). f32 with d = 32 fits about 400 keys; longer
#: rows keep three kernels.
MAX_SCRATCH_BYTES = 64 << 10


def _lanes(dtype: DType) -> int:
    return max(2, host_vector_bits() // (8 * dtype.itemsize))


def _pad(x: int, w: int) -> int:
    return -(-x // w) * w


def attention_fits(m: int, n: int, d: int, e: int, dtype: DType) -> bool:
    """This backend has an attention kernel for these sizes: f32/f64, at least one key and
    one q/k column, and the stack blocks of one thread within MAX_SCRATCH_BYTES."""
    if dtype not in (DType.f32, DType.f64) or min(m, n, d, e) < 1:
        return False
    w = _lanes(dtype)
    return (d + RT_ROWS) * _pad(n, w) * dtype.itemsize + RT_ROWS * _pad(e, w) * dtype.itemsize <= MAX_SCRATCH_BYTES


def emit_attention_kernel(module: ir.Module, name: str, k: AttentionKernel, noalias: bool,
                          threads: int) -> ir.Function:
    """Define ``void name(ptr inputs..., ptr outputs...)`` computing attention kernel ``k``."""
    dt = k.acc_dtype
    if dt not in (DType.f32, DType.f64) or any(k.inputs[a.buf].type.dtype is not dt for a in (k.q, k.k, k.v)):
        raise TypeError(f"attention kernel {k.name}: Q, K and V must be stored in its f32/f64 accumulator dtype")
    nio = len(k.inputs) + len(k.outputs)
    fn = kernel_function(module, name, nio, noalias)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nbatch = prod(k.batch)
    if nbatch * k.m * k.e > 0:
        items = nbatch * -(-k.m // _rows_per_item())
        work = nbatch * k.m * k.n * (k.d + k.e)
        th = threads if work >= PARALLEL_MIN_WORK * 2 else 1
        dynamic_for(b, f"{name}.attn", list(fn.args), noalias, _Body(k), items, th)
    b.ret_void()
    return fn


def _rows_per_item() -> int:
    return -(-ROWS_PER_ITEM // RT_ROWS) * RT_ROWS


class _Body:
    """The parallel body over items [begin, end) (see the module docstring)."""

    def __init__(self, k: AttentionKernel):
        self.k = k
        self.T = register_type(k.acc_dtype)
        self.W = _lanes(k.acc_dtype)
        self.vt = ir.VectorType(self.T, self.W)
        self.esize = k.acc_dtype.itemsize
        self.npad, self.epad = _pad(k.n, self.W), _pad(k.e, self.W)

    def __call__(self, b: ir.IRBuilder, ptrs: list[ir.Value], begin: ir.Value, end: ir.Value) -> None:
        k, R, T = self.k, RT_ROWS, self.T
        self.b = b
        self.tab = buffer_table(ptrs[:len(k.inputs)], k.inputs)
        self.out_ptrs = ptrs[len(k.inputs):]
        self.kt = entry_alloca(b, ir.ArrayType(T, max(k.d, 1) * self.npad), "kt")
        self.s = entry_alloca(b, ir.ArrayType(T, R * self.npad), "scores")
        self.o = entry_alloca(b, ir.ArrayType(T, R * self.epad), "otile")
        for block in (self.kt, self.s, self.o):
            block.align = 64  # whole vectors never straddle a cache line
        self.rinv = entry_alloca(b, ir.ArrayType(T, R), "rinv")
        self.rmax = entry_alloca(b, ir.ArrayType(T, R), "rmax")
        ri = _rows_per_item()
        chunks = -(-k.m // ri)
        with for_range(b, begin, end, name="item") as it:
            bvars = batch_vars(b, b.udiv(it, c64(chunks)), k.batch) if k.batch else []
            self._copy_kt(bvars)
            i_begin = b.mul(b.urem(it, c64(chunks)), c64(ri))
            with for_range(b, i_begin, smin(b, b.add(i_begin, c64(ri)), c64(k.m)), step=R, name="tile") as i0:
                nrows = smin(b, c64(R), b.sub(c64(k.m), i0))
                self._scores(bvars, i0)
                self._softmax(bvars, i0, nrows)
                self._weighted_sum(bvars)
                self._epilogue(bvars, i0, nrows)

    # -- pieces ------------------------------------------------------------------------
    def _at(self, base: ir.Value, index: ir.Value) -> ir.Value:
        return self.b.gep(base, [index], inbounds=True, source_etype=self.T)

    def _copy_kt(self, bvars: list[ir.Value]) -> None:
        """kt[p * npad + j] = K^T[b, p, j]; columns n .. npad are zero.

        Where K's rows are unit stride along p (K stored [n, d], as attention's heads are),
        whole W x W blocks are read as W vectors along p and transposed in registers; the
        rest (and every element of other layouts) is copied one element at a time, which
        LLVM vectorizes with gathers: a noticeable share of the kernel for the block's heads."""
        b, k, W = self.b, self.k, self.W
        kptr = self.tab[k.k.buf][0]
        sp, sj = k.k.strides[-2], k.k.strides[-1]
        jv, pv = (k.n // W, k.d // W) if sp == 1 else (0, 0)

        def scalar_copy(p_lo, p_hi, j_lo, j_hi, name):
            with for_range(b, p_lo, p_hi, name=f"{name}p") as p:
                src, row = offset(b, k.k, bvars + [p, c64(0)]), b.mul(p, c64(self.npad))
                with for_range(b, j_lo, j_hi, name=f"{name}j") as j:
                    x = b.load(self._at(kptr, b.add(src, b.mul(j, c64(sj)))), typ=self.T)
                    b.store(x, self._at(self.kt, b.add(row, j)))
        if jv and pv:
            with for_range(b, 0, jv, name="ktbj") as jb:
                with for_range(b, 0, pv, name="ktbp") as pb:
                    j0, p0 = b.mul(jb, c64(W)), b.mul(pb, c64(W))
                    rows = [b.load(self._at(kptr, offset(b, k.k, bvars + [p0, b.add(j0, c64(i))])), typ=self.vt,
                                   align=self.esize) for i in range(W)]
                    for c, col in enumerate(transpose(b, rows)):
                        at = self._at(self.kt, b.add(b.mul(b.add(p0, c64(c)), c64(self.npad)), j0))
                        b.store(col, at, align=self.esize)
        scalar_copy(0, pv * W, jv * W, k.n, "ktr")   # keys past the last whole block
        scalar_copy(pv * W, k.d, 0, k.n, "ktc")      # q/k columns past it (all of them without blocks)
        zero = convert.constant(0, k.acc_dtype)
        with for_range(b, 0, k.d, name="ktz") as p:
            row = b.mul(p, c64(self.npad))
            for j in range(k.n, self.npad):
                b.store(zero, self._at(self.kt, b.add(row, c64(j))))

    def _tiles(self, name: str, length: int, total: int, full: int, vectors, scalar, block, row_len: int) -> None:
        """Register tiles: ``block[r, vector column col + c] = sum_p scalar(r, p) * vectors(p, col, nvec)[c]``
        for the RT_ROWS rows (``block`` has rows of ``row_len``), over ``total`` vectors of
        columns and ``length`` steps: runs of NV vectors in a loop over the first ``full``
        vectors (whole ones), then the rest at constant columns (``col`` a Constant there,
        where a lane mask can apply)."""
        b, R, vt = self.b, RT_ROWS, self.vt
        zero = ir.Constant(vt, [convert.constant(0, self.k.acc_dtype)] * self.W)

        def step(p, col, nvec, accs):
            vs = vectors(p, col, nvec)
            new = []
            for r in range(R):
                x = splat(b, scalar(r, p), vt)
                new += [call(b, "llvm.fma", x, vs[c], accs[r * nvec + c]) for c in range(nvec)]
            return new

        def tile(col, nvec):
            accs = [zero] * (R * nvec)
            if length > 0:
                accs = carried_loop(b, name, length, 1, accs, lambda p, a: step(p, col, nvec, a))
            for r in range(R):
                for c in range(nvec):
                    at = self._at(block, b.add(c64(r * row_len), b.mul(b.add(col, c64(c)), c64(self.W))))
                    b.store(accs[r * nvec + c], at, align=self.esize)
        runs = full // NV
        if runs:
            with for_range(b, 0, runs, name=f"{name}.cb") as cb:
                tile(b.mul(cb, c64(NV)), NV)
        if total > runs * NV:
            tile(c64(runs * NV), total - runs * NV)

    def _scores(self, bvars, i0) -> None:
        """scores[r, :] = Q[b, i0 + r, :] @ K^T (unscaled dots) for the RT_ROWS rows."""
        b, k, W = self.b, self.k, self.W
        qptr = self.tab[k.q.buf][0]
        qbases = [offset(b, k.q, bvars + [smin(b, b.add(i0, c64(r)), c64(k.m - 1)), c64(0)])
                  for r in range(RT_ROWS)]

        def kt_row(p, col, nvec):
            row = b.mul(p, c64(self.npad))
            return [b.load(self._at(self.kt, b.add(row, b.mul(b.add(col, c64(c)), c64(W)))), typ=self.vt,
                           align=self.esize) for c in range(nvec)]

        def q_elem(r, p):
            return b.load(self._at(qptr, b.add(qbases[r], b.mul(p, c64(k.q.strides[-1])))), typ=self.T)
        self._tiles("qk", k.d, self.npad // W, self.npad // W, kt_row, q_elem, self.s, self.npad)

    def _softmax(self, bvars, i0, nrows) -> None:
        """Row r of the scores becomes exp(score - max) (unnormalized); rinv[r] = 1 / its sum.

        The score and exp loops are unit-stride loops LLVM vectorizes; the row maxima and
        sums are explicit vector reductions over all RT_ROWS rows at once, so the rows'
        horizontal reductions overlap instead of each waiting on the last (a per-row
        reduction loop spent most of the kernel's time in that latency). The maximum is ``vmaxps``'s: a NaN may or may not
        win it, but then exp(NaN - max) makes the row's sum NaN and the whole row NaN, as
        PyTorch's softmax makes it."""
        b, k, T = self.b, self.k, self.T
        dt = k.acc_dtype
        with for_range(b, 0, nrows, name="sr") as r:
            i, row = b.add(i0, r), b.mul(r, c64(self.npad))
            with for_range(b, 0, k.n, name="sj") as j:
                at = self._at(self.s, b.add(row, j))
                em = ExprEmitter(b, self.tab, bvars + [i, j], {0: b.load(at, typ=T)})
                b.store(em.emit_as(k.score, dt), at)
        top = self._row_reduce(lambda x, y: b.select(b.fcmp_ordered(">", x, y), x, y), float("-inf"))
        for r, m in enumerate(top):
            b.store(m, self._at(self.rmax, c64(r)))
        with for_range(b, 0, nrows, name="sx") as r:
            row, m = b.mul(r, c64(self.npad)), b.load(self._at(self.rmax, r), typ=T)
            with for_range(b, 0, k.n, name="sxj") as j:
                at = self._at(self.s, b.add(row, j))
                b.store(math_call(b, "exp", b.fsub(b.load(at, typ=T), m)), at)
        sums = self._row_reduce(lambda x, y: b.fadd(x, y), 0.0)
        one = convert.constant(1, dt)
        for r, total in enumerate(sums):  # no keys: P @ V is 0, as an empty sum
            b.store(b.fdiv(one, total) if k.n else one, self._at(self.rinv, c64(r)))

    def _row_reduce(self, op, identity: float) -> list[ir.Value]:
        """``op`` folded over columns 0 .. n of each of the RT_ROWS score rows (lanes past n
        read as ``identity``): one vector accumulator per row, then a halving tree."""
        b, k, W, vt, R = self.b, self.k, self.W, self.vt, RT_ROWS
        ident = ir.Constant(vt, [ir.Constant(self.T, identity)] * W)
        full = k.n // W

        def load(r, c):
            return b.load(self._at(self.s, b.add(c64(r * self.npad), b.mul(c, c64(W)))), typ=vt, align=64)
        accs = [ident] * R
        if full:
            accs = carried_loop(b, "rr", full, 1, accs, lambda c, a: [op(a[r], load(r, c)) for r in range(R)])
        if k.n % W:
            keep = ir.Constant(ir.VectorType(ir.IntType(1), W), [int(lane < k.n % W) for lane in range(W)])
            accs = [op(a, b.select(keep, load(r, c64(full)), ident)) for r, a in enumerate(accs)]
        out = []
        for v in accs:
            width = W
            while width > 1:
                width //= 2
                lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(width))))
                hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                                        list(range(width, 2 * width))))
                v = op(lo, hi)
            out.append(b.extract_element(v, ir.Constant(ir.IntType(32), 0)))
        return out

    def _v_vector(self, vptr, base, col_elem, lanes: int) -> ir.Value:
        """V[b, j, col_elem : col_elem + W] with ``lanes`` valid lanes (the rest 0)."""
        b, k, W = self.b, self.k, self.W
        sve = k.v.strides[-1]
        if sve == 1:
            at = self._at(vptr, b.add(base, col_elem))
            return (b.load(at, typ=self.vt, align=self.esize) if lanes == W else
                    masked_load(b, at, self.vt, lanes, self.esize))
        vec = ir.Constant(self.vt, [convert.constant(0, k.acc_dtype)] * W)
        for lane in range(lanes):
            x = b.load(self._at(vptr, b.add(base, b.mul(b.add(col_elem, c64(lane)), c64(sve)))), typ=self.T)
            vec = b.insert_element(vec, x, c64(lane))
        return vec

    def _weighted_sum(self, bvars) -> None:
        """otile[r, :] = sum_j P[r, j] V[b, j, :] for the RT_ROWS rows (P unnormalized)."""
        b, k, W = self.b, self.k, self.W
        vptr = self.tab[k.v.buf][0]
        vbase = offset(b, k.v, bvars + [c64(0), c64(0)])

        def v_row(j, col, nvec):
            base = b.add(vbase, b.mul(j, c64(k.v.strides[-2])))
            lanes = [max(0, min(W, k.e - (col.constant + c) * W)) if isinstance(col, ir.Constant) else W
                     for c in range(nvec)]
            return [self._v_vector(vptr, base, b.mul(b.add(col, c64(c)), c64(W)), lanes[c]) for c in range(nvec)]

        def p_elem(r, j):
            return b.load(self._at(self.s, b.add(c64(r * self.npad), j)), typ=self.T)
        self._tiles("pv", k.n, self.epad // W, k.e // W, v_row, p_elem, self.o, self.epad)

    def _epilogue(self, bvars, i0, nrows) -> None:
        """The stores of rows i0 .. i0 + nrows: Ref(0) = otile[r, c] / row sum."""
        b, k, T = self.b, self.k, self.T
        with for_range(b, 0, nrows, name="er") as r:
            i = b.add(i0, r)
            inv = b.load(self._at(self.rinv, r), typ=T)
            with for_range(b, 0, k.e, name="ec") as c:
                acc = b.fmul(b.load(self._at(self.o, b.add(b.mul(r, c64(self.epad)), c)), typ=T), inv)
                em = ExprEmitter(b, self.tab, bvars + [i, c], {0: acc})
                for st in k.stores:
                    emit_store(em, self.out_ptrs, k.outputs, st)
