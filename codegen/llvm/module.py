"""compile_program / emit_object and the compiled-module handle.

A Program compiles as several LLVM parts compiled on the host cores at once
(:func:`~minicomp.codegen.llvm.runtime.jit.compile_objects`), planned by :func:`plan`: every kernel
and the entry are built as modules of their own (:func:`~minicomp.codegen.llvm.entry.build_parts`),
their cost estimated from the size of their IR, and distributed over
:func:`~minicomp.codegen.llvm.runtime.jit.compile_workers` bins (largest first, each to the lightest
bin); the modules of one bin and one pipeline level are linked into one part. Kernels of a
kind in :data:`O3_KINDS` run the O3 pipeline, the rest O2 (:func:`kernel_level`).

The packed GEMM's shared functions are only declared by the kernels: the process-wide
:mod:`~minicomp.codegen.llvm.runtime.library` defines them, compiled once per process (in the same
parallel batch as the first program that needs them), so splitting compiles no copies of
them. Small helpers (math functions) are compiled once per part that uses them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from minicomp.codegen.llvm.entry import build_module, build_parts, kernel_symbol
from minicomp.codegen.llvm.runtime import jit, library
from minicomp.ir.program import Program


def _function_text(ir_text: str, symbol: str) -> str:
    """The ``define`` of ``symbol`` (and of its body/worker helpers) from module text."""
    out = []
    for m in re.finditer(r"^define [^\n]*@\"?([^\"(\s]+)\"?\(.*?^}\n", ir_text, re.S | re.M):
        fname = m.group(1)
        if fname == symbol or fname.startswith(symbol + "."):
            out.append(m.group(0))
    return "\n".join(out)


class LLVMModule:
    """A compiled Program: machine code loaded in this process plus its sources.

    Keep this object alive while calling ``entry_address``. The sources are produced
    lazily on first request: ``llvm_ir`` and the assembly come from the unoptimized IR
    of the whole program run through one pipeline at ``opt_level`` plus the shared GEMM
    functions it calls (:mod:`.runtime.library`; the machine code was compiled in parts, each at
    its own level, so they may differ from it in detail). ``"llvm-unopt"`` is the
    program's own module: it only declares those functions.
    ``unopt_ir`` may be a function returning that text: it is then called on
    the first request of any source, not at load time.
    """

    def __init__(self, name: str, unopt_ir: str | Callable[[], str], symbols: list[str], object_code: bytes,
                 opt_ir: str | None, opt_level: int) -> None:
        self.name = name
        self._unopt_src = unopt_ir
        self._opt = opt_ir
        self._asm: str | None = None
        self._opt_level = opt_level
        self.symbols = symbols
        self.object_code = object_code
        self._loaded = jit.Loaded(object_code)
        self.entry_address: int = self._loaded.address(name)

    @property
    def _unopt(self) -> str:
        if not isinstance(self._unopt_src, str):
            self._unopt_src = self._unopt_src()
        return self._unopt_src

    def _optimized(self):
        """The program optimized at its level, linked with the (separately optimized) shared
        GEMM functions it declares: the code that runs."""
        mod = jit.parse(self._unopt)
        jit.optimize(mod, self._opt_level)
        names = [f.name for f in mod.functions if f.is_declaration and library.is_library_symbol(f.name)]
        if names:
            lib = jit.parse(library.library_ir(names))
            jit.optimize(lib, library.LEVEL)
            mod.link_in(lib)
        return mod

    @property
    def llvm_ir(self) -> str:
        """Optimized LLVM IR text of the whole module."""
        if self._opt is None:
            self._opt = str(self._optimized())
        return self._opt

    def source(self, kind: str = "llvm") -> str:
        """``"llvm"`` (optimized IR), ``"llvm-unopt"`` or ``"asm"``."""
        if kind == "llvm":
            return self.llvm_ir
        if kind == "llvm-unopt":
            return self._unopt
        if kind == "asm":
            if self._asm is None:
                self._asm = jit.emit_assembly(self._optimized())
            return self._asm
        raise ValueError(f"unknown source kind {kind!r}; expected llvm, llvm-unopt or asm")

    @property
    def kernel_sources(self) -> list[tuple[str, str]]:
        """(kernel symbol, optimized IR of its functions) per kernel, in Program order."""
        text = self.llvm_ir
        return [(s, _function_text(text, s) or _function_text(self._unopt, s)) for s in self.symbols]

    def kernel_address(self, index: int) -> int:
        """Address of kernel ``index`` (``void k(ptr in..., ptr out...)``)."""
        return self._loaded.address(self.symbols[index])


#: Kernel kinds whose code measurably gains from LLVM's O3 pipeline over O2 (LeNet's convolutions).
#: Elsewhere (MLP, transformer block, softmax, layer norm, GEMM) O3 ran no faster than O2
#: but took markedly longer to optimize and to emit.
O3_KINDS = frozenset({"conv"})
#: Estimated cost (IR lines, see :func:`plan`) below which a program is not worth another part:
#: each part costs a few milliseconds of set-up (context, target machine, pass pipeline).
MIN_PART_COST = 150
#: Cost weight of an O3 line relative to an O2 line.
O3_WEIGHT = 1.25


def kernel_level(program: Program, index: int, opt_level: int) -> int:
    """The pipeline level of kernel ``index`` when compiling at ``opt_level`` (an upper bound):
    ``opt_level`` for the kinds in :data:`O3_KINDS`, at most 2 for the others."""
    kind = getattr(program.kernels[index], "kind", None)
    return opt_level if kind in O3_KINDS else min(opt_level, 2)


def pipeline_level(program: Program, opt_level: int) -> int:
    """The highest LLVM pipeline level :func:`compile_program` runs on a part of ``program`` when
    asked for ``opt_level``; the level of the lazily rebuilt sources."""
    return max([min(opt_level, 2)] + [kernel_level(program, i, opt_level) for i in range(len(program.kernels))])


@dataclass
class Plan:
    """How :func:`compile_program` compiles a program: ``parts[i]`` (IR texts linked into one
    module) at ``levels[i]``; ``symbols`` of the kernels; ``library`` the shared GEMM functions
    the parts declare (see :mod:`~minicomp.codegen.llvm.runtime.library`)."""

    parts: list[list[str]]
    levels: list[int]
    symbols: list[str]
    library: list[str]


def plan(program: Program, name: str, threads: int, opt_level: int, workers: int | None = None) -> Plan:
    """The parts of ``program`` for ``workers`` threads (default :func:`jit.compile_workers`):
    see the module docstring. Deterministic for a given program, options and worker count."""
    modules, symbols = build_parts(program, name, threads)
    texts = [str(m) for m in modules]
    levels = [kernel_level(program, i, opt_level) for i in range(len(program.kernels))] + [min(opt_level, 2)]
    lib = sorted({g.name for m in modules for g in m.functions
                  if g.is_declaration and library.is_library_symbol(g.name)})
    cost = [t.count("\n") * (O3_WEIGHT if lv > 2 else 1.0) for t, lv in zip(texts, levels)]
    nbins = max(1, min(workers or jit.compile_workers(), int(sum(cost) // MIN_PART_COST)))
    load = [0.0] * nbins
    groups: dict[tuple[int, int], list[int]] = {}
    for i in sorted(range(len(texts)), key=lambda i: (-cost[i], i)):
        b = min(range(nbins), key=lambda j: (load[j], j))
        load[b] += cost[i]
        groups.setdefault((b, levels[i]), []).append(i)
    keys = sorted(groups)
    return Plan([[texts[i] for i in sorted(groups[k])] for k in keys], [k[1] for k in keys], symbols, lib)


def _object_code(program: Program, name: str, opt_level: int, threads: int) -> tuple[list[str], bytes]:
    p = plan(program, name, threads, opt_level)
    need = library.missing(p.library)
    lib_text = library.library_ir(need) if need else None
    lib_obj = library.cached_object(lib_text) if lib_text else None
    extra = [lib_text] if lib_text and lib_obj is None else []
    objs = jit.compile_objects(p.parts + extra, p.levels + [library.LEVEL] * len(extra))
    if extra:
        lib_obj = objs.pop()
        library.remember_object(lib_text, lib_obj)
    if lib_obj is not None:
        library.install(need, lib_obj)
    return p.symbols, jit.pack_objects(objs)


def compile_program(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2,
                    object_code: bytes | None = None) -> LLVMModule:
    """JIT-compile ``program`` for the host CPU.

    With ``object_code`` (from :func:`emit_object` or ``LLVMModule.object_code`` of the
    same program, name, threads and host), nothing is built: the object code is
    loaded. Either way the IR is constructed only when a source is first requested.
    ``opt_level`` is an upper bound: see :func:`kernel_level`.
    """
    level = pipeline_level(program, opt_level)
    if object_code is None:
        symbols, object_code = _object_code(program, name, opt_level, threads)
    else:
        symbols = [kernel_symbol(name, i, k) for i, k in enumerate(program.kernels)]
    return LLVMModule(name, lambda: str(build_module(program, name, threads)[0]), symbols, object_code, None,
                      level)


def emit_object(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2) -> bytes:
    """The object image of ``program`` (what an on-disk cache stores; see :func:`jit.pack_objects`).
    It imports the shared GEMM functions, which loading it provides (:mod:`.runtime.library`)."""
    return _object_code(program, name, opt_level, threads)[1]
