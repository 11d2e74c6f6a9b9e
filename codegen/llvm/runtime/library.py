"""The process-wide library of shared GEMM functions (:mod:`..gemm_shared`), compiled once per process.

Kernel modules only *declare* the functions of :mod:`..gemm_shared` (names starting with
:data:`~..gemm_shared.PREFIX`); this module defines them in a library module of their own
(:func:`library_ir`), compiles it once per process (or loads its object code from a disk
cache), keeps its engine alive and registers each function with ``llvm.add_symbol`` so
that MCJIT resolves the kernels' calls. A program's object code can then be split into
parts compiled in parallel without each part compiling its own copy of the GEMM helpers
(a micro / packa / packb set is the largest single piece of O2 work a program asks for).

:func:`ensure` is what :class:`~.jit.Loaded` calls before loading an image: the names
come from the image's undefined symbols (:func:`~.jit.undefined_symbols`), so object code
read from a cache needs nothing else. :func:`use_disk_cache` lets the caller (the
driver's cache, outside the code generator) supply a verified store for the library's
object code; without it the library is compiled in-process.

Process-wide state (like :mod:`.threadpool`'s): the loaded engines, the names they
define and the optional disk-cache hooks, guarded by one lock.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import llvmlite.binding as llvm

from minicomp.codegen.llvm import gemm_shared

#: Optimization level the library is compiled at (O3 ran no faster on the GEMM helpers).
LEVEL = 2

_LOCK = threading.RLock()
_DEFINED: dict[str, int] = {}           # name -> address, for every function loaded so far
_KEEP: list = []                        # the library engines live as long as the process
_CACHE: list[tuple[Callable[[str], bytes | None], Callable[[str, bytes], None]]] = []


def is_library_symbol(name: str) -> bool:
    """True for the names this library defines (and kernel modules declare)."""
    return name.startswith(gemm_shared.PREFIX)


def missing(names: Iterable[str]) -> list[str]:
    """The library symbols among ``names`` not yet loaded in this process, sorted, unique."""
    with _LOCK:
        return sorted({n for n in names if is_library_symbol(n) and n not in _DEFINED})


def library_ir(names: Iterable[str]) -> str:
    """IR text of a module defining ``names`` (external linkage); ValueError on a foreign name."""
    module = gemm_shared.LibraryModule(name="minicomp_gemm_lib")
    for n in sorted(set(names)):
        gemm_shared.define(module, n)
    return str(module)


def use_disk_cache(load: Callable[[str], bytes | None], store: Callable[[str, bytes], None]) -> None:
    """Read (``load(ir_text)`` -> verified object code or None) and write (``store(ir_text, obj)``)
    the library's object code through these functions from now on (the last call wins)."""
    with _LOCK:
        _CACHE[:] = [(load, store)]


def cached_object(text: str) -> bytes | None:
    """The disk cache's object code for library text ``text`` (None: no cache, or a miss)."""
    with _LOCK:
        hooks = list(_CACHE)
    return hooks[0][0](text) if hooks else None


def remember_object(text: str, object_code: bytes) -> None:
    """Store freshly compiled library object code in the disk cache (an OSError only costs a recompile)."""
    with _LOCK:
        hooks = list(_CACHE)
    if hooks:
        try:
            hooks[0][1](text, object_code)
        except OSError:
            pass


def install(names: Iterable[str], object_code: bytes) -> None:
    """Load ``object_code`` (of :func:`library_ir` of ``names``) and register its functions;
    names already loaded (e.g. by another thread meanwhile) keep their first definition."""
    from minicomp.codegen.llvm.runtime import jit
    names = list(names)
    with _LOCK:
        loaded = jit.Loaded(object_code, with_pool=False)
        _KEEP.append(loaded)
        for n in names:
            if n not in _DEFINED:
                addr = loaded.address(n)
                llvm.add_symbol(n, addr)
                _DEFINED[n] = addr


def ensure(names: Iterable[str]) -> None:
    """Make every library symbol among ``names`` resolvable in this process: from the disk cache
    when one is set and holds it, else compiled here (once; concurrent callers wait)."""
    names = list(names)
    if not missing(names):
        return
    from minicomp.codegen.llvm.runtime import jit
    with _LOCK:
        need = missing(names)
        if not need:
            return
        text = library_ir(need)
        obj = cached_object(text)
        if obj is None:
            obj = jit.compile_objects([text], [LEVEL])[0]
            remember_object(text, obj)
        install(need, obj)
