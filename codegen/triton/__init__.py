"""Triton backend: kernel descriptions (``minicomp.ir.kernel``) to Triton GPU kernels.

``generate(program)`` gives a :class:`TritonModule` whose ``source`` is one
standalone Python module (kernels plus a ``run(*args)`` launcher) and whose
``load()`` returns ``run``; ``aot_compile(module, arch)`` compiles every kernel for
``sm_{arch}`` without needing a GPU. Set ``TRITON_INTERPRET=1`` before loading to
run the kernels on CPU tensors with Triton's interpreter. ``attention_fits`` tells the
``fuse-attention`` pass (option ``attention_kernel``) where this backend has an attention kernel.
"""
from minicomp.codegen.triton.aot import AotResult, aot_compile, kernel_signature
from minicomp.codegen.triton.attention import attention_fits
from minicomp.codegen.triton.module import TritonModule, emit_kernel, generate

__all__ = ["AotResult", "TritonModule", "aot_compile", "attention_fits", "emit_kernel", "generate", "kernel_signature"]
