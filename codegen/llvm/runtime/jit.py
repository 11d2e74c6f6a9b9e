"""LLVM plumbing: host target machine, the O2/O3 pipelines, object code, MCJIT loading.

Compilation always goes IR -> optimized IR -> object file(s) -> MCJIT
(``engine.add_object_file``), so a compile and a load from cached object code
take the same path; the object bytes are what an on-disk cache stores.

:func:`compile_parts` compiles the modules of one program on several host cores at
once: each part gets its own LLVM context, target machine and pass builder, and
the two long calls (the optimization pipeline and object emission) run outside
llvmlite's global lock (which otherwise serializes every LLVM call of the process).
Several objects are packed into one image (:func:`pack_objects`); a single
object stays a plain ELF image.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import llvmlite.binding as llvm
from llvmlite.binding import ffi


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
    pb = _pipeline(host_target_machine(), opt_level)
    pb.getModulePassManager().run(mod, pb)


def _pipeline(tm: llvm.TargetMachine, opt_level: int):
    pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    return llvm.create_pass_builder(tm, pto)


def _unlocked(name: str):
    """The C function ``name`` of llvmlite's library without its global lock (the lock-taking
    wrapper where this llvmlite has no unwrapped function: compiling is then serialized)."""
    fn = getattr(ffi.lib, name)
    return getattr(fn, "_cfn", fn)


def _compile_part(texts: str | list[str], opt_level: int) -> bytes:
    """Parse and verify the module(s) ``texts`` in a private LLVM context, link them into one,
    optimize (``opt_level``) and emit it; safe to run on several threads at once."""
    host_target_machine()  # the native target is initialized (once) before any thread needs it
    ctx = llvm.create_context()
    tm = new_target_machine()
    mod = None
    try:
        for text in [texts] if isinstance(texts, str) else texts:
            part = llvm.parse_assembly(text, context=ctx)
            part.triple = tm.triple
            part.data_layout = str(tm.target_data)
            part.verify()
            if mod is None:
                mod = part
            else:
                mod.link_in(part)  # internal names that clash are renamed; part is consumed
        if opt_level > 0:
            pb = _pipeline(tm, opt_level)
            mpm = pb.getModulePassManager()
            _unlocked("LLVMPY_RunNewModulePassManager")(mpm, mod, pb)
            mpm.close()  # with the analyses cached on the module: before the module goes
            pb.close()
        with ffi.OutputString() as err:
            buf = _unlocked("LLVMPY_TargetMachineEmitToMemory")(tm, mod, 1, err)
            if not buf:
                raise RuntimeError(f"LLVM object emission failed: {err}")
        try:
            return ctypes.string_at(ffi.lib.LLVMPY_GetBufferStart(buf), ffi.lib.LLVMPY_GetBufferSize(buf))
        finally:
            ffi.lib.LLVMPY_DisposeMemoryBuffer(buf)
    finally:
        if mod is not None:
            mod.close()  # before its context
        ctx.close()


def compile_workers() -> int:
    """Threads :func:`compile_parts` uses at most: the host cores this process may run on (<= 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def compile_objects(parts: list[str | list[str]], levels: list[int], workers: int | None = None) -> list[bytes]:
    """The object file of each part (IR text, or several texts linked into one module; part ``i``
    optimized at ``levels[i]``), compiled on up to ``workers`` threads (default
    :func:`compile_workers`), largest part first. Raises ``RuntimeError`` on IR that does not
    verify or cannot be compiled."""
    if len(parts) != len(levels):
        raise ValueError(f"{len(parts)} modules but {len(levels)} optimization levels")
    if not parts:
        return []
    workers = min(workers or compile_workers(), len(parts))
    sizes = [len(p) if isinstance(p, str) else sum(map(len, p)) for p in parts]
    order = sorted(range(len(parts)), key=lambda i: -sizes[i])
    if workers <= 1:
        objs = {i: _compile_part(parts[i], levels[i]) for i in order}
    else:
        host_target_machine()
        with ThreadPoolExecutor(workers, thread_name_prefix="minicomp-llvm") as ex:
            futs = {i: ex.submit(_compile_part, parts[i], levels[i]) for i in order}
            objs = {i: f.result() for i, f in futs.items()}
    return [objs[i] for i in range(len(parts))]


def compile_parts(texts: list[str | list[str]], levels: list[int], workers: int | None = None) -> bytes:
    """The object image (:func:`pack_objects`) of :func:`compile_objects` ``(texts, levels, workers)``.
    Symbols one part declares and another defines are resolved when :class:`Loaded` loads the
    image; the shared GEMM functions (:mod:`.library`) when it is loaded."""
    return pack_objects(compile_objects(texts, levels, workers))


_PACK_MAGIC = b"MCOBJS\x00\x01"


def pack_objects(objects: list[bytes]) -> bytes:
    """One image holding ``objects``: the object itself when there is one, else a header
    (magic, count, sizes) followed by the objects."""
    if len(objects) == 1:
        return objects[0]
    head = _PACK_MAGIC + struct.pack(f"<I{len(objects)}Q", len(objects), *map(len, objects))
    return head + b"".join(objects)


def unpack_objects(image: bytes) -> list[bytes]:
    """The object files of an image from :func:`pack_objects` (or of a plain object file)."""
    if not image.startswith(_PACK_MAGIC):
        return [image]
    at = len(_PACK_MAGIC)
    (count,) = struct.unpack_from("<I", image, at)
    sizes = struct.unpack_from(f"<{count}Q", image, at + 4)
    at += 4 + 8 * count
    out = []
    for n in sizes:
        out.append(image[at:at + n])
        at += n
    if at != len(image) or any(len(o) != n for o, n in zip(out, sizes)):
        raise ValueError("corrupt packed object image")
    return out


def emit_object(mod: llvm.ModuleRef) -> bytes:
    """Machine code for ``mod`` as an ELF object image."""
    return host_target_machine().emit_object(mod)


def emit_assembly(mod: llvm.ModuleRef) -> str:
    """Assembly text for ``mod``."""
    return host_target_machine().emit_assembly(mod)


_SHT_SYMTAB = 2


def undefined_symbols(obj: bytes) -> list[str]:
    """Names of the undefined (imported) symbols of an ELF64 little-endian object file; [] for
    anything else (other formats resolve only what the process already provides)."""
    if len(obj) < 64 or obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return []
    try:
        shoff, = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
        names = []
        for _, stype, _, _, off, size, link, _, _, entsize in sections:
            if stype != _SHT_SYMTAB or entsize < 24:
                continue
            stroff, strsize = sections[link][4], sections[link][5]
            for at in range(off, off + size - entsize + 1, entsize):
                st_name, _, _, shndx = struct.unpack_from("<IBBH", obj, at)
                if shndx == 0 and 0 < st_name < strsize:
                    end = obj.index(b"\0", stroff + st_name, stroff + strsize)
                    names.append(obj[stroff + st_name:end].decode("ascii", "replace"))
        return names
    except (struct.error, IndexError, ValueError):
        raise ValueError("corrupt ELF object file") from None


class Loaded:
    """An MCJIT engine holding one object image (one object file or several packed by
    :func:`pack_objects`, linked together); keep it alive while calling into it.

    With ``with_pool`` (every program image) the thread pool and the shared GEMM functions
    the image imports (:mod:`.library`) are made available first."""

    def __init__(self, object_code: bytes, *, with_pool: bool = True) -> None:
        if with_pool:
            from minicomp.codegen.llvm.runtime import threadpool
            threadpool.install()  # the symbols parallel kernels call
        self._data = unpack_objects(object_code)
        imported = {n for o in self._data for n in undefined_symbols(o)}
        if with_pool:
            from minicomp.codegen.llvm.runtime import library
            library.ensure(imported)
        tm = new_target_machine()  # the engine takes ownership of (and later frees) it
        empty = llvm.parse_assembly("")
        empty.triple = tm.triple
        self.engine = llvm.create_mcjit_compiler(empty, tm)
        # The engine may reference the images and the ObjectFileRefs: keep them alive with it.
        self._objs = [llvm.ObjectFileRef.from_data(o) for o in self._data]
        for obj in self._objs:
            self.engine.add_object_file(obj)
        self.engine.finalize_object()
        # MCJIT binds a symbol it cannot resolve to address 0, so a call would jump there:
        # refuse the image instead.
        unresolved = sorted(n for n in imported
                            if not self.engine.get_function_address(n) and not llvm.address_of_symbol(n))
        if unresolved:
            raise RuntimeError(f"compiled code imports symbols this process does not define: {unresolved}")

    def address(self, name: str) -> int:
        """Address of the exported function ``name`` (raises KeyError when missing)."""
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"symbol {name!r} not found in compiled object")
        return addr
