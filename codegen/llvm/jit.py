"""LLVM plumbing: host target machine, the O2/O3 pipelines, object code, MCJIT loading.

Compilation always goes IR -> optimized IR -> object file -> MCJIT
(``engine.add_object_file``), so a compile and a load from cached object code
take the same path; the object bytes are what an on-disk cache stores.
"""
from __future__ import annotations

import functools

import llvmlite.binding as llvm


@functools.lru_cache(maxsize=None)
def host_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """A shared target machine for the host CPU (never hand it to an engine: engines own theirs)."""
    return new_target_machine(opt_level)


def new_target_machine(opt_level: int = 3) -> llvm.TargetMachine:
    """A fresh target machine for the host CPU (its name and features, e.g. AVX2 / AVX-512)."""
    target, cpu, features = _host_target()
    return target.create_target_machine(cpu=cpu, features=features, opt=opt_level, codemodel="jitdefault",
                                        reloc="default")


@functools.lru_cache(maxsize=None)
def _host_target() -> tuple[llvm.Target, str, str]:
    """The native target (initialized once), host CPU name and feature string."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.Target.from_default_triple(), llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@functools.lru_cache(maxsize=None)
def host_vector_bits() -> int:
    """Widest SIMD register width of the host in bits (512 with AVX-512F, else 256 or 128)."""
    feats = llvm.get_host_cpu_features()
    if feats.get("avx512f"):
        return 512
    if feats.get("avx"):
        return 256
    return 128


def parse(ir_text: str) -> llvm.ModuleRef:
    """Parse and verify textual LLVM IR."""
    tm = host_target_machine()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod


def optimize(mod: llvm.ModuleRef, opt_level: int = 3) -> None:
    """Run the standard new-pass-manager pipeline at ``opt_level`` on ``mod`` in place."""
    if opt_level <= 0:
        return
    tm = host_target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def emit_object(mod: llvm.ModuleRef) -> bytes:
    """Machine code for ``mod`` as an ELF object image."""
    return host_target_machine().emit_object(mod)


def emit_assembly(mod: llvm.ModuleRef) -> str:
    """Assembly text for ``mod``."""
    return host_target_machine().emit_assembly(mod)


class Loaded:
    """An MCJIT engine holding one object image; keep it alive while calling into it."""

    def __init__(self, object_code: bytes, *, with_pool: bool = True) -> None:
        if with_pool:
            from minicomp.codegen.llvm import threadpool
            threadpool.install()  # the symbols parallel kernels call
        tm = new_target_machine()  # the engine takes ownership of (and later frees) it
        empty = llvm.parse_assembly("")
        empty.triple = tm.triple
        self.engine = llvm.create_mcjit_compiler(empty, tm)
        # The engine may reference the image and the ObjectFileRef: keep both alive with it.
        self._data = object_code
        self._obj = llvm.ObjectFileRef.from_data(object_code)
        self.engine.add_object_file(self._obj)
        self.engine.finalize_object()

    def address(self, name: str) -> int:
        """Address of the exported function ``name`` (raises KeyError when missing)."""
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"symbol {name!r} not found in compiled object")
        return addr
