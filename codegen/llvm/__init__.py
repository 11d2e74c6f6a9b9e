"""CPU backend: kernel descriptions -> LLVM IR (llvmlite IRBuilder) -> host machine code (MCJIT).

Where to read: :mod:`.dispatch` holds the one table that picks, per kernel kind, a fast path
or the plain reference path; :mod:`.scalar` (expressions) and :mod:`.loops` (loop nests) are
the core every kernel's epilogue shares; :mod:`.entry` and :mod:`.module` assemble and compile a
program; :mod:`.runtime` (JIT and object loading, the shared GEMM library, the thread pool,
huge pages) makes the machine code run.

Public API:

* :func:`compile_program` -> :class:`LLVMModule` with ``entry_address`` of
  ``i32 entry(void** args)`` (``args`` = ``[inputs..., outputs..., constants...]``
  data pointers; returns 0, or 1 if the arena could not be allocated), sources
  (``source("llvm" | "llvm-unopt" | "asm")``), ``kernel_sources`` and ``object_code``.
* :func:`emit_object` -> the object-file image for an on-disk cache. Passing those bytes
  back as ``compile_program(..., object_code=...)`` skips LLVM optimization and code
  generation: the image is loaded with ``ExecutionEngine.add_object_file``.
* :func:`kn_weight`: the backend's answer to the layout pass (store a linear's constant
  weight as ``[k, n]``?), handed to the passes by the driver as option ``kn_weight``.
* :func:`attention_fits`: whether this backend has an attention kernel for given sizes,
  handed to the passes as option ``attention_kernel`` (the ``fuse-attention`` pass).
"""
from minicomp.codegen.llvm.attention import attention_fits
from minicomp.codegen.llvm.matmul import kn_weight
from minicomp.codegen.llvm.module import LLVMModule, compile_program, emit_object

__all__ = ["LLVMModule", "attention_fits", "compile_program", "emit_object", "kn_weight"]
