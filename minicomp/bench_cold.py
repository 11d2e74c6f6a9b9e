"""Compile times of ``minicomp bench`` on level ground: each compiler in a fresh process per case.

A compile measured inside a process that already compiled something is not cold: minicomp keeps
a process-wide GEMM library, the thread pool object and torch's fake-tensor caches; Inductor
keeps its imports, its pool of compile workers and its in-memory code caches. So for every case
and each compiler, :func:`fresh_compile_times` starts a new Python process (``python -m
minicomp.bench_cold``) with empty on-disk caches of its own (a new ``MINICOMP_CACHE_DIR`` and
``TORCHINDUCTOR_CACHE_DIR``) which measures, in this order:

* ``import_s``: importing torch and the compiler's package;
* ``startup_s``: the compiler's first compile of a one-op function (``x + 1``): the one-time
  cost of its process (lazy imports, LLVM or Inductor's compile workers, the tracer), paid
  the same way by both and reported apart from the case;
* ``cold_s``: the case's first compile in that process, with every cache empty (minicomp's
  object cache off; Inductor's caches disabled, ``torch.compiler.config.force_disable_caches``,
  from its start-up compile on): the cold compile of the table;
* ``warm_s``: the same compile again in the same process (its in-process state warm) with the
  compiler's on-disk cache switched on but still empty: a miss, which compiles in full and
  fills the cache (minicomp's program cache; Inductor's FX-graph cache);
* ``cached_s``: the compile once more, served from that on-disk cache (``cache_hit`` says
  whether it was: minicomp's program-cache hit, Inductor's ``fxgraph_cache_hit`` counter).

Between the start-up compile and the case, each child waits :data:`SETTLE_S` seconds, so work a
compiler leaves running in the background (Inductor's worker pool starting) does not fall
into the case's compile. Everything runs under ``torch.no_grad()``, as the bench times calls.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: Seconds each child waits after its start-up compile, before the case's (the same for both).
SETTLE_S = 1.0
COMPILERS = ("minicomp", "inductor")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _minicomp_times(fn, inputs, settle_s: float) -> dict:
    import torch

    import minicomp
    out = {"startup_s": _timed(lambda: minicomp.compile(lambda x: x + 1, (torch.ones(8),), cache=False))}
    time.sleep(settle_s)
    out["cold_s"] = _timed(lambda: minicomp.compile(fn, inputs, cache=False))
    out["warm_s"] = _timed(lambda: minicomp.compile(fn, inputs))  # a miss: fills the program cache
    holder = {}
    out["cached_s"] = _timed(lambda: holder.setdefault("cm", minicomp.compile(fn, inputs)))
    out["cache_hit"] = getattr(holder["cm"]._last, "graph_loader", None) is not None
    out["threads"] = holder["cm"].threads
    return out


def _inductor_times(fn, inputs, settle_s: float) -> dict:
    import torch
    import torch._inductor.config as inductor_config
    import torch.compiler.config as compiler_config
    from torch._dynamo.utils import counters

    def first_call(f, args):
        torch._dynamo.reset()
        compiled = torch.compile(f)
        return _timed(lambda: compiled(*args))
    # The switch is set here, not through TORCHINDUCTOR_FORCE_DISABLE_CACHES: a value from the
    # environment overrides any later assignment, and the caches must come back on below.
    compiler_config.force_disable_caches = True
    out = {"startup_s": first_call(lambda x: x + 1, (torch.ones(8),))}
    time.sleep(settle_s)
    out["cold_s"] = first_call(fn, inputs)
    compiler_config.force_disable_caches = False
    out["warm_s"] = first_call(fn, inputs)  # a miss: fills the FX-graph cache
    hits = counters["inductor"]["fxgraph_cache_hit"]
    out["cached_s"] = first_call(fn, inputs)
    out["cache_hit"] = counters["inductor"]["fxgraph_cache_hit"] > hits
    cpp = inductor_config.cpp.threads
    out["threads"] = cpp if cpp and cpp > 0 else torch.get_num_threads()
    return out


def child(case_name: str, compiler: str, settle_s: float = SETTLE_S) -> dict:
    """(In the fresh process) the times of the module docstring for ``case_name``."""
    t0 = time.perf_counter()
    import torch
    if compiler == "minicomp":
        import minicomp.driver  # noqa: F401  (minicomp imports its driver lazily)
    else:
        import torch._inductor.config  # noqa: F401
    out = {"import_s": time.perf_counter() - t0}
    from minicomp.bench_cases import build, find
    fn, inputs = build(find(case_name))
    with torch.no_grad():
        out.update((_minicomp_times if compiler == "minicomp" else _inductor_times)(fn, inputs, settle_s))
    return out


def fresh_compile_times(case_name: str, compiler: str, *, settle_s: float = SETTLE_S, timeout_s: float = 600) -> dict:
    """Run :func:`child` in a new Python process with empty caches of its own; its times.
    A child that fails raises RuntimeError with the end of its error output."""
    from minicomp.bench_cases import find
    if compiler not in COMPILERS:
        raise ValueError(f"compiler must be one of {COMPILERS}, got {compiler!r}")
    find(case_name)  # an unknown case fails here, not in the child
    with tempfile.TemporaryDirectory(prefix="mc-bench-cold-") as tmp:
        env = dict(os.environ, MINICOMP_CACHE_DIR=os.path.join(tmp, "minicomp"),
                   TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "inductor"))
        env.pop("TORCHINDUCTOR_FORCE_DISABLE_CACHES", None)  # the child switches Inductor's caches itself
        os.makedirs(env["MINICOMP_CACHE_DIR"], mode=0o700)
        argv = [sys.executable, "-m", "minicomp.bench_cold", case_name, compiler, str(settle_s)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"cold-compile child for {case_name} ({compiler}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """``python -m minicomp.bench_cold CASE COMPILER [SETTLE_S]``: print :func:`child`'s times as JSON."""
    ap = argparse.ArgumentParser(description="one fresh-process compile measurement (used by minicomp bench)")
    ap.add_argument("case")
    ap.add_argument("compiler", choices=COMPILERS)
    ap.add_argument("settle_s", type=float, nargs="?", default=SETTLE_S)
    args = ap.parse_args(argv)
    print(json.dumps(child(args.case, args.compiler, args.settle_s)))


if __name__ == "__main__":
    main()
