"""ConvKernel -> LLVM: stride-1 float convolution as a register-blocked implicit GEMM.

Per call:

1. The input is copied once, converted to the accumulator type, into a zero-padded
   scratch ``xp[n, c, Hp, Wp]`` (``Hp = H + 2*ph``, ``Wp = W + 2*pw``; any input
   layout, e.g. channels-last, is read through its strides here). Rows are split
   across threads.
2. The weights of each group are packed into MR-row panels (MR output channels,
   zero-padded): element ``(k, r)`` of panel ``cp`` at ``(cp*K + k)*MR + r`` with
   ``k = (ci*KH + kh)*KW + kw``.
3. GEMM with M = output channels, N = output positions, K = Cin/groups*KH*KW. An
   output position is a flat offset ``q = oh*Wp + ow`` into the padded plane, so the
   input of tap ``(kh, kw)`` for positions ``q .. q+NR`` is the contiguous run
   ``xp[ci, q + kh*dh*Wp + kw*dw ...]``: the micro-kernel loads it as two SIMD
   vectors straight from the padded copy (no im2col buffer, no patch packing)
   and broadcasts MR packed weights, keeping MR x NR accumulators in registers
   (``fma``). Positions with ``ow >= OW`` (the ``Wp - OW`` columns a padded row has
   beyond the output) are computed and dropped: ``(KW-1)*dw/Wp`` of the work.
4. The epilogue (bias, activation, residual, any layout of the outputs) runs on
   each valid element of the MR x NR tile.

Work items (image, group, tile of NR positions) are split across threads; each
item runs every output-channel panel of its group over its tile, so the tile's
input rows stay in L1 while the packed weights stream from L2.

The micro-kernel (every tap unrolled, sizes and strides runtime arguments) is
:func:`~.gemm_shared.cmicro`, one per kernel size and column dilation, which the
kernel only declares: the process-wide :mod:`.runtime.library` compiles it once, so each
kernel's own code is its loop nest, padding copy, packing and epilogue (halving
LeNet's compile; the micro-kernel inlined into each kernel was most of its O3 time).

The padding and packing loops are marked not to be unrolled (packing: nor
vectorized): fully unrolled copies of them made LLVM's O3 pipeline take several
times longer on LeNet's convolutions for no measurable speed-up.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert, gemm_shared
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.runtime.jit import host_vector_bits
from minicomp.codegen.llvm.kernelfn import buffer_table, emit_store, kernel_function, load_access
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, make_body, parallel_for
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, PTR, VOID, register_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import ConvKernel

MR = gemm_shared.MR
#: Taps unrolled in the micro-kernel above this count would bloat the code: use the direct kernel.
MAX_TAPS = gemm_shared.MAX_TAPS


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def applies(k: ConvKernel) -> bool:
    """Whether :func:`emit` handles ``k``: float accumulation, stride 1, at most MAX_TAPS taps,
    at least half an MR panel of output channels per group, a non-empty output."""
    return (k.acc_dtype in (DType.f32, DType.f64) and tuple(k.stride) == (1, 1) and k.groups > 0
            and k.cin % k.groups == 0 and k.cout % k.groups == 0 and k.cout // k.groups >= MR // 2
            and k.kh * k.kw <= MAX_TAPS and k.n * k.oh * k.ow > 0 and k.cin > 0)


class _Plan:
    """Sizes of one convolution's implicit GEMM."""

    def __init__(self, k: ConvKernel) -> None:
        self.k = k
        self.dt = k.acc_dtype
        self.T = register_type(self.dt)
        self.W = max(2, host_vector_bits() // (8 * self.dt.itemsize))
        self.NR = 2 * self.W
        self.cin_g, self.cout_g = k.cin // k.groups, k.cout // k.groups
        self.hp, self.wp = k.h + 2 * k.padding[0], k.w + 2 * k.padding[1]
        self.plane = self.hp * self.wp
        self.taps = [kh * k.dilation[0] * self.wp + kw * k.dilation[1] for kh in range(k.kh) for kw in range(k.kw)]
        self.K = self.cin_g * len(self.taps)
        self.npan = -(-self.cout_g // MR)
        self.ntiles = -(-(k.oh * self.wp) // self.NR)
        self.xp_elems = k.n * k.cin * self.plane + self.NR + self.wp  # slack read by the last tile
        self.wp_elems = k.groups * self.npan * self.K * MR
        self.items = k.n * k.groups * self.ntiles




def _pad_body(p: _Plan, nin: int):
    """Rows [begin, end) of (n, c, padded row) of ``xp``; ptrs = inputs + outputs + [xp, wpk]."""
    k, T = p.k, p.T
    ph, pw = k.padding

    def emit(b, ptrs, begin, end):
        tab = buffer_table(ptrs[:nin], k.inputs)
        xp = ptrs[-2]
        zero = convert.constant(0, p.dt)
        with for_range(b, begin, end, name="row") as row:
            i = b.urem(row, _c(p.hp))
            nc = b.udiv(row, _c(p.hp))
            n, c = b.udiv(nc, _c(k.cin)), b.urem(nc, _c(k.cin))
            dst = b.mul(row, _c(p.wp))
            ih = b.sub(i, _c(ph))
            inside = b.and_(b.icmp_signed(">=", ih, _c(0)), b.icmp_signed("<", ih, _c(k.h)))
            with b.if_else(inside) as (then, other):
                with then:
                    for lo, hi in ((0, pw), (pw + k.w, p.wp)):
                        with for_range(b, lo, hi, name="zp", unroll=False) as j:
                            b.store(zero, b.gep(xp, [b.add(dst, j)], source_etype=T))
                    with for_range(b, 0, k.w, name="cp", unroll=False) as iw:
                        v = load_access(b, tab, k.x, [n, c, ih, iw], p.dt)
                        b.store(v, b.gep(xp, [b.add(dst, b.add(iw, _c(pw)))], source_etype=T))
                with other:
                    with for_range(b, 0, p.wp, name="zr", unroll=False) as j:
                        b.store(zero, b.gep(xp, [b.add(dst, j)], source_etype=T))
        # the slack after the last plane is read (into dropped positions) by the last tiles
        with b.if_then(b.icmp_signed("==", end, _c(k.n * k.cin * p.hp))):
            with for_range(b, k.n * k.cin * p.plane, p.xp_elems, name="zs", unroll=False) as j:
                b.store(zero, b.gep(xp, [j], source_etype=T))

    return emit


def _pack_weights(b, p: _Plan, tab, wpk) -> None:
    """``wpk`` = every group's weights as MR-row panels (see the module doc)."""
    k, T = p.k, p.T
    zero = convert.constant(0, p.dt)
    with for_range(b, 0, k.groups * p.npan * MR, name="wrow", unroll=False, vectorize=False) as gpr:
        gp, r = b.udiv(gpr, _c(MR)), b.urem(gpr, _c(MR))
        g, cp = b.udiv(gp, _c(p.npan)), b.urem(gp, _c(p.npan))
        col = b.add(b.mul(cp, _c(MR)), r)
        ok = b.icmp_signed("<", col, _c(p.cout_g))
        co = b.add(b.mul(g, _c(p.cout_g)), b.select(ok, col, _c(0)))  # rows past cout_g read row 0
        base = b.add(b.mul(gp, _c(p.K * MR)), r)
        with for_range(b, 0, p.cin_g, name="wci", unroll=False, vectorize=False) as ci:
            with for_range(b, 0, k.kh, name="wkh", unroll=False, vectorize=False) as kh:
                with for_range(b, 0, k.kw, name="wkw", unroll=False, vectorize=False) as kw:
                    kidx = b.add(b.mul(b.add(b.mul(ci, _c(k.kh)), kh), _c(k.kw)), kw)
                    v = load_access(b, tab, k.weight, [co, ci, kh, kw], p.dt)
                    b.store(b.select(ok, v, zero),
                            b.gep(wpk, [b.add(base, b.mul(kidx, _c(MR)))], source_etype=T))


def _compute_body(p: _Plan, nin: int, micro: ir.Function):
    """Items [begin, end) of (n, group, tile); ptrs = inputs + outputs + [xp, wpk]."""
    k, T, NR = p.k, p.T, p.NR

    def emit(b, ptrs, begin, end):
        tab = buffer_table(ptrs[:nin], k.inputs)
        out_ptrs = ptrs[nin:-2]
        xp, wpk = ptrs[-2:]
        tile = entry_alloca(b, ir.ArrayType(T, MR * NR), "tile")
        with for_range(b, begin, end, name="item") as item:
            t = b.urem(item, _c(p.ntiles))
            ng = b.udiv(item, _c(p.ntiles))
            n, g = b.udiv(ng, _c(k.groups)), b.urem(ng, _c(k.groups))
            q0 = b.mul(t, _c(NR))
            xoff = b.add(b.mul(b.add(b.mul(n, _c(k.cin)), b.mul(g, _c(p.cin_g))), _c(p.plane)), q0)
            xb = b.gep(xp, [xoff], source_etype=T)
            with for_range(b, 0, p.npan, name="cp") as cp:
                apan = b.gep(wpk, [b.mul(b.add(b.mul(g, _c(p.npan)), cp), _c(p.K * MR))], source_etype=T)
                b.call(micro, [apan, xb, tile, _c(p.cin_g), _c(p.plane), _c(k.dilation[0] * p.wp)])
                col0 = b.mul(cp, _c(MR))
                nrows = b.select(b.icmp_signed("<", _c(p.cout_g), b.add(col0, _c(MR))),
                                 b.sub(_c(p.cout_g), col0), _c(MR))
                co0 = b.add(b.mul(g, _c(p.cout_g)), col0)
                with for_range(b, 0, NR, name="ec") as c:
                    q = b.add(q0, c)
                    oh, ow = b.udiv(q, _c(p.wp)), b.urem(q, _c(p.wp))
                    valid = b.and_(b.icmp_signed("<", ow, _c(k.ow)), b.icmp_signed("<", oh, _c(k.oh)))
                    with b.if_then(valid):
                        with for_range(b, 0, nrows, name="er") as r:
                            acc = b.load(b.gep(tile, [b.add(b.mul(r, _c(NR)), c)], source_etype=T), typ=T)
                            em = ExprEmitter(b, tab, [n, b.add(co0, r), oh, ow], {0: acc})
                            for st in k.stores:
                                emit_store(em, out_ptrs, k.outputs, st)

    return emit


def emit(module: ir.Module, name: str, k: ConvKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function for convolution ``k`` (:func:`applies` must hold)."""
    p = _Plan(k)
    nin, nio = len(k.inputs), len(k.inputs) + len(k.outputs)
    fn = kernel_function(module, name, nio, noalias)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    work = p.items * p.npan * MR * p.NR * p.K
    th = threads if work >= PARALLEL_MIN_WORK * 2 else 1
    alloc = declare(module, "aligned_alloc", PTR, [I64, I64])
    free = declare(module, "free", VOID, [PTR])
    esize = p.dt.itemsize
    xp = b.call(alloc, [_c(64), _c(-(-p.xp_elems * esize // 64) * 64)])
    wpk = b.call(alloc, [_c(64), _c(-(-p.wp_elems * esize // 64) * 64)])
    null = ir.Constant(PTR, None)
    ok = b.and_(b.icmp_unsigned("!=", xp, null), b.icmp_unsigned("!=", wpk, null))
    with b.if_then(ok):
        args = list(fn.args) + [xp, wpk]
        rows = k.n * k.cin * p.hp
        pad = make_body(module, f"{name}.pad", nio + 2, noalias, _pad_body(p, nin))
        parallel_for(b, pad, args, rows, th if rows * p.wp >= PARALLEL_MIN_WORK // 4 else 1)
        _pack_weights(b, p, buffer_table(list(fn.args[:nin]), k.inputs), wpk)
        micro = gemm_shared.cmicro(module, p.dt, p.W, k.kh, k.kw, k.dilation[1])
        comp = make_body(module, f"{name}.gemm", nio + 2, noalias, _compute_body(p, nin, micro))
        parallel_for(b, comp, args, p.items, th)
    b.call(free, [xp])
    b.call(free, [wpk])
    b.ret_void()
    return fn
