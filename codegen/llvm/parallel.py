"""Splitting a kernel's outermost loop across threads with pthreads.

A parallel region is a *body* function ``void body(ptr p0, ..., ptr pk, i64 begin,
i64 end)`` that runs iterations [begin, end) of a loop. :func:`parallel_for` emits,
at the builder's position, code that runs ``body`` over [0, total) on ``threads``
threads: threads 1.. are started with ``pthread_create`` on a generated worker
``ptr worker(ptr ctx)`` (ctx holds the pointers and the range), the calling thread
runs chunk 0, then all are joined. If ``pthread_create`` fails the chunk runs on the
calling thread, so results never depend on thread availability. Two-way splits
(the common case) use the persistent helper thread of :mod:`.threadpool` instead
of creating a thread per call; when the helper has not started its chunk by the
time the caller finishes its own, the caller cancels it and runs it too. ``pthread_create``
and ``pthread_join`` are resolved from the process by MCJIT (glibc >= 2.34 has
them in libc).

Fixed chunks make a thread that starts late (a busy machine) delay the whole kernel by
its full chunk. :func:`dynamic_for` (what kernels use) instead splits the items into
grains and lets every thread claim the next grain with an atomic add on a counter in the
kernel's frame until none is left: a late helper takes fewer grains, and a helper that
never starts (the pooled split cancels it) leaves them all to the caller. Every grain runs
exactly once (the atomic add hands each number to one thread) and the kernel returns only
after :func:`parallel_for` has joined its threads, so results are those of one thread.
"""
from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm import threadpool
from minicomp.codegen.llvm.control import as_i64, entry_alloca
from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID

#: Work (elements or multiply-adds) below which a kernel runs on one thread.
PARALLEL_MIN_WORK = 1 << 18

BodyEmitter = Callable[[ir.IRBuilder, list[ir.Value], ir.Value, ir.Value], None]


def make_body(module: ir.Module, name: str, nptrs: int, noalias: bool, emit: BodyEmitter) -> ir.Function:
    """Define ``void name(ptr x nptrs, i64 begin, i64 end)`` whose code ``emit`` writes."""
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * nptrs + [I64, I64]), name=name)
    fn.linkage = "internal"
    if noalias:
        for a in fn.args[:nptrs]:
            a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    emit(b, list(fn.args[:nptrs]), fn.args[nptrs], fn.args[nptrs + 1])
    b.ret_void()
    return fn


def _worker(module: ir.Module, body: ir.Function, ctx_ty: ir.LiteralStructType, nptrs: int) -> ir.Function:
    name = f"{body.name}.worker"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR]), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx = fn.args[0]
    zero = ir.Constant(I32, 0)
    vals = [b.load(b.gep(ctx, [zero, ir.Constant(I32, i)], source_etype=ctx_ty), typ=ctx_ty.elements[i])
            for i in range(nptrs + 2)]
    b.call(body, vals)
    b.ret(ir.Constant(PTR, None))
    return fn


def _pooled_pair(b: ir.IRBuilder, body: ir.Function, ptrs: list[ir.Value], total: int) -> None:
    """Two chunks: the second on the process's helper thread (:mod:`.threadpool`) when it is free."""
    nptrs = len(ptrs)
    ctx_ty = ir.LiteralStructType([PTR] * nptrs + [I64, I64])
    worker = _worker(b.module, body, ctx_ty, nptrs)
    submit = declare(b.module, threadpool.SUBMIT, I32, [PTR, PTR])
    join = declare(b.module, threadpool.JOIN, I32, [])
    chunk = -(-total // 2)
    zero = ir.Constant(I32, 0)
    ctx = entry_alloca(b, ctx_ty, name="ctx1")
    for i, v in enumerate(list(ptrs) + [ir.Constant(I64, chunk), ir.Constant(I64, total)]):
        b.store(v, b.gep(ctx, [zero, ir.Constant(I32, i)], source_etype=ctx_ty))
    taken = b.icmp_signed("!=", b.call(submit, [worker, ctx]), zero)
    b.call(body, list(ptrs) + [ir.Constant(I64, 0), ir.Constant(I64, chunk)])
    helped = entry_alloca(b, ir.IntType(1), name="helped")
    b.store(ir.Constant(ir.IntType(1), 0), helped)
    with b.if_then(taken):  # join returns 0 when the helper had not started (busy machine)
        b.store(b.icmp_signed("!=", b.call(join, []), zero), helped)
    with b.if_then(b.not_(b.load(helped, typ=ir.IntType(1)))):
        b.call(body, list(ptrs) + [ir.Constant(I64, chunk), ir.Constant(I64, total)])


def parallel_for(b: ir.IRBuilder, body: ir.Function, ptrs: list[ir.Value], total: int, threads: int) -> None:
    """Run ``body(ptrs, begin, end)`` over [0, total), split in ``threads`` contiguous chunks."""
    threads = max(1, min(threads, total))
    if threads == 1:
        b.call(body, list(ptrs) + [ir.Constant(I64, 0), ir.Constant(I64, total)])
        return
    module = b.module
    if threads == 2 and threadpool.supported():
        _pooled_pair(b, body, ptrs, total)
        return
    nptrs = len(ptrs)
    ctx_ty = ir.LiteralStructType([PTR] * nptrs + [I64, I64])
    worker = _worker(module, body, ctx_ty, nptrs)
    create = declare(module, "pthread_create", I32, [PTR, PTR, PTR, PTR])
    join = declare(module, "pthread_join", I32, [I64, PTR])
    chunk = -(-total // threads)
    zero = ir.Constant(I32, 0)
    started = []
    for t in range(1, threads):
        lo, hi = min(t * chunk, total), min((t + 1) * chunk, total)
        ctx = entry_alloca(b, ctx_ty, name=f"ctx{t}")
        tid = entry_alloca(b, I64, name=f"tid{t}")
        for i, v in enumerate(list(ptrs) + [ir.Constant(I64, lo), ir.Constant(I64, hi)]):
            b.store(v, b.gep(ctx, [zero, ir.Constant(I32, i)], source_etype=ctx_ty))
        rc = b.call(create, [tid, ir.Constant(PTR, None), worker, ctx])
        failed = b.icmp_signed("!=", rc, zero)
        with b.if_then(failed):  # no thread: run the chunk here
            b.call(body, list(ptrs) + [ir.Constant(I64, lo), ir.Constant(I64, hi)])
        started.append((failed, tid))
    b.call(body, list(ptrs) + [ir.Constant(I64, 0), ir.Constant(I64, min(chunk, total))])
    for failed, tid in started:
        with b.if_then(b.not_(failed)):
            b.call(join, [b.load(tid, typ=I64), ir.Constant(PTR, None)])


def _smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


#: Grains per thread: enough for a late thread to catch up, few enough that claiming
#: (one atomic add on a shared cache line each) stays cheap. Per-call medians on the
#: shared 2-core machine, static split -> 16 grains per thread: mlp_b1 -5..-8%,
#: block_b1 -7%; 4 grains per thread was slower than 8, 16 a little faster.
GRAINS_PER_THREAD = 16


def dynamic_for(b: ir.IRBuilder, name: str, ptrs: list[ir.Value], noalias: bool, emit: BodyEmitter,
                total: int, threads: int) -> None:
    """Run ``emit``'s body over items [0, total) on ``threads`` threads at ``b`` (any total >= 0).

    With one thread (or one grain) this is :func:`parallel_for` of a plain body named ``name``.
    """
    nptrs = len(ptrs)
    grain = max(1, -(-total // (GRAINS_PER_THREAD * max(threads, 1))))
    ngrains = -(-total // grain)
    if threads <= 1 or ngrains <= 1:
        parallel_for(b, make_body(b.module, name, nptrs, noalias, emit), ptrs, total, 1)
        return

    def claiming(bb: ir.IRBuilder, args: list[ir.Value], begin: ir.Value, end: ir.Value) -> None:
        del begin, end  # the counter, not the chunk, says what to run
        counter = args[nptrs]
        loop = bb.append_basic_block("grain.claim")
        work = bb.append_basic_block("grain.run")
        done = bb.append_basic_block("grain.done")
        bb.branch(loop)
        bb.position_at_end(loop)
        g = bb.atomic_rmw("add", counter, as_i64(1), "monotonic")
        bb.cbranch(bb.icmp_signed(">=", g, as_i64(ngrains)), done, work)
        bb.position_at_end(work)
        lo = bb.mul(g, as_i64(grain))
        emit(bb, args[:nptrs], lo, _smin(bb, bb.add(lo, as_i64(grain)), as_i64(total)))
        bb.branch(loop)
        bb.position_at_end(done)

    body = make_body(b.module, name, nptrs + 1, noalias, claiming)
    counter = entry_alloca(b, I64, "grains")
    b.store(as_i64(0), counter)
    n = min(threads, ngrains)
    parallel_for(b, body, list(ptrs) + [counter], n, n)
