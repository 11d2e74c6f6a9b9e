"""Ahead-of-time compilation of a generated module's kernels for an NVIDIA GPU, without one.

Each kernel is compiled with ``triton.compile(ASTSource(fn, signature, constexprs),
target=GPUTarget("cuda", arch, 32))``; the signature maps every pointer parameter
to its type string (``"*fp32"``) and each block-size parameter to ``"constexpr"``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field

from minicomp.codegen.triton import ops
from minicomp.codegen.triton.module import TritonModule, _import


@dataclass
class AotResult:
    """Outcome of compiling one kernel: ``ok`` with PTX/cubin sizes, or the error text."""

    kernel: str
    ok: bool
    error: str = ""
    ptx_bytes: int = 0
    cubin_bytes: int = 0
    ptx: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        """The kernel's name (same as ``kernel``)."""
        return self.kernel


def kernel_signature(k) -> tuple[dict[str, str], dict[str, int]]:
    """(signature, constexprs) of one KernelSource in the form ``ASTSource`` takes."""
    sig = {p: ops.PTR_SIG[dt] for p, dt in k.params}
    sig.update({b: "constexpr" for b, _ in k.config.blocks})
    return sig, dict(k.config.blocks)


def aot_compile(module: TritonModule, arch: int = 90) -> list[AotResult]:
    """Compile every kernel of ``module`` for ``sm_{arch}``; failures are reported per kernel.

    Compilation needs a process in Triton's compiler mode from the start. Whenever
    this one is not (``TRITON_INTERPRET`` is set, ``triton.language`` was imported
    under the interpreter, or the interpreter left it patched), the kernels are
    compiled in a fresh Python subprocess without the flag; this process's
    environment and modules are never changed.
    """
    jobs = [(k.name, *kernel_signature(k), k.config.num_warps) for k in module.kernels]
    if compiler_mode_process():
        return _compile(module.source, module.name, jobs, arch)
    return _compile_in_subprocess(module, jobs, arch)


def compiler_mode_process() -> bool:
    """True when this process can compile Triton kernels in place (no interpreter state at all)."""
    import triton
    import triton.language as tl
    from triton.runtime.jit import JITFunction
    if triton.knobs.runtime.interpret or not isinstance(tl.cdiv, JITFunction):
        return False  # the flag is set, or triton.language's own @jit helpers were built interpreted
    return not any("_patch_attr" in getattr(getattr(tl.core, n, None), "__qualname__", "")
                   for n in ("program_id", "arange", "load", "store", "full", "reduce"))


def _compile(source: str, name: str, jobs, arch: int) -> list[AotResult]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod = _import(source, name, "_aot")  # only ever in a compiler-mode process
    results = []
    for kname, sig, constexprs, warps in jobs:
        try:
            src = ASTSource(fn=getattr(mod, kname), signature=sig, constexprs=constexprs)
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
            ptx = compiled.asm.get("ptx", "")
            results.append(AotResult(kname, True, ptx_bytes=len(ptx),
                                     cubin_bytes=len(compiled.asm.get("cubin", b"")), ptx=ptx))
        except Exception as exc:  # report, do not crash: one bad kernel must not hide the others
            results.append(AotResult(kname, False, error=f"{type(exc).__name__}: {exc}"))
    return results


def _compile_in_subprocess(module: TritonModule, jobs, arch: int) -> list[AotResult]:
    request = json.dumps({"source": module.source, "name": module.name, "jobs": jobs, "arch": arch})
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "minicomp.codegen.triton.aot"], input=request,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        error = f"AOT subprocess failed: {proc.stderr.strip()[-2000:]}"
        return [AotResult(j[0], False, error=error) for j in jobs]
    return [AotResult(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


if __name__ == "__main__":  # the subprocess side of _compile_in_subprocess
    req = json.loads(sys.stdin.read())
    out = _compile(req["source"], req["name"], [tuple(j) for j in req["jobs"]], req["arch"])
    print(json.dumps([asdict(r) for r in out]))
