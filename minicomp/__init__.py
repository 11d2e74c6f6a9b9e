"""minicomp: a small, readable deep-learning compiler.

PyTorch in (``trace``), a graph IR, optimization passes, and native code out:
LLVM through llvmlite for the CPU, Triton for NVIDIA GPUs.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["trace", "compile", "interpret", "UnsupportedOpError", "CompileError", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import minicomp.ir` never pays for importing torch.
    if name == "trace":
        from minicomp.frontend import trace
        return trace
    if name == "compile":
        from minicomp.driver import compile
        return compile
    if name == "interpret":
        from minicomp.ir.interpreter import interpret
        return interpret
    if name in ("UnsupportedOpError", "CompileError"):
        from minicomp import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'minicomp' has no attribute {name!r}")
