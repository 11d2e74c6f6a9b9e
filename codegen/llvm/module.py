"""compile_program / emit_object and the compiled-module handle."""
from __future__ import annotations

import re
from collections.abc import Callable

from minicomp.codegen.llvm import jit
from minicomp.codegen.llvm.entry import build_module, kernel_symbol
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

    Keep this object alive while calling ``entry_address``. ``llvm_ir`` is the
    optimized IR; when built from cached ``object_code`` the optimized IR and
    assembly are produced lazily from the unoptimized IR on first request.
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
#: about 8% at batch 32). Elsewhere (MLP, transformer block, softmax, layer norm, GEMM) O3 ran no
#: faster than O2 but took 35-45% longer to optimize and up to 60% longer to emit.
O3_KINDS = frozenset({"conv"})


def pipeline_level(program: Program, opt_level: int) -> int:
    """The LLVM pipeline level :func:`compile_program` runs for ``program`` when asked for ``opt_level``:
    ``opt_level``, but at most 2 unless a kernel of a kind in :data:`O3_KINDS` is present."""
    if opt_level >= 3 and not any(getattr(k, "kind", None) in O3_KINDS for k in program.kernels):
        return 2
    return opt_level


def _build(program: Program, name: str, opt_level: int, threads: int):
    module, symbols = build_module(program, name, threads)
    unopt = str(module)
    mod = jit.parse(unopt)
    jit.optimize(mod, pipeline_level(program, opt_level))
    return unopt, symbols, mod


def compile_program(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2,
                    object_code: bytes | None = None) -> LLVMModule:
    """JIT-compile ``program`` for the host CPU.

    With ``object_code`` (from :func:`emit_object` or ``LLVMModule.object_code`` of the
    same program, name, threads and host), nothing is built: the object code is
    loaded, and the IR is constructed only when a source is first requested.
    ``opt_level`` is an upper bound: see :func:`pipeline_level`.
    """
    level = pipeline_level(program, opt_level)
    if object_code is not None:
        symbols = [kernel_symbol(name, i, k) for i, k in enumerate(program.kernels)]
        return LLVMModule(name, lambda: str(build_module(program, name, threads)[0]), symbols, object_code,
                          None, level)
    unopt, symbols, mod = _build(program, name, opt_level, threads)
    return LLVMModule(name, unopt, symbols, jit.emit_object(mod), str(mod), level)


def emit_object(program: Program, *, name: str = "main", opt_level: int = 3, threads: int = 2) -> bytes:
    """The optimized object-file image of ``program`` (what an on-disk cache stores)."""
    _, _, mod = _build(program, name, opt_level, threads)
    return jit.emit_object(mod)
