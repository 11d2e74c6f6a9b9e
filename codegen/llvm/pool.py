"""PoolKernel -> LLVM: 2-d max / average pooling with PyTorch's window rules.

max: NaN-propagating (``llvm.maximum``), padding never wins. avg: window clipped
to the padded input for the count when ``count_include_pad``, else to the input;
a nonzero ``divisor`` (negative too, as in PyTorch) overrides the count. Loop vars
of the epilogue are (n, c, oh, ow); ``Ref(0)`` is the pooled value in ``acc_dtype``.
"""
from __future__ import annotations

import contextlib
import math

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.kernelfn import buffer_table, define_kernel, emit_store, load_access
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, register_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import PoolKernel


#: A window tap (a load, bounds checks, a NaN-propagating max) against one multiply-add, for the
#: decision to split across threads: pools whose short rows the vector loop cannot fill (LeNet's
#: first pool) are worth two threads although their tap count alone would keep them on one.
POOL_TAP_WEIGHT = 4


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _inside(first: int, stride: int, count: int, size: int) -> bool:
    """Whether ``first + o*stride`` lies in [0, size) for every o < count: the tap of every
    output is inside the input, so its bounds check is left out (no branch in the window loop)."""
    return first >= 0 and first + (count - 1) * stride < size


def emit_pool_kernel(module: ir.Module, name: str, k: PoolKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function for pooling ``k`` in ``module``."""
    if k.op not in ("max", "avg"):
        raise ValueError(f"pool kernel {k.name}: unknown op {k.op!r}")
    dt = k.acc_dtype
    T = register_type(dt)
    nin = len(k.inputs)
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = k.kernel, k.stride, k.padding, k.dilation

    def body(b: ir.IRBuilder, ptrs, begin, end) -> None:
        tab = buffer_table(ptrs[:nin], k.inputs)
        acc = entry_alloca(b, T, "acc")
        with for_range(b, begin, end, name="nc") as nc:
            n, c = b.udiv(nc, _c(k.c)), b.urem(nc, _c(k.c))
            with for_range(b, 0, k.oh, name="oh") as oh:
                with for_range(b, 0, k.ow, name="ow") as ow:
                    h0 = b.sub(b.mul(oh, _c(SH)), _c(PH))
                    w0 = b.sub(b.mul(ow, _c(SW)), _c(PW))
                    if k.op == "max":
                        init = ir.Constant(T, -math.inf) if dt.is_float else \
                            ir.Constant(T, -(1 << (T.width - 1)))
                    else:
                        init = convert.constant(0, dt)
                    b.store(init, acc)
                    for kh in range(KH):
                        ih = b.add(h0, _c(kh * DH))
                        okh = None if _inside(kh * DH - PH, SH, k.oh, k.h) else \
                            b.and_(b.icmp_signed(">=", ih, _c(0)), b.icmp_signed("<", ih, _c(k.h)))
                        for kw in range(KW):
                            iw = b.add(w0, _c(kw * DW))
                            okw = None if _inside(kw * DW - PW, SW, k.ow, k.w) else \
                                b.and_(b.icmp_signed(">=", iw, _c(0)), b.icmp_signed("<", iw, _c(k.w)))
                            ok = okh if okw is None else okw if okh is None else b.and_(okh, okw)
                            with contextlib.nullcontext() if ok is None else b.if_then(ok):
                                v = load_access(b, tab, k.x, [n, c, ih, iw], dt)
                                cur = b.load(acc, typ=T)
                                if k.op == "avg":
                                    nxt = b.fadd(cur, v) if dt.is_float else b.add(cur, v)
                                elif dt.is_float:
                                    nxt = call(b, "llvm.maximum", cur, v)
                                else:
                                    nxt = b.select(b.icmp_signed(">", v, cur), v, cur)
                                b.store(nxt, acc)
                    val = b.load(acc, typ=T)
                    if k.op == "avg":
                        val = b.fdiv(val, _count(b, h0, w0, T)) if dt.is_float else \
                            b.sdiv(val, b.trunc(_count(b, h0, w0, None), T) if T.width < 64 else _count(b, h0, w0, None))
                    em = ExprEmitter(b, tab, [n, c, oh, ow], {0: val})
                    for st in k.stores:
                        emit_store(em, ptrs[nin:], k.outputs, st)

    def _count(b, h0, w0, T_):
        if k.divisor != 0:
            cnt = _c(k.divisor)
        else:
            hend = _smin(b, b.add(h0, _c(KH)), _c(k.h + PH))
            wend = _smin(b, b.add(w0, _c(KW)), _c(k.w + PW))
            if k.count_include_pad:
                cnt = b.mul(b.sub(hend, h0), b.sub(wend, w0))
            else:
                hs, ws = _smax(b, h0, _c(0)), _smax(b, w0, _c(0))
                he, we = _smin(b, hend, _c(k.h)), _smin(b, wend, _c(k.w))
                cnt = b.mul(b.sub(he, hs), b.sub(we, ws))
            cnt = _smax(b, cnt, _c(1))
        return b.sitofp(cnt, T_) if T_ is not None else cnt

    if dt is DType.bool:
        raise TypeError(f"pool kernel {k.name}: bool pooling is not supported")
    total = k.n * k.c if k.oh * k.ow > 0 else 0
    work = total * k.oh * k.ow * KH * KW * POOL_TAP_WEIGHT
    return define_kernel(module, name, nin + len(k.outputs), noalias, total, work, threads, body)
