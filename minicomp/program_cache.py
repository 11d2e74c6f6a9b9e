"""The compiled-program cache: a compile of a traced graph seen before skips passes, lowering and LLVM.

Invariant: a cached program is only ever one that a fresh compile would produce
now. So the model is always traced (tracing runs the user's Python, which is where
class attributes, other modules' globals and ``torch.set_default_dtype`` act), and
the key is taken from what tracing produced, as Inductor's FX graph cache does.
:func:`graph_key` hashes:

* the printed IR of the traced graph (names, ops, attributes, types, source
  locations) with every array attribute's dtype, shape and bytes hashed (constants
  are elided from the text, not from the key);
* the output structure (the pytree spec) and the input signature;
* the target, ``fallback``, every option (only plain values: numbers, strings,
  booleans, None and tuples/lists of them) and the pass pipeline (None is the
  default pipeline, whose choice is a function of the options; otherwise only
  minicomp's own passes, by name or as instances with plain fields);
* the compiler: the content of every minicomp source file, the versions of torch,
  llvmlite and LLVM, numpy and Python, and the host CPU name and features.

Anything it cannot key (a custom pass, a callable option, an ``external`` node) gets
no key: the compile runs in full and stores nothing. A ``.model`` entry holds the
lowered Program (JSON from :mod:`minicomp.ir.kernel_io` plus raw constant bytes) and
the lowering notes; its object code is the ``.obj`` entry of :func:`compile_cpu`
(recompiled if that was evicted), and the final graph's text a ``.graph`` entry read
only on request. On load the Program's input and output types are checked against
the traced graph: an entry that does not fit the call is never run.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minicomp import cache
from minicomp.ir.graph import Graph

MODEL_FORMAT = "minicomp.model/2"
_PACKAGES = ("minicomp", "minicomp.ir", "minicomp.passes", "minicomp.codegen")
_PLAIN = (type(None), bool, int, float, str)


# -- the key -------------------------------------------------------------------------------------
def graph_key(graph: Graph, out_spec: Any, target: str, options: dict[str, Any], passes: Sequence[Any] | None,
              fallback: bool) -> str | None:
    """The cache key of compiling the traced ``graph`` (see the module docstring), or None: uncacheable."""
    from minicomp.ir.printer import print_graph
    if any(n.op == "external" for n in graph.nodes):
        return None
    opts = {k: v for k, v in options.items() if k != "cache"}
    pipeline = _pipeline_text(passes)
    if pipeline is None or not all(_plain(v) for v in opts.values()):
        return None
    try:
        text = print_graph(graph, elide_constants=True)
    except TypeError:
        return None  # an attribute the text format cannot print
    arrays = hashlib.sha256()
    for a in _arrays(graph):
        arrays.update(f"{a.dtype.str}{a.shape}".encode())
        arrays.update(np.ascontiguousarray(a).tobytes())
    sig = [str(v.type) for v in graph.inputs]
    return cache.hash_parts(MODEL_FORMAT, text, arrays.hexdigest(), str(out_spec), repr(sig), target,
                            repr(bool(fallback)), repr(sorted(opts.items())), pipeline, *compiler_versions())


def _plain(v: Any) -> bool:
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    return isinstance(v, _PLAIN)


def _pipeline_text(passes: Sequence[Any] | None) -> str | None:
    """The pass list as text, or None when a pass is not minicomp's own (it cannot be keyed safely)."""
    if passes is None:
        return "default pipeline"
    if isinstance(passes, str):
        return None
    from minicomp.passes import manager
    out = []
    for p in passes:
        if isinstance(p, str):
            factory = manager._PASSES.get(p)
            if factory is None or not _ours(factory):
                return None  # unknown (the compile reports it) or registered by the user
            out.append(p)
        elif _ours(type(p)) and dataclasses.is_dataclass(p):
            fields = [getattr(p, f.name) for f in dataclasses.fields(p)]
            if not all(_plain(v) for v in fields):
                return None
            out.append(f"{type(p).__qualname__}{fields!r}")
        else:
            return None
    return repr(out)


def _ours(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("minicomp.passes.")


def _arrays(graph: Graph):
    """Every numpy array in the attributes of ``graph``'s nodes (nested graphs included), in order."""
    stack: list[Any] = [graph]
    while stack:
        v = stack.pop()
        if isinstance(v, np.ndarray):
            yield v
        elif isinstance(v, Graph):
            stack.extend(reversed([n.attrs[k] for n in v.nodes for k in sorted(n.attrs)]))
        elif isinstance(v, (tuple, list)):
            stack.extend(reversed(v))


@functools.lru_cache(maxsize=1)
def compiler_versions() -> tuple[str, ...]:
    """What else determines the program: minicomp's source, torch, llvmlite/LLVM, numpy, Python, the host.

    Computed once per process: the code a process runs does not change while it runs.
    """
    import llvmlite
    import llvmlite.binding as llvm
    import torch
    return (minicomp_fingerprint(), torch.__version__, llvmlite.__version__, repr(llvm.llvm_version_info),
            np.__version__, sys.version, cache.host_description())


def minicomp_fingerprint() -> str:
    """sha256 over the relative path and the content of every ``.py`` file of minicomp (frontend,
    passes, ir, codegen, driver, runtime...): any edit changes it, whatever the file times say."""
    h = hashlib.sha256()
    for pkg in _PACKAGES:
        spec = importlib.util.find_spec(pkg)
        for root in (spec.submodule_search_locations or []) if spec else []:
            base = Path(root)
            for path in sorted(base.rglob("*.py")):
                rel = path.relative_to(base)
                if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                    continue
                h.update(f"{pkg}/{rel.as_posix()}\0".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


# -- entries -------------------------------------------------------------------------------------
@dataclass
class CachedProgram:
    """What :func:`lookup_model` found: the lowered Program (constants included) and its notes."""

    key: str
    program: Any          # minicomp.ir.program.Program
    name: str             # the entry symbol it was compiled under
    notes: list[str]

    def load_graph(self) -> Graph | None:
        """The final IR graph (after passes), parsed from its ".graph" entry; None if that is gone."""
        payload = cache.load(self.key, ".graph")
        if payload is None:
            return None
        from minicomp.ir.parser import parse
        return parse(zlib.decompress(payload).decode())


def store_model(key: str, program: Any, name: str, graph: Graph | None = None, notes: Sequence[str] = ()) -> bool:
    """Record ``program`` (compiled as entry symbol ``name``) under ``key``; False if nothing was stored
    (a value the Program format cannot write, or an unwritable cache, which has warned)."""
    from minicomp.ir.kernel_io import program_to_json
    try:
        program_json, constants = program_to_json(program)
    except TypeError:
        return False
    blobs, offset = [], 0
    refs = []
    for data in [program_json.encode()] + [c.tobytes() for c in constants]:
        blobs.append(data)
        refs.append([offset, len(data)])
        offset += len(data)
    header = {"format": MODEL_FORMAT, "name": name, "notes": list(notes), "program": refs[0],
              "constants": [[*ref, c.dtype.str, list(c.shape)] for ref, c in zip(refs[1:], constants)]}
    head = json.dumps(header, separators=(",", ":")).encode()
    if graph is not None:
        from minicomp.ir.printer import print_graph
        try:
            cache.store(key, zlib.compress(print_graph(graph).encode(), 1), ".graph")
        except TypeError:
            pass  # the final graph has an attribute the text format cannot print: cm.graph is then None
    return cache.store(key, len(head).to_bytes(8, "little") + head + b"".join(blobs), ".model")


def lookup_model(key: str, graph: Graph) -> CachedProgram | None:
    """The program stored under ``key`` if it fits the traced ``graph`` (same input and output types),
    else None: missing, corrupt or of another format (then deleted), or not fitting."""
    payload = cache.load(key, ".model")
    if payload is None:
        return None
    try:
        hit = _decode(key, payload)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        hit = None
    if hit is None or not fits(hit.program, graph):
        with cache._directory() as dfd:
            if dfd is not None:
                cache._unlink(dfd, key + ".model")
        return None
    return hit


def fits(program: Any, graph: Graph) -> bool:
    """Whether ``program`` takes exactly ``graph``'s input types and returns its output types."""
    ins, outs = [v.type for v in graph.inputs], [v.type for v in graph.outputs]
    if program.num_inputs != len(ins) or program.num_outputs != len(outs):
        return False
    for s in program.slots:
        if (s.kind == "input" and s.type != ins[s.index]) or (s.kind == "output" and s.type != outs[s.index]):
            return False
    covered = {s.index for s in program.slots if s.kind == "output"}
    for j, slot in program.aliases:
        src = program.slots[slot]
        if src.type.dtype != outs[j].dtype or src.type.shape != outs[j].shape:
            return False
        covered.add(j)
    return covered == set(range(len(outs)))


def _decode(key: str, payload: bytes) -> CachedProgram:
    from minicomp.ir.kernel_io import program_from_json
    n = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + n])
    if header.get("format") != MODEL_FORMAT:
        raise ValueError("unknown model entry format")
    data = memoryview(payload)[8 + n:]

    def blob(start: int, length: int) -> memoryview:
        if start < 0 or length < 0 or start + length > len(data):
            raise ValueError("blob out of range")
        return data[start:start + length]

    # Writable copies: the runtime hands constants to torch.from_numpy.
    constants = [np.frombuffer(blob(start, length), dtype=np.dtype(dtype)).copy().reshape(shape)
                 for start, length, dtype, shape in header["constants"]]
    program = program_from_json(bytes(blob(*header["program"])).decode(), constants)
    return CachedProgram(key, program, str(header["name"]), [str(x) for x in header["notes"]])


# -- object code ---------------------------------------------------------------------------------
def compile_cpu(program: Any, name: str, options: dict[str, Any]):
    """The :class:`LLVMModule` of ``program`` (entry symbol ``name``), its object code from the
    ``.obj`` entry when ``options["cache"]`` (default True) allows and there is one."""
    from minicomp.codegen.llvm import compile_program
    from minicomp.threads import compile_threads
    threads = compile_threads(options)
    opt_level = int(options.get("opt_level", 3))
    build: Callable[..., Any] = functools.partial(compile_program, program, name=name, threads=threads,
                                                  opt_level=opt_level)
    if not options.get("cache", True):
        return build()
    cache.install_pool()  # the thread pool's object code from the cache, not a per-process JIT
    # the debugging override of codegen's path choice changes the object code: part of the key
    from minicomp.codegen.llvm.dispatch import ENV
    paths = os.environ.get(ENV, "").strip()
    key = cache.cache_key(program_text(program), "cpu", name, f"threads={threads}", f"opt={opt_level}",
                          f"paths={paths}")
    obj = cache.load(key)
    if obj is not None:
        return build(object_code=obj)
    module = build()
    cache.store(key, module.object_code)
    return module


def program_text(program: Any) -> str:
    """A deterministic text of everything in a Program that determines its machine code.

    Constant *values* are excluded: the native code receives them as pointers. Shared
    subexpressions are written once (:func:`minicomp.ir.kernel_io.program_text`): a ``repr``
    grew exponentially with chains of ``x * sigmoid(x)`` (issue 14, point 14).
    """
    from minicomp.ir.kernel_io import program_text as text
    return text(program)
