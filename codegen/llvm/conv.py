"""ConvKernel -> LLVM, the plain path: direct 2-d convolution (any stride, dilation, groups, dtype).

The reference for the implicit GEMM of :mod:`.conv_gemm` (see :mod:`.dispatch`).

For each (n, co) (the parallel range) and output row oh, a stack row
``acc[OW]`` accumulates ``w[co, ci, kh, kw] * x[n, g*cin_g + ci, ih, iw]``. The
valid ``ow`` range of each ``kw`` tap is computed at compile time (a constant
table read by a runtime loop over the taps), so the innermost loop over ``ow``
has no bounds checks (padding contributes zeros) and LLVM vectorizes it. The epilogue runs per output element with ``Ref(0)`` = acc.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.kernelfn import buffer_table, define_kernel, emit_store, load_access
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, register_type
from minicomp.ir.kernel import ConvKernel


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _ow_range(k: ConvKernel, kw: int) -> tuple[int, int]:
    """Output columns whose input column ``ow*s - p + kw*d`` lies inside [0, W)."""
    s, p, d = k.stride[1], k.padding[1], k.dilation[1]
    shift = kw * d - p
    lo = max(0, -(shift // s) if shift < 0 else 0)
    while lo < k.ow and lo * s + shift < 0:
        lo += 1
    hi = k.ow
    while hi > lo and (hi - 1) * s + shift >= k.w:
        hi -= 1
    return lo, hi


def emit_conv_kernel(module: ir.Module, name: str, k: ConvKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function for convolution ``k`` in ``module`` (the direct loop nest above)."""
    if k.groups <= 0 or k.cin % k.groups or k.cout % k.groups:
        raise ValueError(f"conv kernel {k.name}: channels {k.cin}->{k.cout} not divisible by groups {k.groups}")
    dt = k.acc_dtype
    T = register_type(dt)
    cin_g, cout_g = k.cin // k.groups, k.cout // k.groups
    nin = len(k.inputs)
    ranges = [_ow_range(k, kw) for kw in range(k.kw)]
    is_float = dt.is_float

    # Valid [lo, hi) output columns per kw tap: one runtime loop over the taps (not
    # kh*kw unrolled copies of the vectorized ow loop) keeps the IR, and compile time, small.
    flat = [v for r in ranges for v in (r if r[0] < r[1] else (0, 0))]
    table_ty = ir.ArrayType(I64, max(len(flat), 1))
    table = ir.GlobalVariable(module, table_ty, name=f"{name}.owrange")
    table.linkage = "internal"
    table.global_constant = True
    table.initializer = ir.Constant(table_ty, flat or [0])

    def body(b: ir.IRBuilder, ptrs, begin, end) -> None:
        tab = buffer_table(ptrs[:nin], k.inputs)
        out_ptrs = ptrs[nin:]
        row = entry_alloca(b, ir.ArrayType(T, max(k.ow, 1)), "row")
        with for_range(b, begin, end, name="nco") as nco:
            n, co = b.udiv(nco, _c(k.cout)), b.urem(nco, _c(k.cout))
            cbase = b.mul(b.udiv(co, _c(cout_g)), _c(cin_g))
            with for_range(b, 0, k.oh, name="oh") as oh:
                with for_range(b, 0, k.ow, name="z") as ow:
                    b.store(convert.constant(0, dt), b.gep(row, [ow], source_etype=T))
                with for_range(b, 0, cin_g, name="ci") as ci:
                    with for_range(b, 0, k.kh, name="kh") as kh:
                        ih = b.add(b.mul(oh, _c(k.stride[0])),
                                   b.sub(b.mul(kh, _c(k.dilation[0])), _c(k.padding[0])))
                        inside = b.and_(b.icmp_signed(">=", ih, _c(0)), b.icmp_signed("<", ih, _c(k.h)))
                        with b.if_then(inside):
                            with for_range(b, 0, k.kw, name="kw") as kw:
                                lo = b.load(b.gep(table, [b.mul(kw, _c(2))], source_etype=I64), typ=I64)
                                hi = b.load(b.gep(table, [b.add(b.mul(kw, _c(2)), _c(1))], source_etype=I64),
                                            typ=I64)
                                shift = b.sub(b.mul(kw, _c(k.dilation[1])), _c(k.padding[1]))
                                wv = load_access(b, tab, k.weight, [co, ci, kh, kw], dt)
                                with for_range(b, lo, hi, name="ow") as ow:
                                    iw = b.add(b.mul(ow, _c(k.stride[1])), shift)
                                    xv = load_access(b, tab, k.x, [n, b.add(cbase, ci), ih, iw], dt)
                                    slot = b.gep(row, [ow], source_etype=T)
                                    cur = b.load(slot, typ=T)
                                    nxt = b.fadd(cur, b.fmul(wv, xv), flags=("contract",)) if is_float \
                                        else b.add(cur, b.mul(wv, xv))
                                    b.store(nxt, slot)
                with for_range(b, 0, k.ow, name="e") as ow:
                    acc = b.load(b.gep(row, [ow], source_etype=T), typ=T)
                    em = ExprEmitter(b, tab, [n, co, oh, ow], {0: acc})
                    for st in k.stores:
                        emit_store(em, out_ptrs, k.outputs, st)

    total = k.n * k.cout if k.oh * k.ow > 0 else 0
    work = total * k.oh * k.ow * cin_g * k.kh * k.kw
    th = threads if work >= PARALLEL_MIN_WORK * 4 else 1
    return define_kernel(module, name, nin + len(k.outputs), noalias, total, PARALLEL_MIN_WORK if th > 1 else 0,
                         th, body)
