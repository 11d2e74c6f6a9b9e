"""Time a compile served from the on-disk model cache in a FRESH process (not a test).

For each example: one child process compiles it (filling an empty cache
directory), then a second fresh child compiles it again and reports, in ms:

* ``imports``: ``import minicomp.driver`` plus the modules a hit uses (runtime,
  cache, model key, CPU backend, llvmlite): paid once per process, before compiling;
* ``compile``: the ``minicomp.compile(model, inputs)`` call (what the goal of
  <50 ms is about; until the driver consults the model cache this is a full compile);
* the parts of a model-cache hit done by hand in a third fresh child: the key
  (``model_key``), reading + verifying the entry, decoding the Program, loading the
  object code (``CachedModel.load_module``, which includes the per-process thread
  pool's JIT compile), and building the runtime wrapper.

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
    import minicomp.model_key  # noqa: F401
    import minicomp.runtime  # noqa: F401
    return time.perf_counter() - start


def child_compile(name: str) -> dict:
    import torch

    import minicomp
    imports = _imports()
    model, inputs = _load_example(name)
    start = time.perf_counter()
    cm = minicomp.compile(model, inputs)
    compile_s = time.perf_counter() - start
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs))
    return {"imports": imports * 1e3, "compile": compile_s * 1e3}


def child_parts(name: str) -> dict:
    import torch

    from minicomp import cache
    from minicomp.model_key import model_key
    from minicomp.runtime import NativeProgram
    imports = _imports()
    model, inputs = _load_example(name)
    laps: dict[str, float] = {"imports": imports * 1e3}
    t = time.perf_counter()

    def lap(label: str) -> None:
        nonlocal t
        now = time.perf_counter()
        laps[label] = (now - t) * 1e3
        t = now

    key = model_key(model, inputs, "cpu", {"passes": None, "fallback": False})  # as the driver keys it
    lap("key")
    if key is None:
        return {**laps, "error": "model cannot be keyed"}
    payload = cache.load(key, ".model")
    lap("read+verify")
    hit = cache._decode_model(key, payload) if payload is not None else None
    lap("decode")
    if hit is None:
        return {**laps, "error": "no model entry (has the driver been taught to store one?)"}
    module = hit.load_module()
    lap("load_object")
    native = NativeProgram(hit.program, module.entry_address, keepalive=module)
    unflatten = hit.unflatten()
    lap("runtime")
    laps["total_hit"] = sum(v for k, v in laps.items() if k != "imports")
    with torch.no_grad():
        torch.testing.assert_close(unflatten(native(list(inputs))), model(*inputs))
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
                  f"(imports before it: {warm['imports']:.0f} ms)")
            print("  model-cache hit by hand: " + ", ".join(
                f"{k} {v:.1f} ms" if isinstance(v, float) else f"{k}: {v}" for k, v in parts.items()))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        fn = child_compile if sys.argv[2] == "compile" else child_parts
        print(json.dumps(fn(sys.argv[3])))
    else:
        main(sys.argv[1:] or list(EXAMPLES))
