"""Command-line plugins and pass lists: ``--load MODULE`` and ``--passes a,b,c``.

``minicomp opt``, ``compile`` and ``explain`` take ``--load`` (alias ``--plugin``),
repeatable: a module whose import registers passes (``register_pass``) and test
targets (``minicomp.testing.register_target``), loaded with
:func:`minicomp.testing.load_plugin` before any pass name is looked up. It is
``pkg.module``, ``pkg.module:function`` (then ``function()`` is called) or a path to
a ``.py`` file (its directory goes first on ``sys.path`` and the file is imported by
its name, so repro scripts written later can import it again). ``--passes`` names
the passes to run, comma-separated, in order; ``default`` stands for the target's
whole default pipeline, so ``--passes default,my-pass`` appends a pass to it. An
unknown pass or plugin is a usage error: one line, exit status 2, before any work.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_plugin_args(parser: argparse.ArgumentParser, passes_help: str | None) -> None:
    """Add ``--load``/``--plugin`` (and ``--passes`` unless ``passes_help`` is None) to a subcommand."""
    parser.add_argument("--load", "--plugin", dest="load", action="append", default=[], metavar="MODULE",
                        help="import a plugin that registers passes/targets first: pkg.module, "
                             "pkg.module:function or path/to/file.py (repeatable)")
    if passes_help is not None:
        parser.add_argument("--passes", default=None, help=passes_help)


def load_plugins(specs: list[str]) -> None:
    """Load each ``--load`` spec in order; a failure is a one-line usage error naming it."""
    from minicomp.cli import UserError
    from minicomp.testing.plugins import PluginError, load_plugin
    if os.getcwd() not in sys.path:  # (the console script's sys.path[0] is its bin directory, not the cwd)
        sys.path.append(os.getcwd())
    for spec in specs:
        module_spec = spec
        if spec.endswith(".py") or os.sep in spec.partition(":")[0]:
            path, _, func = spec.partition(":")
            if not os.path.isfile(path):
                raise UserError(f"--load {spec}: no such file")
            folder, name = os.path.split(os.path.abspath(path))
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = os.path.splitext(name)[0] + (f":{func}" if func else "")
        try:
            load_plugin(module_spec)
        except PluginError as e:
            raise UserError(f"--load {spec}: {e}") from e


def pass_list(text: str | None, target: str) -> list[Any] | None:
    """The passes ``--passes`` names for ``target`` (None when the flag is absent: the default pipeline).

    ``default`` expands to the target's default pipeline; unknown names are a UserError listing the known ones.
    """
    if text is None:
        return None
    from minicomp.cli import UserError
    from minicomp.passes.manager import UnknownPassError, default_pipeline, get_pass
    out: list[Any] = []
    names = [n.strip() for n in text.split(",")]
    if text.strip() and not any(names):
        raise UserError(f"--passes {text!r} names no pass (give names separated by commas, or '' for none)")
    for name in names:
        if not name:
            continue
        if name == "default":
            out += default_pipeline("gpu" if target in ("triton", "cuda") else "cpu", {})
            continue
        try:
            out.append(get_pass(name))
        except UnknownPassError as e:
            raise UserError(f"--passes: {e} (a pass of your own: --load the module that registers it)") from e
    return out


def check_target(target: str, known: tuple[str, ...]) -> None:
    """A usage error (one line) for a target ``minicomp compile`` does not know."""
    from minicomp.cli import UserError
    if target not in known:
        raise UserError(f"--target {target}: unknown target; known targets: {', '.join(known)} "
                        f"(targets registered by plugins are for minicomp.testing.check_compile)")
