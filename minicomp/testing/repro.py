"""Standalone reproduction scripts for failures found by :func:`minicomp.testing.check_compile`.

A repro script carries everything it needs: the graph as minicomp text IR, the
input values (base64 ``.npy``), the graph written out as plain PyTorch code, the
check to run (``differential`` or ``exact``), the targets, and the passes, targets
and plugins by *importable reference* (module and qualified name, see
:mod:`minicomp.testing.plugins`), so a user's pass or backend is rebuilt in the
fresh process, or the script says loudly that it cannot be.

Exit status of a repro script (:data:`REPRODUCED`, :data:`NOT_REPRODUCED`, :data:`CANNOT_RUN`):

* 1: the failure reproduced (a layer disagrees, changed bits, or crashed);
* 0: it did not reproduce (every layer agrees: the bug is fixed, or depends on
  state the script does not carry);
* 2: the script could not run the check: a pass, target or plugin could not be
  imported or built, the IR does not parse, or PyTorch rejects the graph.

File names are ``repro_<layer>_<targets>_<content hash>_<unique>.py`` in
:func:`repro_dir`, so a later run never overwrites an earlier repro. With
``MINICOMP_REPRO_SKIP_PLUGINS=1`` a script skips its plugins (e.g. to show that a
failure needs an injected bug: ``scripts/mutation_score.py``).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minicomp.ir.graph import Graph
from minicomp.testing.torch_ref import encode_array, torch_source

REPRODUCED, NOT_REPRODUCED, CANNOT_RUN = 1, 0, 2

_TEMPLATE = '''\
"""minicomp repro: {summary}

Run with:  python {filename}
Check: {mode}; targets: {targets}; passes: {pass_names}
Exit status: 1 the failure reproduced, 0 it did not, 2 the check could not run
(a pass, target or plugin failed to import, or PyTorch rejects the graph).
"""
import base64
import io
import sys

import numpy as np
import torch
import torch.nn.functional as F


def _arr(text):
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


SPEC = {spec!r}
DTYPES = {dtypes!r}
INPUTS = [{inputs}]
C = {{{consts}}}
IR = {ir!r}


{torch_source}

{torch_source_f64}

def torch_inputs():
    ts = [torch.from_numpy(a.copy()) for a in INPUTS]
    return [t.to(torch.bfloat16) if d == "bf16" else t for t, d in zip(ts, DTYPES)]


def main():
    try:
        from minicomp.testing.repro import replay
    except Exception as e:  # minicomp itself missing or broken: cannot run
        print(f"could not run: cannot import minicomp.testing ({{type(e).__name__}}: {{e}})")
        return 2
    return replay(SPEC, IR, INPUTS, torch_fn, torch_inputs, torch_fn_f64)


if __name__ == "__main__":
    sys.exit(main())
'''


def repro_dir() -> str:
    """Where repro scripts go: ``$MINICOMP_REPRO_DIR`` if set, else ``<tmp>/minicomp-repros``."""
    path = os.environ.get("MINICOMP_REPRO_DIR") or os.path.join(tempfile.gettempdir(), "minicomp-repros")
    os.makedirs(path, exist_ok=True)
    return path


def _pass_entry(p: Any) -> dict:
    """How one pass travels: a built-in name, or a reference to the user's class / registering module."""
    from minicomp.passes.manager import get_pass
    from minicomp.testing.plugins import ref_of
    obj = get_pass(p) if isinstance(p, str) else p
    name = getattr(obj, "name", type(obj).__name__)
    if type(obj).__module__.startswith("minicomp.") and isinstance(p, str):
        return {"name": name}
    if isinstance(p, str):
        return {"name": name, "register": ref_of(type(obj))}
    return {"name": name, "ref": ref_of(obj)}


def _spec(targets: Sequence[str], passes: Sequence[Any] | None, mode: str, layer: str) -> tuple[dict, str | None]:
    """The SPEC dict of a repro script, and why it cannot replay (None when it can)."""
    from minicomp.testing.plugins import PluginError, loaded_plugins, ref_of
    from minicomp.testing.targets import BUILTIN_TARGETS, target_factory
    spec: dict[str, Any] = {"mode": mode, "layer": layer, "targets": list(targets), "passes": None,
                            "target_refs": {}, "plugins": loaded_plugins(), "errors": []}
    try:
        if passes is not None:
            spec["passes"] = [_pass_entry(p) for p in passes]
        for t in targets:
            if t not in BUILTIN_TARGETS:
                spec["target_refs"][t] = ref_of(target_factory(t))
    except PluginError as e:
        spec["errors"].append(str(e))
    return spec, (spec["errors"][0] if spec["errors"] else None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


def write_repro(graph: Graph, ir: str, inputs: Sequence[np.ndarray], targets: Sequence[str], summary: str,
                passes: Sequence[Any] | None = None, *, mode: str = "differential",
                layer: str = "") -> tuple[str, str | None]:
    """Write a repro script; return its path and why it cannot replay (None when it can).

    ``passes`` (pass names or objects; None: the default pipeline) and ``targets``
    are what the script hands to the check; ``mode`` is ``"differential"`` or
    ``"exact"``; ``layer`` the blamed layer (it goes into the file name).
    """
    spec, problem = _spec(targets, passes, mode, layer)
    h = hashlib.sha256(ir.encode())
    for a in inputs:
        h.update(np.ascontiguousarray(a).tobytes())
    stem = f"repro_{_slug(layer or 'mismatch')}_{_slug('-'.join(targets) or 'interpreter')}_{h.hexdigest()[:10]}"
    source, consts = torch_source(graph)
    source_f64, _ = torch_source(graph, "torch_fn_f64", upcast_constants=True)  # (the float64 oracle's run)
    names = [e["name"] for e in spec["passes"]] if spec["passes"] is not None else "default pipeline"
    while True:
        filename = f"{stem}_{secrets.token_hex(3)}.py"
        path = os.path.join(repro_dir(), filename)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            continue
    text = _TEMPLATE.format(
        summary=summary.replace('"""', "'''").splitlines()[0] if summary else "mismatch",
        filename=filename, targets=list(targets), mode=mode, pass_names=names, spec=spec,
        dtypes=[str(v.type.dtype) for v in graph.inputs],
        inputs=", ".join(f"_arr({encode_array(a)!r})" for a in inputs),
        consts=", ".join(f"{k!r}: _arr({encode_array(v)!r})" for k, v in consts.items()),
        ir=ir, torch_source=source, torch_source_f64=source_f64)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path, problem


def _resolve_passes(entries: list[dict] | None) -> list | None:
    from minicomp.passes.manager import get_pass
    from minicomp.testing.plugins import resolve
    if entries is None:
        return None
    out = []
    for e in entries:
        if "ref" in e:
            out.append(resolve(e["ref"]))
            continue
        if "register" in e:
            resolve(e["register"], instantiate=False)  # importing the module registers the pass
        out.append(get_pass(e["name"]))
    return out


def _setup(spec: dict) -> list | None:
    """Load plugins and target modules, rebuild the passes (any failure raises)."""
    from minicomp.testing.plugins import PluginError, load_plugin_entry, resolve
    if spec.get("errors"):
        raise PluginError(spec["errors"][0])
    if os.environ.get("MINICOMP_REPRO_SKIP_PLUGINS") != "1":
        for plugin in spec.get("plugins", []):
            load_plugin_entry(plugin)
    from minicomp.testing.targets import _TARGETS, register_target
    for name, ref in spec.get("target_refs", {}).items():
        factory = resolve(ref, instantiate=False)
        if name not in _TARGETS:  # registered by a test or a session, not by importing its module
            register_target(name, factory)
    return _resolve_passes(spec.get("passes"))


def replay(spec: dict, ir: str, inputs: list, torch_fn: Callable, torch_inputs: Callable,
           torch_fn_f64: Callable | None = None) -> int:
    """Run a repro script's check; print what happened; return its exit status (module docstring)."""
    from minicomp.ir import parse
    from minicomp.testing.check import compare_outputs, run_layer
    from minicomp.testing.exact import check_passes_exact
    from minicomp.testing.oracle import fp64_reference
    try:
        passes = _setup(spec)
        graph = parse(ir)
        expected = list(torch_fn(*torch_inputs()))
    except Exception as e:  # noqa: BLE001 - everything before the check is "could not run"
        print(f"could not run: {type(e).__name__}: {e}")
        return CANNOT_RUN
    if spec["mode"] == "exact":
        from minicomp.testing.check import _passes
        target = (spec["targets"] or ["cpu"])[0]
        from minicomp.testing.targets import pipeline_target
        found = check_passes_exact(graph, inputs, _passes(passes, target), {"target": pipeline_target(target)})
        if found is None:
            print("did not reproduce: every pass kept the bits")
            return NOT_REPRODUCED
        print(f"REPRODUCED: {found[0]} changed bits\n{found[1]}")
        return REPRODUCED
    fp64 = fp64_reference(torch_fn_f64 or torch_fn, torch_inputs())
    failed, reference = False, None
    for layer in ["interpreter", *spec["targets"]]:
        try:  # (the interpreter's outputs judge the targets' zero signs, as in check_compile)
            got = run_layer(graph, inputs, layer, passes=passes)
            problem = compare_outputs(expected, got, graph, fp64, None if layer == "interpreter" else reference)
            if layer == "interpreter" and problem is None:
                reference = got
        except Exception as e:  # noqa: BLE001 - a crash is a failure too
            problem = "raised " + "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
        print(f"{layer}: {'OK' if problem is None else 'MISMATCH'}")
        if problem is not None:
            failed = True
            print(problem)
    print("REPRODUCED" if failed else "did not reproduce: every layer agrees with PyTorch eager")
    return REPRODUCED if failed else NOT_REPRODUCED
