"""Program -> LLVM IR: a function per kernel plus the entry function, in one module or in parts.

``i32 ENTRY(ptr args)``: ``args`` points to ``[inputs..., outputs..., constants...]``
data pointers. The entry allocates the arena (64-byte aligned, ``aligned_alloc``),
runs each Call in order and frees the arena. It returns 0, or 1 without running
anything when the arena cannot be allocated, or the CHECK_* bits of
:mod:`minicomp.ir.kernel` that its kernels' run-time checks reported (integer division
by zero, an index out of range) in the call's error word: an i32 in the entry's frame,
so concurrent calls never share one; the caller raises
:func:`~minicomp.ir.kernel.check_failure`.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import dispatch
from minicomp.codegen.llvm.intrinsics import declare
from minicomp.codegen.llvm.loops import emit_loop_kernel
from minicomp.codegen.llvm.types import I8, I32, I64, PTR, VOID
from minicomp.ir.kernel import Kernel, LoopKernel, kernel_checks
from minicomp.ir.program import Program
from minicomp.ir.lowering.inplace import call_aliases


def kernel_symbol(program_name: str, index: int, kernel: Kernel) -> str:
    """The symbol of kernel ``index`` in the module of program ``program_name``."""
    safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in kernel.name)
    return f"{program_name}.k{index}.{safe}"


def _emit_kernel(module: ir.Module, program: Program, index: int, sym: str, threads: int,
                 forced: dict[str, str] | None) -> ir.Function:
    """Define kernel ``index`` as ``sym`` with the path :func:`.dispatch.choose` picks (``forced``: its override)."""
    k = program.kernels[index]
    emit = dispatch.choose(k, forced)[2]
    if not isinstance(k, LoopKernel) and kernel_checks(k):  # lowering splits such groups
        raise TypeError(f"kernel {k.name}: only loop kernels can hold run-time checks")
    aliases = call_aliases(program, index)  # None: some arguments may share bytes
    if aliases:  # legal in-place pairs (pointwise loop kernels only)
        fn = emit_loop_kernel(module, sym, k, True, threads, aliases)
    else:
        fn = emit(module, sym, k, aliases is not None, threads)
    fn.attributes.add("noinline")  # inlining into the entry would only compile it twice
    return fn


def build_module(program: Program, name: str, threads: int) -> tuple[ir.Module, list[str]]:
    """The unoptimized module for ``program`` and the symbol of each kernel."""
    module = ir.Module(name=name)
    symbols = [kernel_symbol(name, i, k) for i, k in enumerate(program.kernels)]
    forced = dispatch.forced_paths()
    for i, sym in enumerate(symbols):
        _emit_kernel(module, program, i, sym, threads, forced)
    _entry(module, program, name, symbols)
    return module, symbols


def build_parts(program: Program, name: str, threads: int) -> tuple[list[ir.Module], list[str]]:
    """The code of :func:`build_module` split into separately compilable modules: one per kernel
    (in Program order), then the entry's, which declares the kernels. Linked together (e.g.
    loaded into one engine) they define exactly the symbols of :func:`build_module`'s module. Internal
    helpers (math functions) are compiled once per module that uses them; the shared GEMM
    functions are only declared (:mod:`.runtime.library` defines them). Returns the modules and
    the symbol of each kernel."""
    symbols = [kernel_symbol(name, i, k) for i, k in enumerate(program.kernels)]
    main = ir.Module(name=name)
    parts = []
    forced = dispatch.forced_paths()
    for i, sym in enumerate(symbols):
        module = ir.Module(name=sym)
        fn = _emit_kernel(module, program, i, sym, threads, forced)
        ir.Function(main, fn.ftype, name=sym)  # a declaration in the main module
        parts.append(module)
    _entry(main, program, name, symbols)
    return parts + [main], symbols


def _entry(module: ir.Module, program: Program, name: str, symbols: list[str]) -> None:
    fn = ir.Function(module, ir.FunctionType(I32, [PTR]), name=name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args = fn.args[0]
    checks = [kernel_checks(k) for k in program.kernels]
    error_word = None
    if any(checks):
        error_word = b.alloca(I32, name="errors")
        error_word.type = PTR  # opaque pointer, as the kernels declare it
        b.store(ir.Constant(I32, 0), error_word)
    arena = ir.Constant(PTR, None)
    if program.arena_bytes > 0:
        alloc = declare(module, "aligned_alloc", PTR, [I64, I64])
        size = -(-program.arena_bytes // 64) * 64
        arena = b.call(alloc, [ir.Constant(I64, 64), ir.Constant(I64, size)])
        with b.if_then(b.icmp_unsigned("==", arena, ir.Constant(PTR, None)), likely=False):
            b.ret(ir.Constant(I32, 1))
    base = {"input": 0, "output": program.num_inputs, "const": program.num_inputs + program.num_outputs}
    cache: dict[int, ir.Value] = {}

    def pointer(slot_id: int) -> ir.Value:
        if slot_id not in cache:
            slot = program.slots[slot_id]
            if slot.kind == "arena":
                cache[slot_id] = b.gep(arena, [ir.Constant(I64, slot.index)], source_etype=I8)
            elif slot.kind in base:
                at = b.gep(args, [ir.Constant(I64, base[slot.kind] + slot.index)], source_etype=PTR)
                cache[slot_id] = b.load(at, typ=PTR)
            else:
                raise ValueError(f"unknown slot kind {slot.kind!r}")
        return cache[slot_id]

    for c in program.calls:
        kfn = module.globals[symbols[c.kernel]]
        b.call(kfn, [pointer(s) for s in c.args] + ([error_word] if checks[c.kernel] else []))
    if program.arena_bytes > 0:
        b.call(declare(module, "free", VOID, [PTR]), [arena])
    b.ret(b.load(error_word, typ=I32) if error_word is not None else ir.Constant(I32, 0))
