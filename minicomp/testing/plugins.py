"""Plugins (modules that register passes and targets) and importable references to user code.

A repro script must rebuild a user's pass or target in a fresh process, so it
carries them *by reference*: the module that defines them (plus the ``sys.path``
entry it was imported from) and the qualified name, never a name that only means
something in the process that found the bug.

* :func:`load_plugin` imports ``"pkg.module"`` (whose import registers passes and
  targets) or ``"pkg.module:function"`` (then calls ``function()``). It is the
  function a command-line ``--load`` flag would call. Repro scripts written later in
  the process load the same plugins first (:func:`loaded_plugins`).
* :func:`ref_of` makes a reference (a plain dict, written into repro scripts) for a
  pass object, a pass class or a registered name; :func:`resolve` turns it back.
  Both fail with :class:`PluginError`, which says why, for code that cannot be
  imported again (defined in ``__main__`` without a file, or inside a function).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

from minicomp.errors import MinicompError

Ref = dict[str, Any]


class PluginError(MinicompError):
    """A plugin or referenced pass/target cannot be imported (or called)."""


#: Plugins loaded with :func:`load_plugin` in this process, in order (repro scripts load them again):
#: ``{"spec": ..., "root": the sys.path entry its module came from, or None}``.
_LOADED: list[dict[str, Any]] = []


def loaded_plugins() -> list[dict[str, Any]]:
    """The plugins :func:`load_plugin` loaded in this process, in order, each with the ``sys.path``
    root it was imported from, so a script run elsewhere finds it (:func:`load_plugin_entry`)."""
    return [dict(p) for p in _LOADED]


def load_plugin_entry(entry: dict[str, Any] | str) -> ModuleType:
    """Load a plugin recorded by :func:`loaded_plugins` (or a bare spec): its root goes on
    ``sys.path`` first when it is not there, as it was in the process that loaded it."""
    if isinstance(entry, str):
        return load_plugin(entry)
    root = entry.get("root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    return load_plugin(entry["spec"])


def load_plugin(spec: str) -> ModuleType:
    """Import plugin ``spec``: ``"pkg.module"`` or ``"pkg.module:function"`` (then call it with no arguments).

    Importing the module runs its ``register_pass`` / ``register_target`` calls.
    Returns the module. Raises :class:`PluginError` naming the spec and the cause.
    """
    module_name, _, func = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the plugin's, reported as one error
        raise PluginError(f"cannot import plugin {module_name!r} ({type(e).__name__}: {e}); "
                          f"sys.path[0] is {sys.path[0]!r}") from e
    if func:
        fn = getattr(module, func, None)
        if not callable(fn):
            raise PluginError(f"plugin {spec!r}: module {module_name!r} has no callable {func!r}")
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"plugin {spec!r}: {func}() raised {type(e).__name__}: {e}") from e
    if all(p["spec"] != spec for p in _LOADED):
        _LOADED.append({"spec": spec, "root": _root(module)})
    return module


def _root(module: ModuleType) -> str | None:
    """The ``sys.path`` entry ``module`` was imported from (None for installed packages and builtins)."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    root = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path) == "__init__.py":
        root = os.path.dirname(root)
    for _ in range(module.__name__.count(".")):
        root = os.path.dirname(root)
    return root


def ref_of(obj: Any) -> Ref:
    """An importable reference to a class, function or object (a dataclass instance keeps its fields).

    Raises :class:`PluginError` when the fresh process could not import it again.
    """
    cls = obj if isinstance(obj, type) or callable(obj) and not dataclasses.is_dataclass(obj) else type(obj)
    module_name, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname:
        raise PluginError(f"{qualname} is defined inside a function; define it at module level so a repro "
                          "script can import it")
    module = sys.modules.get(module_name)
    ref: Ref = {"module": module_name, "qualname": qualname, "path": None, "file": None, "kwargs": None}
    if module_name == "__main__":
        file = getattr(module, "__file__", None)
        if not file:
            raise PluginError(f"{qualname} is defined in an interactive session or exec'd code (no file); "
                              "define it in an importable module so a repro script can import it")
        ref["file"] = os.path.abspath(file)
    elif module is not None:
        root = _root(module)
        if root is not None and not root.startswith(sys.prefix):
            ref["path"] = root
    if cls is not obj and dataclasses.is_dataclass(obj):
        ref["kwargs"] = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        if any(not isinstance(v, (str, int, float, bool, type(None))) for v in ref["kwargs"].values()):
            raise PluginError(f"{qualname}: only str/int/float/bool fields can travel into a repro script")
    return ref


def _import(ref: Ref) -> ModuleType:
    if ref.get("file"):
        name = "_minicomp_user_" + os.path.splitext(os.path.basename(ref["file"]))[0]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, ref["file"])
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot load {ref['file']}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"cannot import {ref['file']} ({type(e).__name__}: {e})") from e
        return module
    if ref.get("path") and ref["path"] not in sys.path:
        sys.path.insert(0, ref["path"])
    return load_plugin(ref["module"])


def resolve(ref: Ref, instantiate: bool = True) -> Any:
    """The object a :func:`ref_of` reference names (an instance, built with its kwargs, when ``instantiate``)."""
    obj: Any = _import(ref)
    for part in ref["qualname"].split("."):
        if not hasattr(obj, part):
            raise PluginError(f"module {ref['module']!r} has no {ref['qualname']!r}")
        obj = getattr(obj, part)
    if instantiate and isinstance(obj, type):
        try:
            return obj(**(ref.get("kwargs") or {}))
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"cannot construct {ref['qualname']} ({type(e).__name__}: {e})") from e
    return obj
