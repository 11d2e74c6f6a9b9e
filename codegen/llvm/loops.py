"""LoopKernel -> LLVM: pointwise, reduction and row-wise kernels.

Loop nest: ``for outer point: for stage: (reduce over inner | store)``. The first
outer dim with extent >= 2 is the *split* dim (earlier dims have extent 1) and is
the range a body runs over, so large kernels split it across threads.
Accumulators live in entry-block allocas (promoted to registers by LLVM); the
floating ``sum`` add carries the ``reassoc`` flag so LLVM vectorizes it with
partial sums.
"""
from __future__ import annotations

import math
from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.kernelfn import buffer_table, define_kernel, emit_store
from minicomp.codegen.llvm.scalar import ExprEmitter
from minicomp.codegen.llvm.types import I64, register_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import LoopKernel, Reduce, Store

_REDUCE_OPS = ("sum", "prod", "max", "min", "argmax", "argmin")


def _init(op: str, dtype: DType) -> ir.Constant:
    rt = register_type(dtype)
    if op == "sum":
        return convert.constant(0, dtype)
    if op == "prod":
        return convert.constant(1, dtype)
    if dtype is DType.bool:
        return ir.Constant(rt, int(op in ("min", "argmin")))
    if dtype.is_float:
        return ir.Constant(rt, -math.inf if op in ("max", "argmax") else math.inf)
    bits = rt.width
    return ir.Constant(rt, -(1 << (bits - 1)) if op in ("max", "argmax") else (1 << (bits - 1)) - 1)


def _fold(b: ir.IRBuilder, op: str, dtype: DType, acc: ir.Value, v: ir.Value) -> ir.Value:
    if dtype.is_float:
        if op == "sum":
            return b.fadd(acc, v, flags=("reassoc",))
        if op == "prod":
            return b.fmul(acc, v, flags=("reassoc",))
        return call(b, "llvm.maximum" if op == "max" else "llvm.minimum", acc, v)
    if dtype is DType.bool:
        return {"sum": b.or_, "prod": b.and_, "max": b.or_, "min": b.and_}[op](acc, v)
    if op == "sum":
        return b.add(acc, v)
    if op == "prod":
        return b.mul(acc, v)
    pred = ">" if op == "max" else "<"
    return b.select(b.icmp_signed(pred, acc, v), acc, v)


def _better(b: ir.IRBuilder, op: str, dtype: DType, v: ir.Value, best: ir.Value) -> ir.Value:
    """True when ``v`` replaces ``best`` (strictly more extreme, or the first NaN)."""
    if dtype.is_float:
        pred = ">" if op == "argmax" else "<"
        first_nan = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best))
        return b.or_(b.fcmp_ordered(pred, v, best), first_nan)
    pred = ">" if op == "argmax" else "<"
    return b.icmp_unsigned(pred, v, best) if dtype is DType.bool else b.icmp_signed(pred, v, best)


class _LoopEmitter:
    def __init__(self, k: LoopKernel) -> None:
        self.k = k
        self.split = next((d for d, n in enumerate(k.outer) if n >= 2), 0)
        for st in k.stages:
            if isinstance(st, Reduce) and st.op not in _REDUCE_OPS:
                raise ValueError(f"kernel {k.name}: unknown reduction {st.op!r}")

    def __call__(self, b: ir.IRBuilder, ptrs: list[ir.Value], begin: ir.Value, end: ir.Value) -> None:
        k = self.k
        nin = len(k.inputs)
        self.inputs = buffer_table(ptrs[:nin], k.inputs)
        self.out_ptrs = ptrs[nin:]
        if not k.outer:
            self._point(b, [])
            return
        self._outer(b, [ir.Constant(I64, 0)] * self.split, begin, end)

    def _outer(self, b, vars_, begin, end):
        d = len(vars_)
        if d == len(self.k.outer):
            self._point(b, vars_)
            return
        lo, hi = (begin, end) if d == self.split else (0, self.k.outer[d])
        with for_range(b, lo, hi, name=f"o{d}") as iv:
            self._outer(b, vars_ + [iv], begin, end)

    def _inner(self, b, vars_, fn):
        """Nested loops over the inner dims; ``fn(vars, flat_inner_index)`` at each point."""
        def rec(vs, flat):
            d = len(vs) - len(self.k.outer)
            if d == len(self.k.inner):
                fn(vs, flat)
                return
            with for_range(b, 0, self.k.inner[d], name=f"r{d}") as iv:
                rec(vs + [iv], b.add(b.mul(flat, ir.Constant(I64, self.k.inner[d])), iv))
        rec(list(vars_), ir.Constant(I64, 0))

    def _point(self, b, outer_vars):
        k = self.k
        refs: dict[int, ir.Value] = {}
        zeros = [ir.Constant(I64, 0)] * len(k.inner)
        for s, st in enumerate(k.stages):
            if isinstance(st, Store) and not st.inner:
                em = ExprEmitter(b, self.inputs, outer_vars + zeros, refs)
                emit_store(em, self.out_ptrs, k.outputs, st)
            elif isinstance(st, Store):
                def store_at(vs, flat, st=st):
                    emit_store(ExprEmitter(b, self.inputs, vs, refs), self.out_ptrs, k.outputs, st)
                if prod(k.inner) > 0:
                    self._inner(b, outer_vars, store_at)
            else:
                refs[s] = self._reduce(b, outer_vars, st, refs)

    def _reduce(self, b, outer_vars, st: Reduce, refs) -> ir.Value:
        arg = st.op in ("argmax", "argmin")
        vdt = st.value.dtype if arg else st.dtype
        acc = entry_alloca(b, register_type(vdt), name="acc")
        b.store(_init(st.op, vdt), acc)
        idx = entry_alloca(b, I64, name="idx") if arg else None
        if arg:
            b.store(ir.Constant(I64, 0), idx)

        def step(vs, flat):
            v = ExprEmitter(b, self.inputs, vs, refs).emit_as(st.value, vdt)
            cur = b.load(acc, typ=register_type(vdt))
            if arg:
                better = _better(b, st.op, vdt, v, cur)
                b.store(b.select(better, v, cur), acc)
                b.store(b.select(better, flat, b.load(idx, typ=I64)), idx)
            else:
                b.store(_fold(b, st.op, vdt, cur, v), acc)

        if prod(self.k.inner) > 0:
            self._inner(b, outer_vars, step)
        if arg:
            return convert.cast(b, b.load(idx, typ=I64), DType.i64, st.dtype)
        return b.load(acc, typ=register_type(vdt))


def emit_loop_kernel(module: ir.Module, name: str, k: LoopKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function for ``k`` in ``module``."""
    emitter = _LoopEmitter(k)
    total = k.outer[emitter.split] if k.outer else 1
    work = prod(k.outer) * max(1, prod(k.inner))
    if prod(k.outer) == 0:
        total = 0
    return define_kernel(module, name, len(k.inputs) + len(k.outputs), noalias, total, work, threads, emitter)
