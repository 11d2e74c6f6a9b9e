"""LoopKernel -> LLVM: pointwise, reduction and row-wise kernels.

Loop nest: ``for outer point: for stage: (reduce over inner | store)``. The first
outer dim with extent >= 2 is the *split* dim (earlier dims have extent 1) and is
the range a body runs over, so large kernels split it across threads.
Accumulators live in entry-block allocas (promoted to registers by LLVM); the
floating ``sum`` add carries the ``reassoc`` flag so LLVM vectorizes it with
partial sums. A floating sum over more inner points than one chunk sums chunk by chunk
into a cascade (:mod:`.cascade`), so long rows stay as accurate as eager's.

When a reduction's per-point value is costly (it calls a transcendental) and a later
row store recomputes exactly that value into a float output of the same dtype, the
reduction also stores the value there and the row store loads it back instead
(softmax computes ``exp(x - max)`` once). This needs distinct buffers (``noalias``)
and a store index that is affine and one-to-one over the whole loop space, so the
temporaries are never read by another point or another thread; the reloaded value
is bit-identical to the recomputed one.

In-place calls (``aliases`` {input: output}: the output is written over the input's
bytes, legal per :func:`~minicomp.ir.lowering.inplace.inplace_problem`) read the
aliased input through the output's pointer. Every pointer the kernel dereferences
then points to bytes no other dereferenced pointer reaches, so ``noalias`` stays
true (the input's own pointer argument is never used), and LLVM sees a load and a
store of the same address, which it vectorizes without run-time overlap checks.
"""
from __future__ import annotations

from math import prod

from llvmlite import ir

from minicomp.codegen.llvm import cascade, convert
from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.kernelfn import buffer_table, define_kernel, emit_store
from minicomp.codegen.llvm.scalar import ExprEmitter, close_checks, open_checks
from minicomp.codegen.llvm.types import I64, register_type, storage_type
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import REDUCE_KINDS, Expr, LoopKernel, Op, Reduce, Store, kernel_checks
from minicomp.ir.lowering.inplace import inplace_problem, one_to_one, same_expr, sub_exprs

_COSTLY = frozenset({"exp", "log", "sin", "cos", "tanh", "erf", "pow"})


def _spills(k: LoopKernel) -> dict[int, int]:
    """Reduce stage -> row Store stage whose output can hold the reduction's per-point values."""
    found: dict[int, int] = {}
    if prod(k.inner) == 0:
        return found
    extents = tuple(k.outer) + tuple(k.inner)
    for j, st in enumerate(k.stages):
        if not (isinstance(st, Store) and st.inner):
            continue
        buf = k.outputs[st.buf].type
        if (buf.dtype not in (DType.f32, DType.f64) or buf.numel == 0
                or sum(isinstance(o, Store) and o.buf == st.buf for o in k.stages) != 1
                or not one_to_one(st.index, extents)):
            continue
        for s, red in enumerate(k.stages[:j]):
            if (isinstance(red, Reduce) and red.op in ("sum", "prod", "max", "min") and s not in found
                    and red.value.dtype is buf.dtype
                    and any(isinstance(n, Op) and n.op in _COSTLY for n in sub_exprs(red.value))
                    and any(same_expr(n, red.value) for n in sub_exprs(st.value))):
                found[s] = j
                break
    return found


def _init(op: str, dtype: DType) -> ir.Constant:
    """The accumulator's start: the identity of reduction ``op`` in ``dtype`` (:data:`REDUCE_KINDS`)."""
    return convert.constant(REDUCE_KINDS[op].identity(dtype), dtype)


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
    def __init__(self, k: LoopKernel, noalias: bool = False, aliases: dict[int, int] | None = None) -> None:
        self.k = k
        self.aliases = dict(aliases or {})
        for i, j in self.aliases.items():
            why = inplace_problem(k, i, j)
            if why is not None:
                raise ValueError(f"kernel {k.name}: output {j} cannot overwrite input {i} in place: {why}")
        self.spills = _spills(k) if noalias else {}
        self.spilled = {j: k.stages[s].value for s, j in self.spills.items()}
        self.split = next((d for d, n in enumerate(k.outer) if n >= 2), 0)
        self.checks = kernel_checks(k)
        for st in k.stages:
            if isinstance(st, Reduce) and st.op not in REDUCE_KINDS:
                raise ValueError(f"kernel {k.name}: unknown reduction {st.op!r}")

    def __call__(self, b: ir.IRBuilder, ptrs: list[ir.Value], begin: ir.Value, end: ir.Value) -> None:
        k = self.k
        nin = len(k.inputs)
        in_ptrs = [ptrs[nin + self.aliases[i]] if i in self.aliases else p for i, p in enumerate(ptrs[:nin])]
        self.inputs = buffer_table(in_ptrs, k.inputs)
        self.out_ptrs = ptrs[nin:nin + len(k.outputs)]
        if self.checks:  # the last pointer is the program's error word
            open_checks(b)
        if not k.outer:
            self._point(b, [])
        else:
            self._outer(b, [ir.Constant(I64, 0)] * self.split, begin, end)
        if self.checks:
            close_checks(b, ptrs[-1])

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
                def store_at(vs, flat, st=st, j=s):
                    em = ExprEmitter(b, self.inputs, vs, refs)
                    if j in self.spilled:
                        self._reload(em, st, self.spilled[j])
                    emit_store(em, self.out_ptrs, k.outputs, st)
                if prod(k.inner) > 0:
                    self._inner(b, outer_vars, store_at)
            else:
                refs[s] = self._reduce(b, outer_vars, st, refs, s)

    def _reload(self, em: ExprEmitter, st: Store, value: Expr) -> None:
        """Bind every copy of ``value`` in ``st`` to what its reduction left in ``st``'s output."""
        b, buf = em.b, self.k.outputs[st.buf].type
        idx = em.index(st.index, buf.numel)
        raw = b.load(b.gep(self.out_ptrs[st.buf], [idx], inbounds=True, source_etype=storage_type(buf.dtype)),
                     typ=storage_type(buf.dtype))
        v = convert.from_storage(b, raw, buf.dtype)
        for n in sub_exprs(st.value):
            if same_expr(n, value):
                em.bind(n, v)

    def _reduce(self, b, outer_vars, st: Reduce, refs, stage: int) -> ir.Value:
        arg = REDUCE_KINDS[st.op].arg
        vdt = st.value.dtype if arg else st.dtype
        acc = entry_alloca(b, register_type(vdt), name="acc")
        b.store(_init(st.op, vdt), acc)
        idx = entry_alloca(b, I64, name="idx") if arg else None
        if arg:
            b.store(ir.Constant(I64, 0), idx)

        spill = self.k.stages[self.spills[stage]] if stage in self.spills else None

        def value(vs):
            em = ExprEmitter(b, self.inputs, vs, refs)
            v = em.emit_as(st.value, vdt)
            if spill is not None:
                emit_store(em, self.out_ptrs, self.k.outputs, Store(spill.buf, spill.index, st.value, True))
            return v

        chunks = cascade.plan(self.k.inner) if st.op == "sum" and vdt.is_float else None
        if chunks is not None:  # a long float row: blocked and cascaded (see cascade.py)
            return cascade.emit_sum(b, chunks, outer_vars, _init("sum", vdt), value,
                                    lambda cur, v: _fold(b, "sum", vdt, cur, v))

        def step(vs, flat):
            v = value(vs)
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


#: A transcendental costs about this many simple element operations (exp, erf: ~20-30
#: vector instructions against one load/add/store), for the decision to split a kernel.
_COSTLY_WEIGHT = 16


def _work(k: LoopKernel, spills: dict[int, int]) -> int:
    """Estimated cost in simple element operations: every stage's points, each
    transcendental it computes counted :data:`_COSTLY_WEIGHT` times (a row store that
    reloads a spilled value does not recompute it). Row-wise kernels make several
    passes over a row, and softmax's exp passes cost far more than a copy, so this,
    not the element count, decides whether a kernel is split across threads."""
    inner = prod(k.inner)
    reloaded = set(spills.values())
    per_point = 0
    for j, st in enumerate(k.stages):
        costly = 0 if j in reloaded else len(
            {id(n) for n in sub_exprs(st.value) if isinstance(n, Op) and n.op in _COSTLY})
        per_point += (1 + _COSTLY_WEIGHT * costly) * (inner if isinstance(st, Reduce) or st.inner else 1)
    return prod(k.outer) * max(1, per_point)


def emit_loop_kernel(module: ir.Module, name: str, k: LoopKernel, noalias: bool, threads: int,
                     aliases: dict[int, int] | None = None) -> ir.Function:
    """Define the kernel function for ``k`` in ``module``.

    ``noalias``: the call passes buffers that share no bytes, except the legal in-place
    pairs ``aliases`` ({input number: output number}, each pair the same address).
    A kernel with run-time checks (:func:`~minicomp.ir.kernel.kernel_checks`) takes one more
    pointer after its buffers: the program's i32 error word.
    """
    emitter = _LoopEmitter(k, noalias, aliases)
    total = k.outer[emitter.split] if k.outer else 1
    work = _work(k, emitter.spills)
    if prod(k.outer) == 0:
        total = 0
    nptrs = len(k.inputs) + len(k.outputs) + (1 if emitter.checks else 0)  # + the error word
    return define_kernel(module, name, nptrs, noalias, total, work, threads, emitter)
