"""A cache key for ``minicomp.compile(model, inputs, ...)`` computed without tracing.

:func:`model_key` hashes everything that determines what tracing, the passes,
lowering and code generation would produce, so that a later compile of "the same
model" (in any process) can reuse the stored program and object code:

* ``nn.Module``: the qualified name of every submodule's class and of every class
  in its MRO, the text of each such class's source file (classes from torch
  itself are covered by the torch version instead), ``repr(model)``, every
  module's ``training`` flag and plain attributes (ints, strings, tensors,
  functions...), every parameter and buffer (persistent or not) by name, shape,
  dtype, strides and sha256 of its bytes, and the values of module-level globals
  that the classes' methods read (a global tensor, number, function...).
* ``torch.fx.GraphModule``: its generated ``code`` instead of a source file, the
  same weights and attributes, and the functions its graph calls.
* a torch builtin (``torch.relu``): its name. A plain function: its qualified
  name, its code object (bytecode, constants, names, nested code, recursively),
  its source file's text, its closure cells and the globals it reads.
* the inputs' shapes, dtypes, devices and strides; the target and options;
  the versions of torch, numpy, llvmlite, minicomp and Python; the host CPU; and
  the path, size and modification time of minicomp's own source files (so editing the
  compiler invalidates).

It returns ``None`` ("do not use the fast path") for anything it cannot key
safely: forward hooks, objects of unknown types in attributes or globals, classes
without a source file (defined in a REPL), other callables.

Caveat (conservative by design, documented): code is covered through *source
files*. A helper function or class that lives in another user module and that a
forward calls through a module attribute (``helpers.f(x)``) is covered only if it
is reached as a global of a hashed function (functions are keyed recursively,
modules only by name): editing ``helpers.py`` alone does not change the key.
Monkey-patching torch functions, and global state that changes what PyTorch
traces (default dtype, ``torch.backends`` flags) are not keyed either. When in
doubt compile with ``cache=False``.
"""
from __future__ import annotations

import enum
import hashlib
import importlib.util
import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["model_key", "minicomp_fingerprint", "Unkeyable"]

_SIMPLE = (type(None), type(...), slice, bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size,
           torch.memory_format, torch.layout)
_TORCH_DIR = str(Path(torch.__file__).parent)
_PACKAGES = ("minicomp", "minicomp.ir", "minicomp.passes", "minicomp.codegen")
_MODULE_SKIP = {"_parameters", "_buffers", "_modules", "training", "_non_persistent_buffers_set",
                "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                "_load_state_dict_post_hooks", "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                "_compiled_call_impl"}
#: torch.fx.GraphModule bookkeeping (its behaviour is all in ``code``, which is hashed).
_FX_SKIP = {"_graph", "_lineno_map", "_prologue_start", "_tracer_cls", "_tracer_extras", "meta", "_replace_hooks",
            "_create_node_hooks", "_erase_node_hooks", "_deepcopy_hooks", "shape_env"}
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class Unkeyable(Exception):
    """Raised inside the key computation for a value it cannot hash safely."""


class _Hasher:
    """A sha256 over length-framed parts, with the recursion state of one key computation."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self._seen: set[int] = set()   # functions/classes already keyed (cycles, shared helpers)
        self._files: dict[str, str] = {}

    def part(self, *items: Any) -> None:
        for item in items:
            data = item if isinstance(item, bytes) else str(item).encode()
            self.h.update(len(data).to_bytes(8, "little"))
            self.h.update(data)

    def file(self, path: str | None) -> None:
        if path is None:
            raise Unkeyable("no source file")
        if path not in self._files:
            try:
                self._files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError as err:
                raise Unkeyable(f"cannot read {path}: {err}") from None
        self.part("file", path, self._files[path])

    def tensor(self, name: str, t: torch.Tensor) -> None:
        if t.is_sparse or t.device.type == "meta":
            raise Unkeyable(f"tensor {name} is sparse or meta")
        t = t.detach()
        data = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self.part("tensor", name, tuple(t.shape), t.dtype, t.stride(), t.device, hashlib.sha256(data).hexdigest())

    # -- values --------------------------------------------------------------------------
    def value(self, name: str, v: Any, depth: int = 0) -> None:
        if depth > 8:
            raise Unkeyable(f"{name} nests too deeply")
        if isinstance(v, _SIMPLE):
            self.part("v", name, type(v).__name__, repr(v))
        elif isinstance(v, torch.Tensor):
            self.tensor(name, v)
        elif isinstance(v, np.ndarray):
            self.tensor(name, torch.from_numpy(np.ascontiguousarray(v)))
        elif isinstance(v, enum.Enum):
            self.part("enum", name, type(v).__module__, type(v).__qualname__, v.name)
        elif isinstance(v, (tuple, list, frozenset, set)):
            items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
            self.part("seq", name, type(v).__name__, len(items))
            for i, x in enumerate(items):
                self.value(f"{name}[{i}]", x, depth + 1)
        elif isinstance(v, dict):
            self.part("dict", name, len(v))
            for k in sorted(v, key=repr):
                self.value(f"{name}.key", k, depth + 1)
                self.value(f"{name}[{k!r}]", v[k], depth + 1)
        elif isinstance(v, types.ModuleType):
            self.part("module", name, v.__name__)
        elif isinstance(v, torch.nn.Module):
            self.module(name, v)
        elif isinstance(v, types.FunctionType):
            self.function(name, v)
        elif isinstance(v, types.MethodType):
            self.value(f"{name}.__self__", v.__self__, depth + 1)
            self.value(f"{name}.__func__", v.__func__, depth + 1)
        elif isinstance(v, type):
            self.cls(v)
        elif isinstance(v, (types.BuiltinFunctionType, torch._ops.OpOverload, torch._ops.OpOverloadPacket)) \
                or _is_torch_callable(v):
            self.part("builtin", name, getattr(v, "__module__", ""), getattr(v, "__qualname__", repr(v)))
        else:
            raise Unkeyable(f"{name} is a {type(v).__module__}.{type(v).__qualname__}")

    # -- code ----------------------------------------------------------------------------
    def cls(self, c: type) -> None:
        self.part("class", c.__module__, c.__qualname__)
        if id(c) in self._seen or c is object or c.__module__ == "builtins":
            return
        self._seen.add(id(c))
        if _in_torch(c):
            return  # torch's own classes: covered by torch.__version__
        self.file(_class_file(c))
        for attr, member in sorted(vars(c).items()):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, types.FunctionType):
                self.globals_of(f"{c.__qualname__}.{attr}", member)

    def function(self, name: str, fn: types.FunctionType) -> None:
        self.part("function", name, fn.__module__, fn.__qualname__)
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        if _in_torch(fn):
            return
        self.code(fn.__code__)
        try:
            path = inspect.getsourcefile(fn)
        except TypeError:
            path = None
        self.file(path)
        self.value(f"{name}.__defaults__", fn.__defaults__)
        self.value(f"{name}.__kwdefaults__", fn.__kwdefaults__)
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:
                contents = None  # an empty cell (not assigned yet)
            self.value(f"{name}.<closure {var}>", contents)
        self.globals_of(name, fn)

    def globals_of(self, name: str, fn: types.FunctionType) -> None:
        """The values of the module globals that ``fn``'s code (and nested code) names."""
        if _in_torch(fn):
            return
        g = fn.__globals__
        for var in sorted(_names(fn.__code__)):
            if var in g and not var.startswith("__"):
                self.value(f"{name}.<global {var}>", g[var])

    def code(self, co: types.CodeType) -> None:
        self.part("code", co.co_name, co.co_code, co.co_names, co.co_varnames, co.co_freevars,
                  co.co_argcount, co.co_kwonlyargcount, co.co_flags)
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                self.code(c)
            else:
                self.value("const", c)

    # -- modules -------------------------------------------------------------------------
    def module(self, name: str, model: torch.nn.Module) -> None:
        if id(model) in self._seen:
            self.part("module-again", name)
            return
        self._seen.add(id(model))
        for sub_name, m in model.named_modules(remove_duplicate=False):
            where = f"{name}.{sub_name}" if sub_name else name
            if any(getattr(m, h, None) for h in _HOOKS):
                raise Unkeyable(f"{where} has hooks")
            self.part("submodule", where, m.training)
            skip = _MODULE_SKIP
            if isinstance(m, torch.fx.GraphModule):
                skip = _MODULE_SKIP | _FX_SKIP
                self.part("fx-code", m.code)
                for node in m.graph.nodes:
                    if node.op == "call_function":
                        self.value(f"{where}.<call {node.name}>", node.target)
            else:
                for c in type(m).__mro__:
                    self.cls(c)
            for attr, v in sorted(vars(m).items()):
                if attr not in skip and attr not in _HOOKS and not isinstance(v, torch.nn.Module):
                    self.value(f"{where}.{attr}", v)
            for pname, p in sorted(m._parameters.items()):
                self.value(f"{where}.{pname}", p)
            for bname, b in sorted(m._buffers.items()):
                self.value(f"{where}.{bname}", b)
        self.part("repr", repr(model))


def _class_file(c: type) -> str | None:
    """The source file of class ``c``: inspect's answer, else the file its methods were compiled from
    (a class of a module loaded from a path but not registered in ``sys.modules``)."""
    try:
        return inspect.getsourcefile(c)
    except (TypeError, OSError):
        pass
    files = {m.__code__.co_filename for m in vars(c).values() if isinstance(m, types.FunctionType)}
    if len(files) == 1:
        path = files.pop()
        if Path(path).is_file():
            return path
    return None


def _is_torch_callable(v: Any) -> bool:
    return callable(v) and (getattr(v, "__module__", None) or "").startswith("torch")


def _in_torch(obj: Any) -> bool:
    mod = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(mod, "__file__", None) or ""
    return path.startswith(_TORCH_DIR)


def _names(co: types.CodeType) -> set[str]:
    names = set(co.co_names)
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            names |= _names(c)
    return names


def minicomp_fingerprint() -> str:
    """sha256 over the relative path, size and modification time (ns) of every ``.py`` file of
    minicomp (frontend, passes, ir, codegen, driver, runtime...).

    Editing a source file changes its modification time, so the key: the same staleness
    check Python's own bytecode cache relies on (mtime and size), without reading and
    hashing ~100 files in every process that looks up a cached model.
    """
    h = hashlib.sha256()
    for pkg in _PACKAGES:
        spec = importlib.util.find_spec(pkg)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for rel, st in _py_files(root, ""):
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _py_files(folder: str, rel: str) -> list[tuple[str, os.stat_result]]:
    """(relative path, stat) of the ``.py`` files under ``folder``, sorted, skipping caches and hidden folders."""
    out = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if e.name != "__pycache__" and not e.name.startswith("."):
                out += _py_files(e.path, f"{rel}{e.name}/")
        elif e.name.endswith(".py"):
            out.append((rel + e.name, e.stat()))
    return out


def model_key(model_or_fn: Any, example_inputs: Any, target: str, options: dict[str, Any]) -> str | None:
    """A sha256 hex key for compiling ``model_or_fn`` for ``example_inputs`` with ``target`` and
    ``options``, or None when the model cannot be keyed safely (see the module docstring).

    Equal keys mean: same code, weights, attributes, input signature, options and
    compiler; the key is the same in every process (no ``id``/address enters it).
    """
    import llvmlite

    import minicomp
    from minicomp.cache import host_description
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        return None
    h = _Hasher()
    try:
        if isinstance(model_or_fn, torch.nn.Module):
            h.module("model", model_or_fn)
        elif isinstance(model_or_fn, types.FunctionType):
            h.function("fn", model_or_fn)
        elif isinstance(model_or_fn, types.BuiltinFunctionType) and _is_torch_callable(model_or_fn):
            h.value("fn", model_or_fn)  # torch.relu & co: named, covered by the torch version
        else:
            return None
        for i, t in enumerate(inputs):
            h.part("input", i, tuple(t.shape), t.dtype, t.device, t.stride())
        h.part("target", target)
        for k in sorted(options):
            h.value(f"option {k}", options[k])
    except Unkeyable:
        return None
    h.part("versions", torch.__version__, np.__version__, llvmlite.__version__, minicomp.__version__, sys.version)
    h.part("host", host_description())
    h.part("minicomp", minicomp_fingerprint())
    return h.h.hexdigest()
