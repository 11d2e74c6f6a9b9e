"""AttentionKernel -> LLVM, the plain path: one query row at a time, straight from the definition.

For each (batch, query row i) -- the parallel items -- and a stack row ``s[n]``:

1. ``s[j] = score(sum_p Q[i, p] * K^T[p, j])`` (the kernel's pointwise expression of the dot);
2. ``s[j] = exp(s[j] - max_j s)`` and their sum (a NaN score makes the sum, so the row, NaN;
   a row of -inf scores gives NaN, as PyTorch's softmax does);
3. ``O[i, c] = (sum_j s[j] * V[j, c]) / sum``, then the epilogue on each ``O[i, c]``.

The reference the blocked kernel of :mod:`.attention` is tested against (see :mod:`.dispatch`).
"""
from __future__ import annotations

from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.kernelfn import buffer_table, define_kernel, emit_store
from minicomp.codegen.llvm.mathlib import math_call
from minicomp.codegen.llvm.matmul_common import batch_vars, c64, load_acc
from minicomp.codegen.llvm.types import register_type
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.ir.kernel import AttentionKernel


def emit_plain_attention(module: ir.Module, name: str, k: AttentionKernel, noalias: bool,
                         threads: int) -> ir.Function:
    """Define ``void name(ptr inputs..., ptr outputs...)`` computing attention kernel ``k`` row by row."""
    dt, T = k.acc_dtype, register_type(k.acc_dtype)
    if not dt.is_float:
        raise TypeError(f"attention kernel {k.name}: accumulates {dt.name}, not a float")
    nin = len(k.inputs)

    def total(b, acc):
        return b.load(acc, typ=T)

    def body(b: ir.IRBuilder, ptrs, begin, end) -> None:
        tab = buffer_table(ptrs[:nin], k.inputs)
        s = entry_alloca(b, ir.ArrayType(T, max(k.n, 1)), "s")
        acc = entry_alloca(b, T, "acc")
        top = entry_alloca(b, T, "max")
        with for_range(b, begin, end, name="row") as row:
            bvars = batch_vars(b, b.udiv(row, c64(k.m)), k.batch) if k.batch else []
            i = b.urem(row, c64(k.m))
            b.store(convert.constant(float("-inf"), dt), top)
            with for_range(b, 0, k.n, name="j") as j:
                b.store(convert.constant(0, dt), acc)
                with for_range(b, 0, k.d, name="p") as p:
                    x, y = load_acc(b, tab, k.q, bvars + [i, p], dt), load_acc(b, tab, k.k, bvars + [p, j], dt)
                    b.store(b.fadd(total(b, acc), b.fmul(x, y)), acc)
                score = ExprEmitter(b, tab, bvars + [i, j], {0: total(b, acc)}).emit_as(k.score, dt)
                b.store(score, b.gep(s, [j], source_etype=T))
                best = total(b, top)
                b.store(b.select(b.fcmp_ordered(">", score, best), score, best), top)
            b.store(convert.constant(0, dt), acc)
            with for_range(b, 0, k.n, name="x") as j:
                at = b.gep(s, [j], source_etype=T)
                e = math_call(b, "exp", b.fsub(b.load(at, typ=T), total(b, top)))
                b.store(e, at)
                b.store(b.fadd(total(b, acc), e), acc)
            denom = total(b, acc)
            with for_range(b, 0, k.e, name="c") as c:
                b.store(convert.constant(0, dt), top)  # reused: the weighted sum of column c
                with for_range(b, 0, k.n, name="jv") as j:
                    pj = b.load(b.gep(s, [j], source_etype=T), typ=T)
                    b.store(b.fadd(total(b, top), b.fmul(pj, load_acc(b, tab, k.v, bvars + [j, c], dt))), top)
                out = b.fdiv(total(b, top), denom) if k.n else total(b, top)
                em = ExprEmitter(b, tab, bvars + [i, c], {0: out})
                for st in k.stores:
                    emit_store(em, ptrs[nin:], k.outputs, st)

    rows = prod(k.batch) * k.m if k.e else 0
    return define_kernel(module, name, nin + len(k.outputs), noalias, rows, rows * k.n * (k.d + k.e), threads, body)
