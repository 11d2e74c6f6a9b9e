"""``minicomp bench``: minicomp against PyTorch eager and torch.compile (Inductor), same run.

For each case: median latency of eager, Inductor and minicomp (target cpu), timed in
alternating rounds so that the three share the machine's drift
(:func:`~minicomp.timing.interleaved_medians`); the cold compile time of minicomp (object
cache off) and of Inductor (its caches off), both after one untimed trace of the case
(torch's fake-tensor caches warm for both); and minicomp's second compile served from the
disk cache. The machine's copy bandwidth and sgemm rate are measured in
the same run so each case can be read against the machine's limits.

Peak memory (``peak_mb``) of one warm call of each is measured the same way for all
three (:func:`peak_bytes`): the highest running sum of the torch profiler's
allocation and free events during the call, i.e. the most bytes allocated during
the call above what existed before it (the returned outputs included). minicomp's
per-call kernel arena is allocated by its native code (``aligned_alloc``), which
the profiler does not see, so its size is added explicitly: the arena lives
during the one native call, when the outputs (and any contiguous copies of the
inputs) are already allocated, so the sum is the call's peak. Persistent memory
(parameters, minicomp's constants, Inductor's weights) is not per-call and is not
counted for any of them.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    """A benchmark case: a module or function, its inputs, and its work (bytes, flops)."""

    name: str
    build: Callable[[], tuple]  # -> (callable, inputs, bytes_moved, flops)


def _example(name: str, **kw):
    from minicomp.demo import _examples_dir
    from minicomp.cli import load_model_file
    mod = load_model_file(str(_examples_dir() / f"{name}.py"))
    model = mod.model()
    inputs = tuple(mod.example_inputs(**kw)) if kw else tuple(mod.example_inputs())
    return model, inputs


def _cases() -> list[Case]:
    import torch

    def mlp(b):
        def build():
            m, (x,) = _example("mlp")
            x = torch.randn(b, x.shape[1])
            return m, (x,), 0, 2 * b * (256 * 1024 * 2)
        return build

    def lenet(b):
        def build():
            m, (x,) = _example("lenet")
            return m, (torch.randn(b, *x.shape[1:]),), 0, 0
        return build

    def block(b, t):
        def build():
            m, inputs = _example("transformer_block", batch=b, seq=t)
            return m, inputs, 0, 0
        return build

    def chain():
        x = torch.randn(16 * 1024 * 1024)
        return (lambda x: torch.sigmoid(2 * x + 1) * torch.tanh(x) - torch.abs(x)), (x,), 8 * x.numel(), 0

    def softmax():
        x = torch.randn(4096, 1024)
        return (lambda x: torch.softmax(x, dim=-1)), (x,), 8 * x.numel(), 0

    def layernorm():
        x = torch.randn(4096, 1024)
        ln = torch.nn.LayerNorm(1024).eval()
        return ln, (x,), 8 * x.numel(), 0

    def gemm(n):
        def build():
            a, b = torch.randn(n, n), torch.randn(n, n)
            return (lambda a, b: a @ b), (a, b), 12 * n * n, 2 * n ** 3
        return build

    def conv():
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
        x = torch.randn(1, 64, 56, 56)
        return conv, (x,), 0, 2 * 64 * 64 * 9 * 56 * 56

    return [Case("mlp_b1", mlp(1)), Case("mlp_b64", mlp(64)), Case("lenet_b1", lenet(1)),
            Case("lenet_b32", lenet(32)), Case("block_b1", block(1, 64)), Case("block_b8", block(8, 128)),
            Case("chain_16m", chain), Case("softmax_4096x1024", softmax), Case("layernorm_4096x1024", layernorm),
            Case("gemm_1024", gemm(1024)), Case("gemm_2048", gemm(2048)), Case("conv3x3_b1", conv)]


def measure_machine() -> dict:
    """CPU name, threads, copy bandwidth (GB/s, read+write) and sgemm GFLOP/s (torch, 2048^3)."""
    import numpy as np
    import torch

    from minicomp.timing import median_time
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    src = np.ones(32 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), min_runs=5, budget_s=0.5)
    a = torch.randn(2048, 2048)
    tg = median_time(lambda: a @ a, min_runs=3, budget_s=1.0)
    from minicomp.threads import requested_threads
    return {"cpu": cpu, "threads": torch.get_num_threads(), "minicomp_threads": requested_threads({}),
            "copy_gbps": round(2 * src.nbytes / t / 1e9, 2),
            "sgemm_gflops": round(2 * 2048 ** 3 / tg / 1e9, 1)}


def peak_bytes(call: Callable[[], object]) -> int:
    """Peak bytes allocated through torch (CPU and accelerators) during one ``call()``, above
    what was allocated before it; what the call returns stays allocated and counts."""
    from torch.profiler import ProfilerActivity, profile, supported_activities
    activities = [a for a in supported_activities() if a in (ProfilerActivity.CPU, ProfilerActivity.CUDA)]
    with profile(activities=activities, profile_memory=True) as prof:
        result = call()
    del result
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak


def minicomp_peak_bytes(cm, call: Callable[[], object]) -> int:
    """:func:`peak_bytes` of a minicomp call plus its native arena (the largest, when the model
    runs as several native parts one after the other)."""
    arena = max((p.arena_bytes for p, _ in cm._programs()), default=0)
    return peak_bytes(call) + arena


def run_case(case: Case, progress: Callable[[str], None], repeat: int | None = None) -> dict:
    import torch

    import minicomp
    from minicomp.timing import interleaved_medians
    fn, inputs, nbytes, flops = case.build()
    with torch.no_grad():
        # One untimed trace first: torch's fake-tensor dispatch warms its per-op caches on the
        # first trace of each op in a process (0.18 s of the block's first compile), which would
        # otherwise fall on whichever compiler traces the case first. Both compilers use them.
        minicomp.trace(fn, inputs)
        progress(f"{case.name}: minicomp (cold compile)")
        t0 = time.perf_counter()
        cm = minicomp.compile(fn, inputs, target="cpu", cache=False)
        mc_compile = time.perf_counter() - t0
        minicomp.compile(fn, inputs, target="cpu")  # populate the disk cache
        t0 = time.perf_counter()
        minicomp.compile(fn, inputs, target="cpu")
        mc_cached = time.perf_counter() - t0
        # Long float32 reductions (GEMM, conv) legitimately differ from eager in the last
        # bits; the benchmark reports the difference instead of asserting (the tests assert).
        max_err = (cm(*inputs).double() - fn(*inputs).double()).abs().max().item()
        # Inductor compiles second: its pool of compile workers stays busy for a while after
        # its first call, which would slow a compile timed right after it.
        progress(f"{case.name}: inductor (cold compile)")
        torch._dynamo.reset()
        compiled = torch.compile(fn)
        t0 = time.perf_counter()
        compiled(*inputs)
        inductor_compile = time.perf_counter() - t0
        progress(f"{case.name}: eager, inductor and minicomp timed in alternating rounds")
        med = interleaved_medians({"eager": lambda: fn(*inputs), "inductor": lambda: compiled(*inputs),
                                   "minicomp": lambda: cm(*inputs)}, runs=repeat)
        eager, inductor, mc = med["eager"], med["inductor"], med["minicomp"]
        progress(f"{case.name}: peak memory of one call")
        peak = {"eager": peak_bytes(lambda: fn(*inputs)), "inductor": peak_bytes(lambda: compiled(*inputs)),
                "minicomp": minicomp_peak_bytes(cm, lambda: cm(*inputs))}
    row = {"name": case.name, "eager_ms": eager * 1e3, "inductor_ms": inductor * 1e3, "minicomp_ms": mc * 1e3,
           "compile_s": {"minicomp": mc_compile, "minicomp_cached": mc_cached, "inductor": inductor_compile},
           "kernels": len(cm.kernels), "max_abs_diff_vs_eager": max_err,
           "peak_mb": {k: v / 2**20 for k, v in peak.items()}}
    if nbytes:
        row["minicomp_gbps"] = nbytes / mc / 1e9
    if flops:
        row["minicomp_gflops"] = flops / mc / 1e9
    return row


def format_table(rows: list[dict]) -> str:
    header = ("case", "eager ms", "inductor ms", "minicomp ms", "vs eager", "vs inductor", "compile s",
              "inductor compile s", "cached s", "max diff", "peak MB eager/ind/mc")
    out = [header]
    for r in rows:
        out.append((r["name"], f"{r['eager_ms']:.3f}", f"{r['inductor_ms']:.3f}", f"{r['minicomp_ms']:.3f}",
                    f"{r['eager_ms'] / r['minicomp_ms']:.2f}x", f"{r['inductor_ms'] / r['minicomp_ms']:.2f}x",
                    f"{r['compile_s']['minicomp']:.2f}", f"{r['compile_s']['inductor']:.2f}",
                    f"{r['compile_s']['minicomp_cached']:.3f}", f"{r['max_abs_diff_vs_eager']:.1e}",
                    _peak_text(r)))
    widths = [max(len(row[i]) for row in out) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in out)


def _peak_text(row: dict) -> str:
    p = row.get("peak_mb")
    return "-" if not p else f"{p['eager']:.3g}/{p['inductor']:.3g}/{p['minicomp']:.3g}"


def plot(rows: list[dict], path: str) -> bool:
    """Bar chart of speedups (eager/minicomp, inductor/minicomp); False when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["name"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar([x - 0.2 for x in xs], [r["eager_ms"] / r["minicomp_ms"] for r in rows], 0.4, label="vs eager")
    ax.bar([x + 0.2 for x in xs], [r["inductor_ms"] / r["minicomp_ms"] for r in rows], 0.4, label="vs Inductor")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("speedup of minicomp (higher is better)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def run_bench(cases: list[str] | None = None, json_path: str | None = None, plot_path: str | None = None,
              repeat: int | None = None, progress: Callable[[str], None] = print) -> int:
    """Run the benchmark, print the table, write JSON and the PNG plot. Returns an exit status."""
    from minicomp.cli import UserError
    # Inductor's compile time is measured cold: its on-disk caches would otherwise serve
    # graphs compiled by earlier runs. (Set before torch._inductor reads its config.)
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    all_cases = _cases()
    known = {c.name for c in all_cases}
    if cases:
        unknown = [c for c in cases if c not in known]
        if unknown:
            raise UserError(f"unknown bench case(s) {unknown}; known: {sorted(known)}")
        all_cases = [c for c in all_cases if c.name in cases]
    progress("measuring the machine (copy bandwidth, sgemm)")
    machine = measure_machine()
    rows = [run_case(c, progress, repeat) for c in all_cases]
    print(f"machine: {machine['cpu']}, {machine['threads']} torch threads, "
          f"{machine['minicomp_threads']} minicomp threads, copy {machine['copy_gbps']} GB/s, "
          f"sgemm {machine['sgemm_gflops']} GFLOP/s")
    print(format_table(rows))
    if json_path:
        Path(json_path).write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"),
                                               "cases": rows}, indent=2))
        print(f"wrote {json_path}")
        plot_path = plot_path or os.path.splitext(json_path)[0] + ".png"
    if plot_path:
        print(f"wrote {plot_path}" if plot(rows, plot_path) else "matplotlib not installed: no plot")
    return 0
