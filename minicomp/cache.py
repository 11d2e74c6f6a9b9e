"""On-disk cache of compiled object code.

Entries live in a private directory (``$MINICOMP_CACHE_DIR`` or
``~/.cache/minicomp``, created with mode 0o700) under the sha256 of everything
that affects the machine code (:func:`cache_key`: the program, target, options,
host CPU name and features, the backend's source files, and the versions of
minicomp, llvmlite and Python). Each file is::

    b"MCOBJ1\\n" + sha256(payload) as 64 hex digits + b"\\n" + len(payload) as 16 digits + b"\\n" + payload

written to a temporary file and moved into place with ``os.replace`` (readers
never see half an entry). :func:`load` verifies magic, length and hash; an entry
that fails is deleted and ``None`` returned, so the caller recompiles: corrupt
code is never executed. Nothing is pickled.

Besides object code (``KEY.obj``) the directory holds compiled-model entries
(``KEY.model`` + ``KEY.graph``, same framing) keyed by
:func:`minicomp.model_key.model_key`: :func:`lookup_model` returns everything a
compile needs (Program, object code, output structure) without tracing; and the
thread pool's object code (``KEY.pool``, :func:`install_pool`), so a fresh process
does not JIT-compile the pool; and the shared GEMM library's (``KEY.lib``, keyed by
:func:`library_key`), which :func:`install_pool` lets the code generator read and write.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MCOBJ1\n"
#: Entry kinds (file suffixes): object code, compiled-model records (:func:`store_model`), their graph
#: text, the thread pool's object code (:func:`install_pool`) and the shared GEMM library's.
_SUFFIXES = (".obj", ".model", ".graph", ".pool", ".lib")
_HEADER = len(MAGIC) + 65 + 17


def cache_dir() -> Path:
    """The cache directory, created private (0o700) if missing."""
    path = Path(os.environ.get("MINICOMP_CACHE_DIR") or Path.home() / ".cache" / "minicomp")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def host_description() -> str:
    """CPU name and features of this host (what the object code was tuned for)."""
    import llvmlite.binding as llvm
    return f"{llvm.get_host_cpu_name()};{llvm.get_host_cpu_features().flatten()};{llvm.get_default_triple()}"


def backend_fingerprint() -> str:
    """sha256 of the CPU backend's source files, so editing the code generator (during
    development the version number does not change) never reuses stale object code."""
    from minicomp.codegen import llvm as backend
    from minicomp.ir import kernel
    h = hashlib.sha256()
    files = sorted(Path(backend.__file__).parent.glob("*.py")) + [Path(kernel.__file__)]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(*parts: str) -> str:
    """sha256 over ``parts`` plus the host CPU, the backend's source and the versions of
    minicomp, llvmlite and Python."""
    import llvmlite

    import minicomp
    h = hashlib.sha256()
    for p in (*parts, host_description(), backend_fingerprint(), minicomp.__version__, llvmlite.__version__,
              sys.version):
        data = p.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def pool_key(ir_text: str) -> str:
    """Cache key of the thread pool's object code (:mod:`minicomp.codegen.llvm.threadpool`).

    sha256 over the pool's IR text, the llvmlite and LLVM versions, the target triple
    and the host CPU name and features: everything its machine code depends on.
    """
    return _runtime_key("minicomp thread pool, O2", ir_text)


def library_key(ir_text: str) -> str:
    """Cache key of the shared GEMM library's object code (:mod:`minicomp.codegen.llvm.library`):
    like :func:`pool_key`, over the library module's IR text and its optimization level."""
    from minicomp.codegen.llvm import library
    return _runtime_key(f"minicomp GEMM library, O{library.LEVEL}", ir_text)


def _runtime_key(domain: str, ir_text: str) -> str:
    import llvmlite
    import llvmlite.binding as llvm
    h = hashlib.sha256()
    for p in (domain, ir_text, llvmlite.__version__, repr(llvm.llvm_version_info), host_description()):
        data = p.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _store_library(ir_text: str, object_code: bytes) -> None:
    store(library_key(ir_text), object_code, ".lib")


def install_pool() -> None:
    """Load the per-process thread pool from cached object code (compiling and caching it on a miss).

    A fresh process serving a compile from the cache then skips the pool's LLVM
    compile. A corrupt entry is deleted by :func:`load` and recompiled; a
    read-only or full cache directory only costs the compile. No-op once installed.
    Also points the shared GEMM library (:mod:`minicomp.codegen.llvm.library`) at ``KEY.lib``
    entries, so its functions too are compiled once per cache, not once per process.
    """
    from minicomp.codegen.llvm import library, threadpool
    library.use_disk_cache(lambda text: load(library_key(text), ".lib"), _store_library)
    if not threadpool.supported() or threadpool.installed():
        return
    text = threadpool.pool_ir()
    key = pool_key(text)
    obj = load(key, ".pool")
    if obj is None:
        obj = threadpool.compile_object(text)
        try:
            store(key, obj, ".pool")
        except OSError:
            pass
    threadpool.load_object(obj)


def _path(key: str, suffix: str = ".obj") -> Path:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"bad cache key {key!r}")
    if suffix not in _SUFFIXES:
        raise ValueError(f"bad cache entry kind {suffix!r}")
    return cache_dir() / f"{key}{suffix}"


def load(key: str, suffix: str = ".obj") -> bytes | None:
    """The payload stored under ``key`` (an entry of kind ``suffix``: ".obj", ".model", ".graph",
    ".pool" or ".lib"), or None (missing, or corrupt and now deleted)."""
    path = _path(key, suffix)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    payload = _verify(data)
    if payload is None:
        try:
            path.unlink()
        except OSError:
            pass
    return payload


def _verify(data: bytes) -> bytes | None:
    if len(data) < _HEADER or not data.startswith(MAGIC):
        return None
    digest = data[len(MAGIC):len(MAGIC) + 64].decode("ascii", "replace")
    try:
        length = int(data[len(MAGIC) + 65:len(MAGIC) + 81])
    except ValueError:
        return None
    payload = data[_HEADER:]
    if len(payload) != length or hashlib.sha256(payload).hexdigest() != digest:
        return None
    return payload


def store(key: str, payload: bytes, suffix: str = ".obj") -> None:
    """Write ``payload`` under ``key`` (entry kind ``suffix``) atomically (temp file + os.replace)."""
    path = _path(key, suffix)
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + f"{len(payload):016d}".encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- compiled-model entries ------------------------------------------------------------------
# A ".model" entry lets a compile skip tracing, passes, lowering and LLVM IR construction
# (see :func:`lookup_model`). Its payload is an 8-byte little-endian length, a JSON header
# of that length, then raw blobs the header points to as [offset, length] (offsets from the
# end of the header): the Program JSON (:mod:`minicomp.ir.kernel_io`), each constant's raw
# bytes, and the zlib-compressed unoptimized LLVM IR. The object code is NOT copied: the
# header names its ".obj" entry, which must load and verify too (one copy on disk, and a
# corrupt object entry still forces a full recompile). The final graph's text lives in a
# ".graph" entry under the same key, read only when asked for (:meth:`CachedModel.load_graph`).
MODEL_FORMAT = "minicomp.model/1"


@dataclass
class CachedModel:
    """What :func:`lookup_model` found: everything the driver needs to run without compiling."""

    key: str
    program: Any                     # minicomp.ir.kernel.Program, constants included
    object_code: bytes
    name: str                        # entry symbol
    symbols: list[str]               # kernel symbols, in Program order
    unopt_ir: str                    # unoptimized LLVM IR text (for sources)
    threads: int
    opt_level: int
    out_spec: str | None             # torch pytree treespec_dumps text (None: a flat list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def unflatten(self) -> Callable[[list], Any]:
        """Flat outputs -> the traced model's output structure (a single tensor for a leaf)."""
        if self.out_spec is None:
            return list
        import torch.utils._pytree as pytree
        spec = pytree.treespec_loads(self.out_spec)
        if spec.is_leaf():
            return lambda outs: outs[0]
        return lambda outs: pytree.tree_unflatten(list(outs), spec)

    def load_module(self):
        """The loaded :class:`~minicomp.codegen.llvm.LLVMModule` (object code mapped; no IR built)."""
        from minicomp.codegen.llvm import LLVMModule
        from minicomp.codegen.llvm.module import pipeline_level
        install_pool()
        return LLVMModule(self.name, self.unopt_ir, list(self.symbols), self.object_code, None,
                          pipeline_level(self.program, self.opt_level))

    def load_graph(self):
        """The final IR graph (after passes), parsed from its ".graph" entry; None if that is gone."""
        payload = load(self.key, ".graph")
        if payload is None:
            return None
        from minicomp.ir.parser import parse
        return parse(zlib.decompress(payload).decode())


def store_model(key: str, *, program: Any, module: Any, obj_key: str, threads: int, opt_level: int,
                out_spec: Any = None, graph: Any = None, notes: Sequence[str] = (),
                extra: dict[str, Any] | None = None) -> bool:
    """Record a compiled model under ``key`` (from :func:`minicomp.model_key.model_key`).

    ``module`` is the :class:`LLVMModule` of ``program`` whose object code is (or is now)
    stored under ``obj_key``; ``out_spec`` a torch ``TreeSpec`` (or its
    ``treespec_dumps`` text, or None for a flat list); ``graph`` the final IR graph;
    ``extra`` JSON-serializable driver data. Returns False, storing nothing, when the
    output structure or the program cannot be serialized (e.g. an unregistered
    namedtuple). OSError from a read-only or full disk propagates.
    """
    from minicomp.ir.kernel_io import program_to_json
    if out_spec is not None and not isinstance(out_spec, str):
        import torch.utils._pytree as pytree
        try:
            out_spec = pytree.treespec_dumps(out_spec)
        except (NotImplementedError, TypeError, ValueError):
            return False
    try:
        program_json, constants = program_to_json(program)
    except TypeError:
        return False
    blobs: list[bytes] = []
    offset = 0

    def add(data: bytes) -> list[int]:
        nonlocal offset
        blobs.append(data)
        offset += len(data)
        return [offset - len(data), len(data)]

    header = {"format": MODEL_FORMAT, "obj_key": obj_key, "name": module.name, "symbols": list(module.symbols),
              "threads": int(threads), "opt_level": int(opt_level), "out_spec": out_spec, "notes": list(notes),
              "extra": extra or {}, "program": add(program_json.encode()),
              "constants": [[*add(c.tobytes()), c.dtype.str, list(c.shape)] for c in constants],
              "unopt_ir": add(zlib.compress(module.source("llvm-unopt").encode(), 1))}
    head = json.dumps(header, separators=(",", ":")).encode()
    if graph is not None:
        from minicomp.ir.printer import print_graph
        store(key, zlib.compress(print_graph(graph).encode(), 1), ".graph")
    if not _path(obj_key).exists():
        store(obj_key, module.object_code)
    store(key, len(head).to_bytes(8, "little") + head + b"".join(blobs), ".model")
    return True


def lookup_model(key: str) -> CachedModel | None:
    """The model stored under ``key``, or None: missing, corrupt (the entry is then deleted),
    written by another format version, or its object-code entry missing or corrupt."""
    payload = load(key, ".model")
    if payload is None:
        return None
    try:
        return _decode_model(key, payload)
    except (ValueError, KeyError, TypeError, IndexError, zlib.error, UnicodeDecodeError):
        _discard(key, ".model")  # verified bytes we cannot read: an older or foreign format
        return None


def _decode_model(key: str, payload: bytes) -> CachedModel | None:
    from minicomp.ir.kernel_io import program_from_json
    n = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + n])
    if header.get("format") != MODEL_FORMAT:
        raise ValueError("unknown model entry format")
    data = memoryview(payload)[8 + n:]

    def blob(ref: list[int]) -> memoryview:
        start, length = ref
        if start < 0 or length < 0 or start + length > len(data):
            raise ValueError("blob out of range")
        return data[start:start + length]

    constants = []
    for start, length, dtype, shape in header["constants"]:
        # A writable copy: the runtime hands these to torch.from_numpy.
        arr = np.frombuffer(blob([start, length]), dtype=np.dtype(dtype)).copy()
        constants.append(arr.reshape(shape))
    program = program_from_json(bytes(blob(header["program"])).decode(), constants)
    object_code = load(header["obj_key"])
    if object_code is None:
        return None
    return CachedModel(key, program, object_code, header["name"], list(header["symbols"]),
                       zlib.decompress(blob(header["unopt_ir"])).decode(), header["threads"], header["opt_level"],
                       header["out_spec"], list(header["notes"]), dict(header["extra"]))


def _discard(key: str, suffix: str) -> None:
    try:
        _path(key, suffix).unlink()
    except OSError:
        pass
