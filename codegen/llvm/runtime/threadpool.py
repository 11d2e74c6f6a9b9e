"""The process-wide pool of worker threads that parallel kernels run on (no thread creation per call).

Creating and joining a pthread costs tens of microseconds, more than a small kernel
runs. This module JIT-compiles, once per process, a tiny runtime and registers one
symbol for MCJIT to resolve:

``void minicomp_pool_run(ptr fn, ptr ctx, i32 helpers)`` runs ``fn(ctx)`` on the
calling thread and on up to ``helpers`` pool workers at once, and returns when every
thread that entered ``fn`` has left it. ``fn`` must be a *claiming* function (what
:mod:`..parallel` generates): it takes the next piece of work from a counter in ``ctx``
until none is left, so it is correct however many threads run it, one included.

* **Workers**: created on demand, up to the most ``helpers`` any call asked for (at most
  :data:`MAX_WORKERS`), and kept for the life of the process. A worker that finds no job
  spins (``pause``) :data:`SPIN` times, then sleeps on a futex, so an idle pool costs no
  CPU and does not steal cores from eager code running beside it. When the pool's threads
  outnumber the cores this process may run on (:func:`load_object` tells the pool that
  count), a spinning worker would take the core of a thread with work, so workers spin only
  :data:`SPIN_OVERSUBSCRIBED` times (libgomp throttles its spinning the same way).
* **A job**: one 64-bit word, the job's sequence number (high half) and the seats left
  (low half). A worker enters by decrementing the seats with a compare-and-swap that
  also checks the sequence number, so it can never enter a finished job. When the caller
  has run out of work it *closes* the job (exchanges the seats for 0): a worker that has
  not entered by then never will, and the caller waits only for those that did (they
  are finishing their last piece). A worker descheduled on a busy machine therefore
  costs the caller nothing but doing the work itself.
* **Concurrent and nested callers**: the pool serves one job at a time, taken with a
  try-lock. A caller that finds it held (another Python thread's kernel, or a kernel
  called from inside a pool worker) runs ``fn(ctx)`` alone instead of waiting, so no
  caller ever waits on a pool another caller holds.
* **Waiting**: the caller spins :data:`WAIT_SPIN` times for the entered workers, then
  sleeps on a futex that the last of them wakes.

Results never depend on how many workers entered: ``fn`` hands every piece of work to
exactly one thread. After ``fork`` the child has no workers: nobody enters, the caller
does all the work.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID

RUN = "minicomp_pool_run"
CONFIGURE = "minicomp_pool_configure"
#: Most workers the pool starts (a call asking for more gets this many).
MAX_WORKERS = 255
#: pause iterations a worker spins after a job before sleeping (a few hundred microseconds).
SPIN = 1 << 14
#: pause iterations a worker spins when the caller and the workers outnumber the cores.
SPIN_OVERSUBSCRIBED = 1 << 8
#: pause iterations a caller spins waiting for entered workers before sleeping.
WAIT_SPIN = 1 << 10
_SYS_FUTEX = 202  # x86-64 Linux
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_FNTY = ir.FunctionType(PTR, [PTR])


def _c32(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


def _c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


@dataclass
class _State:
    """The pool's globals (each on its own cache line) and the functions the runtime calls."""

    m: ir.Module
    lock: ir.GlobalVariable       # i32: 1 while a caller holds the pool
    nworkers: ir.GlobalVariable   # i32: workers started (written under the lock)
    cores: ir.GlobalVariable      # i32: cores this process may use (0: not told)
    spin: ir.GlobalVariable       # i32: pause iterations before a worker sleeps
    failed: ir.GlobalVariable     # i32: 1 once pthread_create failed (never retried)
    job: ir.GlobalVariable        # i64: seq << 32 | seats left
    bell: ir.GlobalVariable       # i32: low half of seq; sleeping workers wait on it
    sleepers: ir.GlobalVariable   # i32: workers asleep (or about to be) on bell
    finished: ir.GlobalVariable   # i32: workers that left the current job's fn
    waiting: ir.GlobalVariable    # i32: 1 while the caller sleeps on finished
    job_fn: ir.GlobalVariable
    job_ctx: ir.GlobalVariable
    tid: ir.GlobalVariable
    syscall: ir.Function
    x86: bool

    def pause(self, b: ir.IRBuilder) -> None:
        """A spin-wait hint (x86 ``pause``): spinning threads yield the core's pipeline to its sibling."""
        if self.x86:
            b.call(declare(self.m, "llvm.x86.sse2.pause", VOID, []), [])

    def futex(self, b: ir.IRBuilder, word: ir.Value, op: int, val: ir.Value) -> None:
        """The raw ``futex(word, op, val)`` syscall: sleep on / wake waiters of an i32 in shared memory."""
        b.call(self.syscall, [_c64(_SYS_FUTEX), word, _c32(op), val, ir.Constant(PTR, None)])


def _global(m: ir.Module, name: str, ty: ir.Type) -> ir.GlobalVariable:
    g = ir.GlobalVariable(m, ty, name=name)
    g.linkage = "internal"
    g.initializer = ir.Constant(ty, None)
    g.align = 64
    return g


_CALLEES: dict[type, type] = {}


def _callee(v: ir.Value) -> ir.Value:
    """``v`` (an opaque pointer to a ``ptr (ptr)`` function) made callable: llvmlite takes an
    indirect callee's function type from the value, which an opaque ``ptr`` does not carry."""
    cls = type(v)
    if cls not in _CALLEES:
        _CALLEES[cls] = type(f"_Callee{cls.__name__}", (cls,), {"function_type": property(lambda self: _FNTY)})
    v.__class__ = _CALLEES[cls]
    return v


def _state(m: ir.Module, x86: bool) -> _State:
    i32s = {n: _global(m, n, I32) for n in ("lock", "nworkers", "cores", "spin", "failed", "bell", "sleepers",
                                             "finished", "waiting")}
    syscall = ir.Function(m, ir.FunctionType(I64, [I64], var_arg=True), name="syscall")
    return _State(m, job=_global(m, "job", I64), job_fn=_global(m, "job_fn", PTR),
                  job_ctx=_global(m, "job_ctx", PTR), tid=_global(m, "tid", I64), syscall=syscall, x86=x86,
                  **i32s)


def _emit_worker(s: _State) -> ir.Function:
    """``ptr minicomp_pool_main(ptr)``: forever enter new jobs that have seats, spin, then sleep."""
    main = ir.Function(s.m, _FNTY, name="minicomp_pool_main")
    main.linkage = "internal"
    b = ir.IRBuilder(main.append_basic_block("entry"))
    last, spins = b.alloca(I32, name="last"), b.alloca(I32, name="spins")
    b.store(_c32(0), last)
    b.store(_c32(0), spins)
    head, fresh, seen, claim, execute, idle, sleep = (main.append_basic_block(n) for n in (
        "head", "fresh", "seen", "claim", "exec", "idle", "sleep"))
    b.branch(head)
    b.position_at_end(head)
    w = b.load_atomic(s.job, "acquire", 8, typ=I64)
    seq = b.trunc(b.lshr(w, _c64(32)), I32)
    b.cbranch(b.icmp_unsigned("!=", seq, b.load(last, typ=I32)), fresh, idle)
    b.position_at_end(fresh)  # a job we have not looked at: enter it if it has a seat
    b.cbranch(b.icmp_unsigned("==", b.trunc(w, I32), _c32(0)), seen, claim)
    b.position_at_end(seen)
    b.store(seq, last)
    b.store(_c32(0), spins)
    b.branch(head)
    b.position_at_end(claim)
    ok = b.extract_value(b.cmpxchg(s.job, w, b.sub(w, _c64(1)), "acq_rel", "acquire"), 1)
    b.cbranch(ok, execute, head)  # lost the seat (or the job closed): look again
    b.position_at_end(execute)
    b.call(_callee(b.load(s.job_fn, typ=PTR)), [b.load(s.job_ctx, typ=PTR)])
    b.atomic_rmw("add", s.finished, _c32(1), "seq_cst")
    with b.if_then(b.icmp_unsigned("!=", b.load_atomic(s.waiting, "seq_cst", 4, typ=I32), _c32(0))):
        s.futex(b, s.finished, _FUTEX_WAKE_PRIVATE, _c32(1))
    b.branch(seen)
    b.position_at_end(idle)
    s.pause(b)
    n = b.add(b.load(spins, typ=I32), _c32(1))
    b.store(n, spins)
    limit = b.load_atomic(s.spin, "monotonic", 4, typ=I32)
    b.cbranch(b.icmp_unsigned("<", n, b.select(b.icmp_unsigned("==", limit, _c32(0)), _c32(SPIN), limit)),
              head, sleep)
    b.position_at_end(sleep)  # announce, re-check, sleep: a caller ringing after the check wakes us
    b.atomic_rmw("add", s.sleepers, _c32(1), "seq_cst")
    rung = b.load_atomic(s.bell, "seq_cst", 4, typ=I32)
    with b.if_then(b.icmp_unsigned("==", rung, b.load(last, typ=I32))):
        s.futex(b, s.bell, _FUTEX_WAIT_PRIVATE, rung)
    b.atomic_rmw("sub", s.sleepers, _c32(1), "seq_cst")
    b.store(_c32(0), spins)
    b.branch(head)
    return main


def _emit_grow(s: _State, main: ir.Function) -> ir.Function:
    """``i32 grow(i32 want)`` (lock held): start workers up to ``want``; the number available for it."""
    fn = ir.Function(s.m, ir.FunctionType(I32, [I32]), name="minicomp_pool_grow")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    head, make, out = (fn.append_basic_block(n) for n in ("head", "make", "out"))
    want = b.select(b.icmp_unsigned("<", fn.args[0], _c32(MAX_WORKERS)), fn.args[0], _c32(MAX_WORKERS))
    b.branch(head)
    b.position_at_end(head)
    have = b.load(s.nworkers, typ=I32)
    enough = b.or_(b.icmp_unsigned(">=", have, want), b.icmp_unsigned("!=", b.load(s.failed, typ=I32), _c32(0)))
    b.cbranch(enough, out, make)
    b.position_at_end(make)
    create = declare(s.m, "pthread_create", I32, [PTR, PTR, PTR, PTR])
    rc = b.call(create, [s.tid, ir.Constant(PTR, None), main, ir.Constant(PTR, None)])
    started = b.icmp_unsigned("==", rc, _c32(0))
    b.store(b.select(started, b.add(have, _c32(1)), have), s.nworkers)
    b.store(b.select(started, _c32(0), _c32(1)), s.failed)
    b.branch(head)
    b.position_at_end(out)
    cores = b.load_atomic(s.cores, "monotonic", 4, typ=I32)
    over = b.and_(b.icmp_unsigned("!=", cores, _c32(0)), b.icmp_unsigned(">=", have, cores))  # have + 1 > cores
    b.store_atomic(b.select(over, _c32(SPIN_OVERSUBSCRIBED), _c32(SPIN)), s.spin, "monotonic", 4)
    b.ret(b.select(b.icmp_unsigned("<", have, want), have, want))
    return fn


def _emit_wait(s: _State) -> ir.Function:
    """``void wait(i32 entered)``: until ``finished == entered``; spin, then sleep on ``finished``."""
    fn = ir.Function(s.m, ir.FunctionType(VOID, [I32]), name="minicomp_pool_wait")
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n = b.alloca(I32, name="n")
    b.store(_c32(0), n)
    head, spin, sleep, out = (fn.append_basic_block(x) for x in ("head", "spin", "sleep", "out"))
    b.branch(head)
    b.position_at_end(head)
    done = b.icmp_unsigned("==", b.load_atomic(s.finished, "acquire", 4, typ=I32), fn.args[0])
    b.cbranch(done, out, spin)
    b.position_at_end(spin)
    k = b.add(b.load(n, typ=I32), _c32(1))
    b.store(k, n)
    s.pause(b)
    b.cbranch(b.icmp_unsigned("<", k, _c32(WAIT_SPIN)), head, sleep)
    b.position_at_end(sleep)  # announce, re-check, sleep: the worker finishing after the check wakes us
    b.store_atomic(_c32(1), s.waiting, "seq_cst", 4)
    now = b.load_atomic(s.finished, "seq_cst", 4, typ=I32)
    with b.if_then(b.icmp_unsigned("!=", now, fn.args[0])):
        s.futex(b, s.finished, _FUTEX_WAIT_PRIVATE, now)
    b.store_atomic(_c32(0), s.waiting, "seq_cst", 4)
    b.branch(head)
    b.position_at_end(out)
    b.ret_void()
    return fn


def _emit_run(s: _State, grow: ir.Function, wait: ir.Function) -> None:
    """``void minicomp_pool_run(ptr fn, ptr ctx, i32 helpers)`` (see the module docstring)."""
    run = ir.Function(s.m, ir.FunctionType(VOID, [PTR, PTR, I32]), name=RUN)
    fn, ctx, helpers = _callee(run.args[0]), run.args[1], run.args[2]
    b = ir.IRBuilder(run.append_basic_block("entry"))
    alone = run.append_basic_block("alone")
    pooled = run.append_basic_block("pooled")
    b.cbranch(b.icmp_signed(">", helpers, _c32(0)), pooled, alone)
    b.position_at_end(pooled)
    got = b.extract_value(b.cmpxchg(s.lock, _c32(0), _c32(1), "acquire", "monotonic"), 1)
    publish = run.append_basic_block("publish")
    b.cbranch(got, publish, alone)  # held by another caller (or by us, nested): run alone
    b.position_at_end(publish)
    want = b.call(grow, [helpers])
    with b.if_then(b.icmp_unsigned("==", want, _c32(0)), likely=False):  # no worker could start
        b.store_atomic(_c32(0), s.lock, "release", 4)
        b.call(fn, [ctx])
        b.ret_void()
    b.store(fn, s.job_fn)
    b.store(ctx, s.job_ctx)
    b.store_atomic(_c32(0), s.finished, "monotonic", 4)
    seq = b.and_(b.add(b.lshr(b.load_atomic(s.job, "monotonic", 8, typ=I64), _c64(32)), _c64(1)), _c64(0xFFFFFFFF))
    closed = b.shl(seq, _c64(32))
    b.store_atomic(b.or_(closed, b.zext(want, I64)), s.job, "seq_cst", 8)
    b.store_atomic(b.trunc(seq, I32), s.bell, "seq_cst", 4)
    with b.if_then(b.icmp_unsigned("!=", b.load_atomic(s.sleepers, "seq_cst", 4, typ=I32), _c32(0))):
        s.futex(b, s.bell, _FUTEX_WAKE_PRIVATE, want)
    b.call(fn, [ctx])
    left = b.trunc(b.atomic_rmw("xchg", s.job, closed, "acq_rel"), I32)  # close: seats left nobody took
    b.call(wait, [b.sub(want, left)])
    b.store_atomic(_c32(0), s.lock, "release", 4)
    b.ret_void()
    b.position_at_end(alone)
    b.call(fn, [ctx])
    b.ret_void()


def _emit_configure(s: _State) -> None:
    """``void minicomp_pool_configure(i32 cores)``: the cores this process may run on."""
    fn = ir.Function(s.m, ir.FunctionType(VOID, [I32]), name=CONFIGURE)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store_atomic(fn.args[0], s.cores, "monotonic", 4)
    b.ret_void()


def build_pool_module(x86: bool) -> ir.Module:
    """The runtime module (see the module docstring)."""
    m = ir.Module(name="minicomp_pool")
    s = _state(m, x86)
    main = _emit_worker(s)
    _emit_run(s, _emit_grow(s, main), _emit_wait(s))
    _emit_configure(s)
    return m


@functools.lru_cache(maxsize=None)
def supported() -> bool:
    """True on x86-64 Linux (the futex syscall number and ``pause`` are those of that target)."""
    triple = llvm.get_process_triple()
    return triple.startswith("x86_64") and "linux" in triple


@functools.lru_cache(maxsize=None)
def install() -> bool:
    """Compile the pool once per process and register its symbols; False where unsupported.

    Does nothing more when :func:`load_object` already installed it (from cached object code).
    """
    if not supported():
        return False
    if not _KEEP:
        load_object(compile_object(pool_ir()))
    return True


def installed() -> bool:
    """True once this process has the pool loaded (by :func:`install` or :func:`load_object`)."""
    return bool(_KEEP)


def pool_ir() -> str:
    """The pool module's LLVM IR text for this host: what :func:`compile_object` compiles."""
    return str(build_pool_module(True))


def compile_object(ir_text: str) -> bytes:
    """Object code of the pool module ``ir_text`` (from :func:`pool_ir`), optimized at O2."""
    from minicomp.codegen.llvm.runtime import jit
    mod = jit.parse(ir_text)
    jit.optimize(mod, 2)
    return jit.emit_object(mod)


def load_object(object_code: bytes) -> None:
    """Load the pool from ``object_code`` (of :func:`pool_ir`) and register its symbols, once per process."""
    from minicomp.codegen.llvm.runtime import jit
    if _KEEP or not supported():
        return
    loaded = jit.Loaded(object_code, with_pool=False)
    _KEEP.append(loaded)
    llvm.add_symbol(RUN, loaded.address(RUN))
    ctypes.CFUNCTYPE(None, ctypes.c_int32)(loaded.address(CONFIGURE))(available_cores())


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: ``taskset``, a container's cpuset),
    else the machine's count. The pool's spinning and minicomp's default thread count use it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_KEEP: list = []  # the pool's engine lives as long as the process
