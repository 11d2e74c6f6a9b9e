"""Measure compile time: minicomp against torch.compile/Inductor, with a breakdown (not a test).

For each example model (MLP, LeNet-5, transformer block), in one process:

* each compiler's start-up, paid first on a one-op function and reported apart (so that the
  first model does not carry one compiler's one-time costs);
* Inductor cold compile: ``torch._dynamo.reset(); torch.compile(m)(x)`` (first call);
* minicomp compile with the object cache off (``minicomp.compile(..., cache=False)``);
* the breakdown of that compile: trace (``minicomp.trace``), each pass
  (``PassContext.stats``), lowering, LLVM IR construction (a module per kernel, grouped into
  parts by ``module.plan``), their compilation on several threads (``jit.compile_parts``) and loading;
  then, for reference, the same LLVM work on one thread by stage and per part;
* the cached path: a compile served from a warm on-disk cache in this process, and
  (unless ``--no-fresh``) the same compile in a fresh process, timed from just
  before the ``minicomp.compile`` call (imports excluded, reported separately).

The machine may be shared: compare figures of one run only. ``minicomp bench`` measures cold
compiles in a fresh process per case and compiler instead (:mod:`minicomp.bench_cold`).

Inductor's on-disk caches (``TORCHINDUCTOR_CACHE_DIR``) are used as they are, so a
second run of this script sees much faster "cold" Inductor compiles; pass
``--fresh-inductor-cache`` for an empty one.

Usage: python scripts/compile_time.py [--models mlp,lenet,transformer_block] [--no-inductor]
       [--no-fresh] [--fresh-inductor-cache] [--profile NAME]
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "lenet", "transformer_block")


def load_example(name: str):
    """The module ``examples/<name>.py`` (it has ``model()`` and ``example_inputs()``)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def inductor_cold(model, inputs) -> float:
    """Seconds of the first call of ``torch.compile(model)`` after a dynamo reset."""
    import torch
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        _, s = _timed(compiled, *inputs)
    return s


def breakdown(model, inputs) -> dict[str, float]:
    """Seconds of each compile stage, run one after another like the driver does."""
    import minicomp
    from minicomp.codegen.llvm.module import plan
    from minicomp.codegen.llvm.runtime import jit
    from minicomp.ir.lowering import lower_graph
    from minicomp.passes.manager import PassContext, PassManager, default_pipeline

    out: dict[str, float] = {}
    graph, out["trace"] = _timed(minicomp.trace, model, inputs)
    ctx = PassContext(options={"target": "cpu"})
    graph = PassManager(default_pipeline("cpu", {}), verify=False).run(graph, ctx)
    for s in ctx.stats:
        out[f"pass:{s.name}"] = out.get(f"pass:{s.name}", 0.0) + s.seconds
    program, out["lower"] = _timed(lower_graph, graph)
    from minicomp.threads import compile_threads
    p, out["llvm:build_ir+to_text"] = _timed(plan, program, "mc_main", compile_threads({}), 3)
    texts, levels = p.parts, p.levels
    obj, out["llvm:compile_parts"] = _timed(jit.compile_parts, texts, levels)  # as compile_program does
    _, out["llvm:load"] = _timed(jit.Loaded, obj)
    # the same work on one thread, split by stage and by part (reference figures)
    for i, (text, level) in enumerate(zip(texts, levels)):
        tag = f"part{i}"
        mod, t_parse = _timed(jit.parse, text[0])
        for more in text[1:]:
            mod.link_in(jit.parse(more))
        _, t_opt = _timed(jit.optimize, mod, level)
        _, t_emit = _timed(jit.emit_object, mod)
        out["llvm(1 thread):parse"] = out.get("llvm(1 thread):parse", 0.0) + t_parse
        out["llvm(1 thread):optimize"] = out.get("llvm(1 thread):optimize", 0.0) + t_opt
        out["llvm(1 thread):emit_object"] = out.get("llvm(1 thread):emit_object", 0.0) + t_emit
        out[f"  {tag} O{level} opt+emit"] = t_opt + t_emit
    from minicomp.driver import program_text
    _, out["cache_key_text"] = _timed(program_text, program)
    return out


def fresh_cached(name: str, cache_dir: str) -> dict[str, float]:
    """Run a fresh process that compiles ``name`` with the cache on; its timings."""
    env = dict(os.environ, MINICOMP_CACHE_DIR=cache_dir)
    res = subprocess.run([sys.executable, __file__, "--child", name], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def child(name: str) -> None:
    """(In a fresh process) import, build the model, compile with the cache on; print timings."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    import minicomp
    t_import = time.perf_counter() - t0
    ex = load_example(name)
    model, inputs = ex.model(), ex.example_inputs()
    _, t_compile = _timed(minicomp.compile, model, inputs, target="cpu")
    print(json.dumps({"import": t_import, "compile": t_compile}))


def profile(name: str, sort: str = "cumulative", limit: int = 40) -> None:
    """cProfile one cache-off compile of ``name`` (after a warm-up compile of another size)."""
    import minicomp
    ex = load_example(name)
    model, inputs = ex.model(), ex.example_inputs()
    minicomp.compile(model, inputs, target="cpu", cache=False)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    minicomp.compile(model, inputs, target="cpu", cache=False)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(sort).print_stats(limit)
    print(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--no-fresh", action="store_true")
    ap.add_argument("--fresh-inductor-cache", action="store_true",
                    help="point TORCHINDUCTOR_CACHE_DIR at an empty folder (no FX-graph/C++ cache hits)")
    ap.add_argument("--profile", metavar="NAME")
    ap.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.profile:
        profile(args.profile)
        return

    if args.fresh_inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-ct-")
    t0 = time.perf_counter()
    import torch

    import minicomp
    print(f"import torch+minicomp: {time.perf_counter() - t0:.2f} s")
    # Each compiler's one-time start-up (lazy imports, LLVM, Inductor's compile workers) falls on
    # its first compile in the process: pay it here for both, on a one-op function, and report it
    # apart, so that neither compiler's first model carries it.
    one = (lambda x: x + 1, (torch.ones(8),))
    _, mc_start = _timed(minicomp.compile, *one, target="cpu", cache=False)
    ind_start = float("nan") if args.no_inductor else inductor_cold(*one)
    print(f"start-up (first compile of x + 1 in this process): minicomp {mc_start:.2f} s, inductor {ind_start:.2f} s")
    cache_dir = tempfile.mkdtemp(prefix="minicomp-ct-")
    os.environ["MINICOMP_CACHE_DIR"] = cache_dir
    rows = []
    for name in args.models.split(","):
        ex = load_example(name)
        model, inputs = ex.model(), ex.example_inputs()
        ind = float("nan") if args.no_inductor else inductor_cold(model, inputs)
        _, mc = _timed(minicomp.compile, model, inputs, target="cpu", cache=False)
        parts = breakdown(model, inputs)
        _, store = _timed(minicomp.compile, model, inputs, target="cpu")  # fills the cache
        _, hit = _timed(minicomp.compile, model, inputs, target="cpu")    # served from it
        fresh = {} if args.no_fresh else fresh_cached(name, cache_dir)
        with torch.no_grad():
            want = model(*inputs)
        torch.testing.assert_close(minicomp.compile(model, inputs, target="cpu")(*inputs), want)
        rows.append((name, ind, mc, store, hit, fresh))
        print(f"\n== {name}: inductor cold {ind:.3f} s | minicomp cache off {mc:.3f} s "
              f"(ratio {mc / ind:.2f}) | cache store {store:.3f} s | cache hit (same process) {hit * 1e3:.1f} ms"
              + (f" | fresh process: hit {fresh['compile'] * 1e3:.1f} ms (+ import {fresh['import']:.2f} s)"
                 if fresh else ""))
        for k, v in parts.items():
            print(f"   {k:24s} {v * 1e3:9.1f} ms")
    print("\nmodel               inductor_s  minicomp_s  ratio  hit_ms  fresh_hit_ms")
    for name, ind, mc, store, hit, fresh in rows:
        fh = f"{fresh['compile'] * 1e3:12.1f}" if fresh else "           -"
        print(f"{name:18s} {ind:11.3f} {mc:11.3f} {mc / ind:6.2f} {hit * 1e3:7.1f} {fh}")


if __name__ == "__main__":
    main()
