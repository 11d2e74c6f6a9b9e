"""Dynamic scheduling of a matmul body: threads claim grains of items from a shared counter.

:func:`parallel_for` splits [0, total) into one fixed chunk per thread, so a thread
that starts late (a busy machine) delays the whole kernel by its full chunk.
:func:`dynamic_for` instead splits the items into grains and lets every thread claim
the next grain with an atomic add on a counter in the kernel's frame until none is
left: a late helper takes fewer grains, and a helper that never starts (the pooled
split cancels it) leaves them all to the caller. Every grain runs exactly once (the
atomic add hands each number to one thread) and the kernel returns only after
:func:`parallel_for` has joined its threads, so results are those of one thread.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm.control import entry_alloca
from minicomp.codegen.llvm.matmul_common import c64, smin
from minicomp.codegen.llvm.parallel import BodyEmitter, make_body, parallel_for
from minicomp.codegen.llvm.types import I64

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
        g = bb.atomic_rmw("add", counter, c64(1), "monotonic")
        bb.cbranch(bb.icmp_signed(">=", g, c64(ngrains)), done, work)
        bb.position_at_end(work)
        lo = bb.mul(g, c64(grain))
        emit(bb, args[:nptrs], lo, smin(bb, bb.add(lo, c64(grain)), c64(total)))
        bb.branch(loop)
        bb.position_at_end(done)

    body = make_body(b.module, name, nptrs + 1, noalias, claiming)
    counter = entry_alloca(b, I64, "grains")
    b.store(c64(0), counter)
    n = min(threads, ngrains)
    parallel_for(b, body, list(ptrs) + [counter], n, n)
