"""Splitting a kernel's outermost loop across the threads of the process-wide pool.

A parallel region is a *body* function ``void body(ptr p0, ..., ptr pk, i64 begin,
i64 end)`` that runs iterations [begin, end) of a loop. The items [0, total) are cut
into pieces of ``piece`` items; a generated *claiming* function ``ptr worker(ptr ctx)``
takes the next piece with an atomic add on a counter in the kernel's frame and runs
``body`` on it, until none is left. The kernel hands that function to
``minicomp_pool_run`` (:mod:`.runtime.threadpool`), which runs it on the calling thread and on
up to ``threads - 1`` pool workers at once and returns when all have left it.

* :func:`parallel_for`: ``threads`` pieces of equal size (what the blocked GEMM and the
  convolution tiles ask for: their items are already few and large).
* :func:`dynamic_for` (what most kernels use): :data:`GRAINS_PER_THREAD` pieces ("grains")
  per thread, so a thread that starts late (a busy machine) takes fewer grains instead of
  delaying the kernel by a whole share.

Every piece runs exactly once (the atomic add hands each number to one thread) and the
kernel goes on only after every thread that entered has left, so the results are those
of one thread running the pieces in any order: the same whether 1 or ``threads`` threads
took part, and whether or not the pool was free (a caller that finds it busy runs every
piece itself). Where the pool does not exist (:func:`.runtime.threadpool.supported`) the kernel
calls the claiming function directly: one thread.
"""
from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm.control import as_i64, entry_alloca
from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.runtime import threadpool
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID

#: Work (elements or multiply-adds) below which a kernel runs on one thread.
PARALLEL_MIN_WORK = 1 << 18

#: Grains per thread: enough for a late thread to catch up, few enough that claiming
#: (one atomic add on a shared cache line each) stays cheap. On the shared 2-core machine 16
#: ran faster than a static split and than 4 or 8.
GRAINS_PER_THREAD = 16

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


def _ctx_type(nptrs: int) -> ir.LiteralStructType:
    """The claiming function's context: the body's pointers, then counter, piece size and total."""
    return ir.LiteralStructType([PTR] * nptrs + [I64, I64, I64])


def _claiming(module: ir.Module, body: ir.Function, nptrs: int) -> ir.Function:
    """``ptr body.claim(ptr ctx)``: run ``body`` on piece after piece claimed from ctx's counter."""
    name = f"{body.name}.claim"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR]), name=name)
    fn.linkage = "internal"
    ctx_ty = _ctx_type(nptrs)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(I32, 0)
    field = [b.gep(fn.args[0], [zero, ir.Constant(I32, i)], source_etype=ctx_ty) for i in range(nptrs + 3)]
    ptrs = [b.load(field[i], typ=PTR) for i in range(nptrs)]
    counter = field[nptrs]
    piece, total = b.load(field[nptrs + 1], typ=I64), b.load(field[nptrs + 2], typ=I64)
    loop, work, done = (fn.append_basic_block(n) for n in ("claim", "run", "done"))
    b.branch(loop)
    b.position_at_end(loop)
    lo = b.mul(b.atomic_rmw("add", counter, as_i64(1), "monotonic"), piece)
    b.cbranch(b.icmp_signed(">=", lo, total), done, work)
    b.position_at_end(work)
    hi = b.add(lo, piece)
    b.call(body, ptrs + [lo, b.select(b.icmp_signed("<", hi, total), hi, total)])
    b.branch(loop)
    b.position_at_end(done)
    b.ret(ir.Constant(PTR, None))
    return fn


def _run_pieces(b: ir.IRBuilder, body: ir.Function, ptrs: list[ir.Value], total: int, piece: int,
                threads: int) -> None:
    """Run ``body`` over [0, total) in pieces of ``piece`` items on up to ``threads`` threads."""
    pieces = -(-total // piece) if total > 0 else 0
    helpers = min(threads, pieces) - 1
    if helpers <= 0:
        b.call(body, list(ptrs) + [as_i64(0), as_i64(total)])
        return
    nptrs = len(ptrs)
    ctx_ty = _ctx_type(nptrs)
    ctx = entry_alloca(b, ctx_ty, name="pieces")
    zero = ir.Constant(I32, 0)
    for i, v in enumerate(list(ptrs) + [as_i64(0), as_i64(piece), as_i64(total)]):
        b.store(v, b.gep(ctx, [zero, ir.Constant(I32, i)], source_etype=ctx_ty))
    claim = _claiming(b.module, body, nptrs)
    if threadpool.supported():
        run = declare(b.module, threadpool.RUN, VOID, [PTR, PTR, I32])
        b.call(run, [claim, ctx, ir.Constant(I32, helpers)])
    else:
        b.call(claim, [ctx])


def parallel_for(b: ir.IRBuilder, body: ir.Function, ptrs: list[ir.Value], total: int, threads: int) -> None:
    """Run ``body(ptrs, begin, end)`` over [0, total) in ``threads`` equal pieces, one per thread
    while the pool has a worker free for each."""
    threads = max(1, min(threads, total))
    _run_pieces(b, body, ptrs, total, max(1, -(-total // threads)), threads)


def dynamic_for(b: ir.IRBuilder, name: str, ptrs: list[ir.Value], noalias: bool, emit: BodyEmitter,
                total: int, threads: int) -> None:
    """Run ``emit``'s body (a function named ``name``) over items [0, total) at ``b`` (any
    total >= 0), in :data:`GRAINS_PER_THREAD` grains per thread claimed by ``threads`` threads."""
    body = make_body(b.module, name, len(ptrs), noalias, emit)
    threads = max(threads, 1)
    grain = max(1, -(-total // (GRAINS_PER_THREAD * threads)))
    _run_pieces(b, body, ptrs, total, grain, threads)
