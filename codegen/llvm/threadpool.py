"""A process-wide helper thread for 2-way parallel kernels (no thread creation per call).

Creating and joining a pthread costs tens of microseconds, more than a small
kernel runs. This module JIT-compiles, once per process, a tiny runtime with one
persistent helper thread and registers two symbols for MCJIT to resolve:

* ``i32 minicomp_pool_submit(ptr fn, ptr ctx)``: if the helper is free, hand it
  ``fn(ctx)`` and return 1; otherwise (helper busy with another caller, or it
  could not be started) return 0 and the caller must run ``fn(ctx)`` itself.
* ``i32 minicomp_pool_join()``: after a successful submit, either cancel the job
  if the helper has not started it yet (return 0: the caller must run ``fn(ctx)``
  itself) or wait until the helper has finished it (return 1); then release the
  helper to other callers. Exactly one of the helper and ``join`` claims each job
  (a compare-and-swap of the claimed-job counter), so a helper that is descheduled
  on a busy machine costs the caller nothing but running the work itself.

The helper spins (``pause``) for a while after each job, then sleeps on a futex,
so an idle process costs no CPU; a caller waiting long for the helper (an
oversubscribed machine) yields its CPU. Results never depend on whether the helper runs.
"""
from __future__ import annotations

import functools

import llvmlite.binding as llvm
from llvmlite import ir

from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID

SUBMIT = "minicomp_pool_submit"
JOIN = "minicomp_pool_join"
#: pause iterations the helper spins before sleeping (a few hundred microseconds).
SPIN = 1 << 14
#: pause iterations a caller spins waiting for the helper before yielding its CPU to it.
WAIT_SPIN = 1 << 10
_SYS_FUTEX = 202  # x86-64 Linux
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129


def _c32(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


def _global(m: ir.Module, name: str, ty: ir.Type) -> ir.GlobalVariable:
    g = ir.GlobalVariable(m, ty, name=name)
    g.linkage = "internal"
    g.initializer = ir.Constant(ty, None)
    g.align = 64
    return g


def _pause(b: ir.IRBuilder, x86: bool) -> None:
    if x86:
        b.call(declare(b.module, "llvm.x86.sse2.pause", VOID, []), [])


class _FnPointerLoad(ir.instructions.LoadInstr):
    """A load of a ``ptr (ptr)`` function pointer that llvmlite can call through."""

    @property
    def function_type(self) -> ir.FunctionType:
        return ir.FunctionType(PTR, [PTR])


def build_pool_module(x86: bool) -> ir.Module:
    """The runtime module (see the module docstring)."""
    m = ir.Module(name="minicomp_pool")
    lock, state, seq, done = (_global(m, n, I32) for n in ("lock", "state", "seq", "done"))
    sleeping = _global(m, "sleeping", I32)
    taken = _global(m, "taken", I32)  # seq of the last job claimed (helper) or cancelled (join)
    job_fn, job_ctx, tid = _global(m, "job_fn", PTR), _global(m, "job_ctx", PTR), _global(m, "tid", I64)
    syscall = ir.Function(m, ir.FunctionType(I64, [I64], var_arg=True), name="syscall")
    create = declare(m, "pthread_create", I32, [PTR, PTR, PTR, PTR])
    fnty = ir.FunctionType(PTR, [PTR])

    # helper thread: for (last = 0;;) { wait for seq != last; if claim(seq): run job, done = seq }
    main = ir.Function(m, fnty, name="minicomp_pool_main")
    main.linkage = "internal"
    b = ir.IRBuilder(main.append_basic_block("entry"))
    head, run, execute, idle, sleep, back = (main.append_basic_block(n)
                                             for n in ("head", "run", "exec", "idle", "sleep", "back"))
    entry = b.block
    b.branch(head)
    b.position_at_end(head)
    last = b.phi(I32, "last")
    spins = b.phi(I32, "spins")
    cur = b.load_atomic(seq, "acquire", 4, typ=I32)
    b.cbranch(b.icmp_unsigned("!=", cur, last), run, idle)
    b.position_at_end(run)
    claim = b.cmpxchg(taken, b.sub(cur, _c32(1)), cur, "acq_rel", "acquire")
    b.cbranch(b.extract_value(claim, 1), execute, head)  # lost: join cancelled this job
    b.position_at_end(execute)
    fn = b.load(job_fn, typ=PTR)
    fn.__class__ = _FnPointerLoad  # an indirect call needs the callee's function type
    ctx = b.load(job_ctx, typ=PTR)
    b.call(fn, [ctx])
    b.store_atomic(cur, done, "release", 4)
    b.branch(head)
    b.position_at_end(idle)
    _pause(b, x86)
    nspins = b.add(spins, _c32(1))
    b.cbranch(b.icmp_unsigned("<", nspins, _c32(SPIN)), head, sleep)
    b.position_at_end(sleep)
    b.store_atomic(_c32(1), sleeping, "seq_cst", 4)
    again = b.load_atomic(seq, "seq_cst", 4, typ=I32)
    with b.if_then(b.icmp_unsigned("==", again, last)):
        b.call(syscall, [ir.Constant(I64, _SYS_FUTEX), seq, _c32(_FUTEX_WAIT_PRIVATE), again,
                         ir.Constant(PTR, None)])
    b.store_atomic(_c32(0), sleeping, "seq_cst", 4)
    b.branch(back)
    b.position_at_end(back)
    b.branch(head)
    last.add_incoming(_c32(0), entry)
    last.add_incoming(cur, run)
    last.add_incoming(cur, execute)
    last.add_incoming(last, back)
    last.add_incoming(last, idle)
    spins.add_incoming(_c32(0), entry)
    spins.add_incoming(_c32(0), run)
    spins.add_incoming(_c32(0), execute)
    spins.add_incoming(_c32(0), back)
    spins.add_incoming(nspins, idle)

    # submit(fn, ctx) -> 1 when the helper took the job
    submit = ir.Function(m, ir.FunctionType(I32, [PTR, PTR]), name=SUBMIT)
    b = ir.IRBuilder(submit.append_basic_block("entry"))
    got = b.extract_value(b.cmpxchg(lock, _c32(0), _c32(1), "acquire", "monotonic"), 1)
    with b.if_then(b.not_(got)):
        b.ret(_c32(0))
    st = b.load(state, typ=I32)
    with b.if_then(b.icmp_unsigned("==", st, _c32(0)), likely=False):
        rc = b.call(create, [tid, ir.Constant(PTR, None), main, ir.Constant(PTR, None)])
        b.store(b.select(b.icmp_unsigned("==", rc, _c32(0)), _c32(1), _c32(2)), state)
    with b.if_then(b.icmp_unsigned("!=", b.load(state, typ=I32), _c32(1)), likely=False):
        b.store_atomic(_c32(0), lock, "release", 4)
        b.ret(_c32(0))
    b.store(submit.args[0], job_fn)
    b.store(submit.args[1], job_ctx)
    nxt = b.add(b.load(seq, typ=I32), _c32(1))
    b.store_atomic(nxt, seq, "seq_cst", 4)
    with b.if_then(b.icmp_unsigned("!=", b.load_atomic(sleeping, "seq_cst", 4, typ=I32), _c32(0))):
        b.call(syscall, [ir.Constant(I64, _SYS_FUTEX), seq, _c32(_FUTEX_WAKE_PRIVATE), _c32(1)])
    b.ret(_c32(1))

    # join(): cancel the job if unclaimed (return 0), else spin until done == seq (return 1)
    join = ir.Function(m, ir.FunctionType(I32, []), name=JOIN)
    b = ir.IRBuilder(join.append_basic_block("entry"))
    loop, out = join.append_basic_block("spin"), join.append_basic_block("out")
    target = b.load(seq, typ=I32)  # our job (we hold the lock)
    cancel = b.cmpxchg(taken, b.sub(target, _c32(1)), target, "acq_rel", "acquire")
    with b.if_then(b.extract_value(cancel, 1)):
        b.store_atomic(_c32(0), lock, "release", 4)
        b.ret(_c32(0))
    pre = b.block
    b.branch(loop)
    b.position_at_end(loop)
    n = b.phi(I32, "n")
    n.add_incoming(_c32(0), pre)
    fin = b.icmp_unsigned("==", b.load_atomic(done, "acquire", 4, typ=I32), target)
    with b.if_then(b.not_(fin)):
        _pause(b, x86)
        with b.if_then(b.icmp_unsigned(">=", n, _c32(WAIT_SPIN))):  # helper descheduled: give way
            b.call(declare(m, "sched_yield", I32, []), [])
    n.add_incoming(b.add(n, _c32(1)), b.block)
    b.cbranch(fin, out, loop)
    b.position_at_end(out)
    b.store_atomic(_c32(0), lock, "release", 4)
    b.ret(_c32(1))
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
    from minicomp.codegen.llvm import jit
    mod = jit.parse(ir_text)
    jit.optimize(mod, 2)
    return jit.emit_object(mod)


def load_object(object_code: bytes) -> None:
    """Load the pool from ``object_code`` (of :func:`pool_ir`) and register its symbols, once per process."""
    from minicomp.codegen.llvm import jit
    if _KEEP or not supported():
        return
    loaded = jit.Loaded(object_code, with_pool=False)
    _KEEP.append(loaded)
    for name in (SUBMIT, JOIN):
        llvm.add_symbol(name, loaded.address(name))


_KEEP: list = []  # the pool's engine lives as long as the process
