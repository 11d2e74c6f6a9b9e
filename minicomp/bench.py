"""``minicomp bench``: minicomp against PyTorch eager and torch.compile (Inductor), same run.

For each case (:mod:`minicomp.bench_cases`):

* latency: median of eager, Inductor and minicomp (target cpu), timed in alternating rounds so
  that the three share the machine's drift (:func:`~minicomp.timing.interleaved_medians`). For
  cases with outputs large enough for minicomp to advise transparent huge pages onto them (an
  allocation trick eager and Inductor could use too), minicomp is also timed without it in the
  same rounds (``minicomp_no_thp_ms``, :func:`huge_pages_off`);
* the roofline (:mod:`minicomp.roofline`): each one's GFLOP/s over the FMA peak and GB/s over
  the copy bandwidth, both measured at the start and at the end of the same run (the better of
  the two), and the fraction of the limit that binds; for small cases minicomp's per-call
  overhead (:mod:`minicomp.bench_overhead`); and minicomp against issue 19's target for the
  case (``Case.target``: a fraction of the FMA peak or of the copy bandwidth, or the overhead);
* compile times on level ground (:mod:`minicomp.bench_cold`): each compiler in a fresh process
  per case, cold, warm and disk-cached, with the process's start-up reported apart. The
  in-process times the bench measured before (one untimed trace of the case, then minicomp with
  its object cache off, then Inductor with its caches off; the first case carries Inductor's
  one-time start-up) stay in the JSON as ``compile.in_process``, for comparison;
* peak memory of one warm call, the same way for all three (:func:`peak_bytes`): the highest
  running sum of the torch profiler's allocation and free events during the call. minicomp's
  per-call kernel arena is allocated by its native code (``aligned_alloc``), which the profiler
  does not see, so its size is added (:func:`minicomp_peak_bytes`). Persistent memory
  (parameters, constants, Inductor's weights) is not per-call and is not counted for any.

The JSON records the thread counts of the three, the limits measured and the options used.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from minicomp.bench_cases import CASES, SMOKE_CASES, Case, build, work
from minicomp.bench_report import format_compile_table, format_table, format_targets, machine_line, plot

__all__ = ["CASES", "Case", "format_table", "measure_machine", "minicomp_peak_bytes", "peak_bytes", "run_bench",
           "run_case"]

#: minicomp's per-call overhead is measured for cases whose call takes less than this (ms).
OVERHEAD_BELOW_MS = 2.0
#: Environment variables that change what the bench measures; their values go into the JSON.
RECORDED_ENV = ("MINICOMP_NUM_THREADS", "MINICOMP_HUGEPAGES", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                "TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCHINDUCTOR_CACHE_DIR", "MINICOMP_CACHE_DIR")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_machine(threads: int) -> dict:
    """CPU name, the thread counts of the three, the limits of :func:`minicomp.roofline.measure_limits`
    on ``threads`` threads, and torch's sgemm rate (2048^3) for reference."""
    import torch
    import torch._inductor.config as inductor_config

    from minicomp.roofline import measure_limits
    from minicomp.timing import median_time
    a = torch.randn(2048, 2048)
    tg = median_time(lambda: a @ a, min_runs=3, budget_s=1.0)
    cpp = inductor_config.cpp.threads
    return {"cpu": _cpu_name(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "threads": {"minicomp": threads, "eager": torch.get_num_threads(),
                        "inductor": cpp if cpp and cpp > 0 else torch.get_num_threads()},
            "limits": measure_limits(threads), "sgemm_gflops": round(2 * 2048 ** 3 / tg / 1e9, 1)}


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


def uses_huge_pages(cm) -> bool:
    """Whether some output of ``cm``'s program is large enough to be advised onto huge pages."""
    from minicomp.codegen.llvm.runtime.hugepages import HUGE_OUTPUT_BYTES
    for program, _ in cm._programs():
        for s in program.slots:
            if s.kind == "output":
                n = 1
                for d in s.type.shape:
                    n *= d
                if n * s.type.dtype.itemsize >= HUGE_OUTPUT_BYTES:
                    return True
    return False


@contextlib.contextmanager
def huge_pages_off() -> Iterator[None]:
    """minicomp's calls inside the block allocate outputs without the transparent-huge-page advice
    (its switch ``MINICOMP_HUGEPAGES=0``, read at each call; the previous setting comes back after)."""
    from minicomp.codegen.llvm.runtime.hugepages import ENV
    before = os.environ.get(ENV)
    os.environ[ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = before


def compile_inductor(fn):
    """``torch.compile(fn)`` (Inductor) after a dynamo reset: compiled at its first call."""
    import torch
    torch._dynamo.reset()
    return torch.compile(fn)


def _in_process_compiles(fn, inputs, progress) -> tuple[object, object, dict]:
    """The compile measurement the bench made before (see the module docstring): minicomp's and
    Inductor's compiled callables and their times."""
    import minicomp
    minicomp.trace(fn, inputs)  # torch's fake-tensor caches warm for both compilers
    progress("minicomp compile (in process)")
    t0 = time.perf_counter()
    cm = minicomp.compile(fn, inputs, target="cpu", cache=False)
    out = {"minicomp": time.perf_counter() - t0}
    minicomp.compile(fn, inputs, target="cpu")  # populate the disk cache
    t0 = time.perf_counter()
    minicomp.compile(fn, inputs, target="cpu")
    out["minicomp_cached"] = time.perf_counter() - t0
    progress("inductor compile (in process)")
    compiled = compile_inductor(fn)
    t0 = time.perf_counter()
    compiled(*inputs)
    out["inductor"] = time.perf_counter() - t0
    return cm, compiled, out


def _timings(fn, compiled, cm, inputs, repeat, budget_s) -> dict:
    """Interleaved medians in ms of eager, Inductor, minicomp (and minicomp without huge pages)."""
    from minicomp.timing import interleaved_medians
    fns = {"eager": lambda: fn(*inputs), "inductor": lambda: compiled(*inputs), "minicomp": lambda: cm(*inputs)}
    if uses_huge_pages(cm):
        def no_thp():
            with huge_pages_off():
                cm(*inputs)
        fns["minicomp_no_thp"] = no_thp
    med = interleaved_medians(fns, runs=repeat, budget_s=budget_s)
    return {f"{k}_ms": v * 1e3 for k, v in med.items()}


def run_case(case: Case, progress: Callable[[str], None], repeat: int | None = None, *, cold: bool = True,
             budget_s: float = 3.0) -> dict:
    """Measure one case (the module docstring); its roofline comes later (:func:`add_roofline`), once
    the run's limits are known."""
    import torch

    from minicomp.bench_cold import fresh_compile_times
    from minicomp.bench_overhead import call_overhead
    fn, inputs = build(case)
    flops, nbytes = work(fn, inputs)
    compile_times: dict = {}
    if cold:
        progress(f"{case.name}: cold compiles, each compiler in a fresh process")
        compile_times["fresh_process"] = {c: fresh_compile_times(case.name, c) for c in ("minicomp", "inductor")}
    with torch.no_grad():
        cm, compiled, compile_times["in_process"] = _in_process_compiles(fn, inputs, lambda m: progress(
            f"{case.name}: {m}"))
        # Long float32 reductions (GEMM, conv) legitimately differ from eager in the last
        # bits; the benchmark reports the difference instead of asserting (the tests assert).
        max_err = (cm(*inputs).double() - fn(*inputs).double()).abs().max().item()
        progress(f"{case.name}: eager, inductor and minicomp timed in alternating rounds")
        row = {"name": case.name, **_timings(fn, compiled, cm, inputs, repeat, budget_s)}
        progress(f"{case.name}: peak memory of one call")
        peak = {"eager": peak_bytes(lambda: fn(*inputs)), "inductor": peak_bytes(lambda: compiled(*inputs)),
                "minicomp": minicomp_peak_bytes(cm, lambda: cm(*inputs))}
        overhead = None
        if row["minicomp_ms"] < OVERHEAD_BELOW_MS:
            progress(f"{case.name}: minicomp's kernels alone against its whole call")
            overhead = call_overhead(cm, inputs)
    fresh = compile_times.get("fresh_process")
    headline = compile_times["in_process"] if not fresh else {
        "minicomp": fresh["minicomp"]["cold_s"], "inductor": fresh["inductor"]["cold_s"],
        "minicomp_cached": fresh["minicomp"]["cached_s"]}
    row.update({"threads": cm.threads, "compile_s": {**headline, "method": "fresh process" if fresh else "in process"},
                "compile": compile_times, "kernels": len(cm.kernels), "max_abs_diff_vs_eager": max_err,
                "peak_mb": {k: v / 2**20 for k, v in peak.items()}, "work": {"flops": flops, "bytes": nbytes}})
    if overhead is not None:
        row["overhead"] = overhead
    return row


def add_roofline(row: dict, limits: dict, target: str | None = None) -> None:
    """``row["roofline"]``: where eager, Inductor and minicomp stand against ``limits``; and
    ``row["target"]``, minicomp against issue 19's ``target`` for the case (``Case.target``)."""
    from minicomp.bench_cases import TARGETS
    from minicomp.roofline import roofline
    flops, nbytes = row["work"]["flops"], row["work"]["bytes"]
    row["roofline"] = {k: roofline(flops, nbytes, row[f"{k}_ms"] / 1e3, limits)
                       for k in ("eager", "inductor", "minicomp")}
    mine = row["roofline"]["minicomp"]
    if target == "overhead" and "overhead" in row:
        value = row["overhead"]["overhead_us"]
        row["target"] = {"kind": target, "value": value, "goal": TARGETS[target], "met": value < TARGETS[target]}
    elif target in ("fma", "copy") and f"{target}_fraction" in mine:
        value = mine[f"{target}_fraction"]
        row["target"] = {"kind": target, "value": value, "goal": TARGETS[target], "met": value >= TARGETS[target]}


def best_limits(first: dict, second: dict) -> dict:
    """The higher of two measurements of each limit (a busy moment only ever lowers one), with both kept."""
    keys = ("fma_peak_gflops", "fma_peak_gflops_1t", "copy_gbps", "copy_gbps_1t")
    return {**first, **{k: max(first[k], second[k]) for k in keys}, "measured": [first, second]}


def _selected(cases: list[str] | None, quick: bool) -> list[Case]:
    """The cases named (in the bench's order), else every case or, with ``quick``, the quick ones."""
    from minicomp.cli import UserError
    known = {c.name for c in CASES + SMOKE_CASES}
    unknown = [c for c in cases or () if c not in known]
    if unknown:
        raise UserError(f"unknown bench case(s) {unknown}; known: {sorted(known)}")
    if cases:
        return [c for c in CASES + SMOKE_CASES if c.name in cases]
    return [c for c in CASES if c.quick or not quick]


def _bar(total: int):
    """A tqdm progress bar on stderr, or None when stderr is not a terminal (logs get lines instead)."""
    import sys
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, file=sys.stderr, unit="case", leave=False, dynamic_ncols=True)


def run_bench(cases: list[str] | None = None, json_path: str | None = None, plot_path: str | None = None,
              repeat: int | None = None, progress: Callable[[str], None] = print, *, quick: bool = False,
              cold: bool = True, budget_s: float | None = None) -> int:
    """Run the benchmark, print the tables, write JSON and the PNG plot. Returns an exit status.

    ``quick``: the quick subset of the cases (unless ``cases`` names some) and 1 s of timing per
    case instead of 3; ``cold=False`` skips the fresh-process compiles (the compile columns are
    then the in-process ones)."""
    # Inductor's in-process compile is measured with its caches off, as before (set before
    # torch._inductor reads its config); the fresh processes set their own.
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # that is the point here
    from minicomp.threads import requested_threads
    selected = _selected(cases, quick)
    budget_s = budget_s if budget_s is not None else 1.0 if quick else 3.0
    options = {"cases": [c.name for c in selected], "quick": quick, "cold": cold, "repeat": repeat,
               "budget_s": budget_s, "overhead_below_ms": OVERHEAD_BELOW_MS,
               "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ}}
    threads = requested_threads({})
    progress(f"measuring the machine (FMA peak and copy bandwidth on {threads} threads, torch sgemm)")
    machine = measure_machine(threads)
    bar, rows = _bar(len(selected)), []
    step = progress if bar is None else (lambda m: bar.set_description_str(m[:60]))
    try:
        for c in selected:
            rows.append(run_case(c, step, repeat, cold=cold, budget_s=budget_s))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    progress("measuring the machine's limits again (each limit is the better of the two measurements)")
    from minicomp.roofline import measure_limits
    machine["limits"] = best_limits(machine["limits"], measure_limits(threads))
    for case, row in zip(selected, rows):
        add_roofline(row, machine["limits"], case.target)
    print(machine_line(machine))
    print(format_table(rows))
    targets = format_targets(rows)
    if targets:
        print(targets)
    compile_table = format_compile_table(rows)
    if compile_table:
        print("\ncompile seconds, each compiler in a fresh process per case (start-up apart) and, for "
              "comparison, in the bench's own process (old method):")
        print(compile_table)
    if json_path:
        record = {"machine": machine, "options": options, "date": time.strftime("%Y-%m-%d"), "cases": rows}
        Path(json_path).write_text(json.dumps(record, indent=2))
        print(f"wrote {json_path}")
        plot_path = plot_path or os.path.splitext(json_path)[0] + ".png"
    if plot_path:
        print(f"wrote {plot_path}" if plot(rows, plot_path) else "matplotlib not installed: no plot")
    return 0


def add_arguments(parser) -> None:
    """The bench's command-line options (for ``minicomp bench`` and ``python -m minicomp.bench``)."""
    parser.add_argument("--json")
    parser.add_argument("--plot", default=None, help="PNG of the ratios (default: beside --json)")
    parser.add_argument("--cases", nargs="*")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per case (default: adaptive)")
    parser.add_argument("--quick", action="store_true", help="one case of each kind, 1 s of timing per case")
    parser.add_argument("--no-cold", dest="cold", action="store_false",
                        help="skip the fresh-process compiles (compile times measured in this process only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="minicomp's threads (sets MINICOMP_NUM_THREADS for this run and its fresh processes)")


def main(argv: list[str] | None = None) -> int:
    """``python -m minicomp.bench``: the options of :func:`add_arguments`; a bad option or case
    name exits 2 with one line."""
    import argparse
    import sys

    from minicomp.cli import UserError
    ap = argparse.ArgumentParser(prog="python -m minicomp.bench", description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: expected at least 1 timed run per case")
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads {args.threads}: expected at least 1")
        os.environ["MINICOMP_NUM_THREADS"] = str(args.threads)
    try:
        return run_bench(args.cases, args.json, args.plot, args.repeat,
                         progress=lambda m: print(f"... {m}", file=sys.stderr, flush=True), quick=args.quick,
                         cold=args.cold)
    except UserError as exc:
        print(f"python -m minicomp.bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
