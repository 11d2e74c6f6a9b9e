"""compile_program / emit_object and the compiled-module handle.

A Program compiles as several LLVM modules (:func:`~minicomp.codegen.llvm.entry.build_parts`):
one per kernel of a kind in :data:`O3_KINDS`, optimized at O3, and one with the other
kernels and the entry at O2 (:func:`part_levels`), compiled on several cores at once
(:func:`~minicomp.codegen.llvm.jit.compile_parts`). Only those kinds are split off: the
other kernels share internal helpers (GEMM micro-kernels, math functions) that each
module would compile again (a transformer block split per kernel took 60% more CPU time).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from minicomp.codegen.llvm import jit
from minicomp.codegen.llvm.entry import build_module, build_parts, kernel_symbol
from minicomp.ir.kernel import Program


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
    of the whole program run through one pipeline at ``opt_level`` (the machine code
    was compiled per kernel, each at its own level, so they may differ from it in detail).
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
        mod = jit.parse(self._unopt)
        jit.optimize(mod, self._opt_level)
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


#: Kernel kinds whose code measurably gains from LLVM's O3 pipeline over O2 (LeNet's convolutions:
#: 5-10%). Elsewhere (MLP, transformer block, softmax, layer norm, GEMM) O3 ran no
#: faster than O2 but took 35-45% longer to optimize and up to 60% longer to emit.
O3_KINDS = frozenset({"conv"})


def pipeline_level(program: Program, opt_level: int) -> int:
    """The highest LLVM pipeline level :func:`compile_program` runs on a part of ``program`` when
    asked for ``opt_level`` (see :func:`part_levels`); the level of the lazily rebuilt sources."""
    return max(part_levels(program, opt_level))


def split_kernels(program: Program) -> frozenset[int]:
    """Indices of the kernels :func:`compile_program` compiles in modules of their own."""
    return frozenset(i for i, k in enumerate(program.kernels) if getattr(k, "kind", None) in O3_KINDS)


def part_levels(program: Program, opt_level: int) -> list[int]:
    """The pipeline level of each module of ``build_parts(program, ..., split_kernels(program))``:
    ``opt_level`` for the kernels split off, at most 2 for the last module (the rest)."""
    return [opt_level] * len(split_kernels(program)) + [min(opt_level, 2)]


def _object_code(program: Program, name: str, opt_level: int, threads: int) -> tuple[list[str], bytes]:
    parts, symbols = build_parts(program, name, threads, split_kernels(program))
    return symbols, jit.compile_parts([str(m) for m in parts], part_levels(program, opt_level))


def compile_program(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2,
                    object_code: bytes | None = None) -> LLVMModule:
    """JIT-compile ``program`` for the host CPU.

    With ``object_code`` (from :func:`emit_object` or ``LLVMModule.object_code`` of the
    same program, name, threads and host), nothing is built: the object code is
    loaded. Either way the IR is constructed only when a source is first requested.
    ``opt_level`` is an upper bound: see :func:`part_levels`.
    """
    level = pipeline_level(program, opt_level)
    if object_code is None:
        symbols, object_code = _object_code(program, name, opt_level, threads)
    else:
        symbols = [kernel_symbol(name, i, k) for i, k in enumerate(program.kernels)]
    return LLVMModule(name, lambda: str(build_module(program, name, threads)[0]), symbols, object_code, None,
                      level)


def emit_object(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2) -> bytes:
    """The object image of ``program`` (what an on-disk cache stores; see :func:`jit.pack_objects`)."""
    return _object_code(program, name, opt_level, threads)[1]
