"""The options of ``minicomp.compile``: one typed description each, checked before any work.

``minicomp.compile(model, inputs, target, fallback=..., passes=..., **options)`` takes the
options below. :func:`validate` checks every one against its description, so a misspelled
name or a value of the wrong kind is one :class:`~minicomp.errors.OptionError` that names the
option and says what it accepts, raised before tracing starts, never an
``AttributeError`` from deep inside a pass or a silently ignored setting.

Options are read in three places: the driver (``recompile``, ``dump_dir``, ``threads``...),
the backends (``opt_level``, ``autotune``, ``max_rblock``) and the passes, through
``PassContext.option`` (``fuse``, ``layout``, ``channels_last``, ``decompose``...). Every
one of them is in :data:`OPTIONS`; adding an option means adding its row here.
"""
from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minicomp.errors import OptionError
from minicomp.passes.decompose import RULES


@dataclass(frozen=True)
class Option:
    """One compile option: its ``name``, what values it ``accepts`` (words for the error
    message), the ``default`` used when it is not given, a ``doc`` line, and ``check``,
    a predicate over a given value."""

    name: str
    accepts: str
    default: Any
    doc: str
    check: Callable[[Any], bool]


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _int_in(lo: int, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo
                      and (hi is None or v <= hi))


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _pow2(v: Any) -> bool:
    return _int_in(1)(v) and v & (v - 1) == 0


def _path(v: Any) -> bool:
    return v is None or isinstance(v, (str, os.PathLike)) and str(v) != ""


def _decompose(v: Any) -> bool:
    if not isinstance(v, Mapping):
        return False
    return all(isinstance(k, str) and k in RULES and isinstance(b, bool) for k, b in v.items())


def _patterns(v: Any) -> bool:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        return False
    from minicomp.passes.rewrite import RewritePattern
    return all(isinstance(p, RewritePattern) for p in v)


_B = "True or False"

#: Every option ``minicomp.compile`` accepts, by name.
OPTIONS: dict[str, Option] = {o.name: o for o in [
    # -- the driver ----------------------------------------------------------------------
    Option("recompile", _B, True, "compile again for a call with a new input signature "
           "(False: such a call raises GuardError)", _bool),
    Option("recompile_limit", "an int >= 1", 8, "the most input signatures compiled for one model", _int_in(1)),
    Option("dump_dir", "a directory path (str or os.PathLike) or None", None,
           "write the IR after every pass (and the final sources, from the CLI) there", _path),
    Option("print_ir_after_all", _B, False, "print the IR after every pass to stderr", _bool),
    Option("verify", _B, False, "verify the IR after every pass (MINICOMP_VERIFY=1 also turns it on)", _bool),
    Option("cache", _B, True, "use the on-disk program and object cache (CPU)", _bool),
    Option("freeze", _B, False, "treat parameters and buffers as constants of the compiled program "
           "(guarded: a changed weight recompiles or raises); False reads them at call time", _bool),
    Option("threads", "an int >= 1 or None", None, "threads the compiled CPU code runs on (None: "
           "$MINICOMP_NUM_THREADS, else the cores this process may use; see minicomp.threads)",
           _optional(_int_in(1))),
    # -- the backends --------------------------------------------------------------------
    Option("opt_level", "an int from 0 to 3", 3, "LLVM optimization level (CPU)", _int_in(0, 3)),
    Option("autotune", _B, False, "try several Triton launch configurations per kernel", _bool),
    Option("max_rblock", "a power of two >= 1", 2048, "the widest Triton reduction block; longer rows loop",
           _pow2),
    # -- the passes (PassContext.option) ---------------------------------------------------
    Option("layout", _B, True, "run the layout pass", _bool),
    Option("fuse", _B, True, "run the fusion passes (fuse, fuse-attention)", _bool),
    Option("plan_memory", _B, True, "run the memory planner (arena offsets, in-place updates)", _bool),
    Option("inplace", _B, True, "let the memory planner update buffers in place", _bool),
    Option("channels_last", "True, False or 'auto'", "auto", "NHWC layout for convolutions and pools",
           lambda v: v is True or v is False or v == "auto"),
    Option("fold_limit", "an int >= 0", 4096, "the largest result (elements) constant folding makes",
           _int_in(0)),
    Option("decompose", f"a dict of op name -> True/False, op names from {', '.join(sorted(RULES))}",
           None, "decompose these composite ops (True) or keep them (False), overriding the defaults",
           _optional(_decompose)),
    Option("patterns", "a list of minicomp.passes.rewrite.RewritePattern", (),
           "extra rewrite patterns for canonicalize", _patterns),
    Option("kn_weight", "a callable or None", None, "the backend's predicate for [k, n] linear weights "
           "(set by the driver for the CPU; for tests)", _optional(callable)),
    Option("attention_kernel", "a callable or None", None, "the backend's predicate for a fused attention "
           "kernel (set by the driver; for tests)", _optional(callable)),
]}


def validate(options: Mapping[str, Any], passes: Any = None, fallback: Any = False) -> None:
    """Check ``compile``'s ``options``, ``passes`` and ``fallback``; raise one OptionError for the first
    bad one (an unknown name suggests the closest known names)."""
    if not isinstance(fallback, bool):
        raise OptionError(f"option fallback={fallback!r}: expected {_B}")
    _check_passes(passes, options)
    for name, value in options.items():
        opt = OPTIONS.get(name)
        if opt is None:
            close = difflib.get_close_matches(name, OPTIONS, n=2)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise OptionError(f"unknown option {name!r}; {hint}known options: {', '.join(sorted(OPTIONS))}")
        if not opt.check(value):
            raise OptionError(f"option {name}={_short(value)}: expected {opt.accepts}")


def _check_passes(passes: Any, options: Mapping[str, Any]) -> None:
    """``passes``: None (the default pipeline), a list of pass names and pass objects (anything
    with a ``name`` and a ``run(graph, ctx)``, as :class:`minicomp.passes.manager.Pass`), or an
    :class:`~minicomp.passes.manager.Extend` whose points the default pipeline runs with ``options``."""
    from minicomp.passes.manager import Extend, default_pass_names
    if passes is None:
        return
    if isinstance(passes, Extend):
        _check_extend(passes, default_pass_names(options))
        return
    if isinstance(passes, (str, bytes)) or not isinstance(passes, Sequence):
        raise OptionError(f"option passes={_short(passes)}: expected None, a list of pass names "
                          f"or Pass objects (e.g. ['dce', 'cse']), or minicomp.passes.Extend(after=...)")
    _check_pass_list("option passes", passes)


def _check_pass_list(where: str, passes: Any) -> None:
    from minicomp.passes.manager import pass_names
    if isinstance(passes, (str, bytes)) or not isinstance(passes, Sequence):
        raise OptionError(f"{where}: expected a list of pass names or Pass objects, got {_short(passes)}")
    known = pass_names()
    for p in passes:
        if isinstance(p, str):
            if p not in known:
                raise OptionError(f"{where}: unknown pass {p!r}; known passes: {', '.join(known)}")
        elif not (callable(getattr(p, "run", None)) and isinstance(getattr(p, "name", None), str)):
            raise OptionError(f"{where}: {_short(p)} is neither a pass name nor a Pass object")


def _check_extend(ext: Any, default: list[str]) -> None:
    """Every point of ``ext`` is a pass the default pipeline runs; every value a list of passes."""
    for field_name in ("after", "before"):
        points = getattr(ext, field_name)
        if not isinstance(points, Mapping):
            raise OptionError(f"option passes: Extend {field_name}={_short(points)}: expected a dict of "
                              f"pass name -> list of passes")
        for point, extra in points.items():
            if point not in default:
                raise OptionError(f"option passes: Extend {field_name}={{{point!r}: ...}}: the default "
                                  f"pipeline does not run {point!r} with these options; it runs: "
                                  f"{', '.join(dict.fromkeys(default))}")
            _check_pass_list(f"option passes: Extend {field_name}[{point!r}]", extra)
    _check_pass_list("option passes: Extend at_end", ext.at_end)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe() -> str:
    """A text table of every option: name, accepted values, default, what it does."""
    return "\n".join(f"{o.name} ({o.accepts}; default {o.default!r}): {o.doc}" for o in OPTIONS.values())
