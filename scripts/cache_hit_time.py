"""Time a compile served from the on-disk program cache in a FRESH process (not a test).

For each example: one child process compiles it (filling an empty cache
directory), then a second fresh child compiles it again and reports, in ms:

* ``imports``: ``import minicomp.driver`` plus the modules a hit uses (runtime,
  caches, CPU backend, llvmlite): paid once per process, before compiling;
* ``tracer warm-up``: tracing a one-op function once, which pays the tracer's own
  one-time imports (``make_fx`` loads much of torch._dynamo); paid once per process;
* ``compile``: the ``minicomp.compile(model, inputs)`` call, a cache hit: it traces
  the model, keys the traced graph and loads the stored program and object code;
* the parts of that hit, timed in a third fresh child by wrapping the functions the
  driver calls: tracing, the key (:func:`minicomp.program_cache.graph_key`), reading +
  verifying + decoding the entry, and loading the object code (including the
  per-process thread pool); ``total_hit`` is the whole compile call.

Every compiled output is compared with eager PyTorch. The machine may be shared:
compare figures of one run only.

Usage: python scripts/cache_hit_time.py [mlp lenet transformer_block]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("mlp", "lenet", "transformer_block")


def _load_example(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.model(), mod.example_inputs()


def _imports() -> float:
    start = time.perf_counter()
    import llvmlite.binding  # noqa: F401

    import minicomp.cache  # noqa: F401
    import minicomp.codegen.llvm  # noqa: F401
    import minicomp.driver  # noqa: F401
    import minicomp.program_cache  # noqa: F401
    import minicomp.runtime  # noqa: F401
    return time.perf_counter() - start


def _warm_tracer() -> float:
    import torch

    import minicomp
    start = time.perf_counter()
    minicomp.trace(lambda a: a + 1, (torch.ones(2),))
    return time.perf_counter() - start


def child_compile(name: str) -> dict:
    import torch

    import minicomp
    imports = _imports()
    warm = _warm_tracer()
    model, inputs = _load_example(name)
    start = time.perf_counter()
    cm = minicomp.compile(model, inputs)
    compile_s = time.perf_counter() - start
    hit = cm._last.graph_loader is not None  # a hit reads the final graph only when asked for
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs))
    return {"imports": imports * 1e3, "warm": warm * 1e3, "compile": compile_s * 1e3, "hit": hit}


def child_parts(name: str) -> dict:
    """A hit through ``minicomp.compile`` with its steps timed by wrapping them where the driver calls them."""
    import functools

    import torch

    import minicomp
    import minicomp.frontend
    from minicomp import driver, program_cache
    imports = _imports()
    _warm_tracer()
    model, inputs = _load_example(name)
    laps: dict[str, float] = {"imports": imports * 1e3}

    def timed(label: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                laps[label] = laps.get(label, 0.0) + (time.perf_counter() - start) * 1e3
        return wrapper
    minicomp.frontend.trace_with_spec = timed("trace", minicomp.frontend.trace_with_spec)
    driver._model_key = timed("key", driver._model_key)
    program_cache.lookup_model = timed("read+verify+decode", program_cache.lookup_model)
    program_cache.compile_cpu = timed("load_object", program_cache.compile_cpu)
    start = time.perf_counter()
    cm = minicomp.compile(model, inputs)
    laps["total_hit"] = (time.perf_counter() - start) * 1e3
    laps["hit"] = cm._last.graph_loader is not None
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs))
    return laps


def _run_child(mode: str, name: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, name], env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"child {mode} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="mc-hit-") as d:
        env = {**os.environ, "MINICOMP_CACHE_DIR": d}
        for name in names:
            cold = _run_child("compile", name, env)
            warm = _run_child("compile", name, env)
            parts = _run_child("parts", name, env)
            print(f"{name}: cold compile {cold['compile']:.0f} ms; fresh-process compile {warm['compile']:.1f} ms "
                  f"({'a cache hit' if warm['hit'] else 'NOT a cache hit'}) "
                  f"(imports before it: {warm['imports']:.0f} ms, tracer warm-up {warm['warm']:.0f} ms)")
            print("  program-cache hit, by step: " + ", ".join(
                f"{k} {v:.1f} ms" if isinstance(v, float) else f"{k}: {v}" for k, v in parts.items()))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        fn = child_compile if sys.argv[2] == "compile" else child_parts
        print(json.dumps(fn(sys.argv[3])))
    else:
        main(sys.argv[1:] or list(EXAMPLES))
