"""Measure minicomp on the CPU against eager PyTorch (not a test).

For each example (batch sizes as in /work/shared/PERFORMANCE.md) and a few
single-kernel workloads: compile time (cache off; the process's start-up is paid first
on a one-op function and printed apart), median latency of many
runs for eager and minicomp, plus the 1024^3 fp32 matmul in GFLOP/s and the bare
call overhead of a tiny compiled function.

Usage: python scripts/measure_cpu.py [--repeat N] [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import minicomp

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def median_us(fn, args, repeat: int, budget_s: float = 3.0) -> float:
    """Median wall time of ``fn(*args)`` in microseconds (after warm-up)."""
    for _ in range(3):
        fn(*args)
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 5:
            break
    return statistics.median(times) * 1e6


def row(name: str, fn, args, repeat: int, threads: int | None = None) -> None:
    t = time.perf_counter()
    cm = minicomp.compile(fn, args, cache=False, threads=threads)
    compile_s = time.perf_counter() - t
    with torch.no_grad():
        torch.testing.assert_close(cm(*args), fn(*args))
        eager = median_us(fn, args, repeat)
    ours = median_us(cm, args, repeat)
    print(f"{name:<34} {eager:>12.1f} {ours:>12.1f} {eager / ours:>7.2f}x {compile_s:>9.2f} {len(cm.kernels):>4}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="skip the large single-kernel workloads")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads for eager (0: torch's default); on a loaded machine "
                         "OpenMP spin-waiting makes multi-threaded eager very slow")
    ap.add_argument("--threads", type=int, default=None,
                    help="minicomp's native threads (default: the usable cores, or MINICOMP_NUM_THREADS)")
    opts = ap.parse_args(argv)
    if opts.torch_threads:
        torch.set_num_threads(opts.torch_threads)
    torch.manual_seed(0)

    def run(name, fn, args, repeat):
        row(name, fn, args, repeat, opts.threads)
    from minicomp.threads import requested_threads
    print(f"torch threads: {torch.get_num_threads()}, minicomp threads: {requested_threads({'threads': opts.threads})}")
    # minicomp's one-time start-up (tracer imports, LLVM) is paid here, apart, not by the first row's compile.
    t = time.perf_counter()
    minicomp.compile(lambda x: x + 1, (torch.ones(8),), cache=False)
    print(f"start-up (first compile of x + 1): {time.perf_counter() - t:.2f} s")
    print(f"{'case':<34} {'eager us':>12} {'minicomp us':>12} {'speedup':>8} {'compile s':>9} {'kern':>4}")
    cases = [("mlp", 1), ("mlp", 64), ("lenet", 1), ("lenet", 32), ("transformer_block", 1)]
    for name, batch in cases:
        ex = load_example(name)
        run(f"{name} batch {batch}", ex.model(), ex.example_inputs(batch), opts.repeat)
    tb = load_example("transformer_block")
    run("transformer_block 8x128", tb.model(), tb.example_inputs(8, 128), max(opts.repeat // 10, 10))
    run("tiny add (call overhead)", lambda x: x + 1, (torch.randn(4),), opts.repeat * 10)
    if not opts.quick:
        x16 = torch.randn(16 * 1024 * 1024)
        run("sigmoid(2x+1)*tanh(x)-abs(x) 16M", lambda x: torch.sigmoid(2 * x + 1) * torch.tanh(x) - x.abs(),
            (x16,), 20)
        big = torch.randn(4096, 1024)
        run("softmax 4096x1024", lambda x: torch.softmax(x, -1), (big,), 50)
        w, b = torch.randn(1024), torch.randn(1024)
        run("layer_norm 4096x1024", lambda x: torch.nn.functional.layer_norm(x, (1024,), w, b), (big,), 50)
        a, c = torch.randn(1024, 1024), torch.randn(1024, 1024)
        cm = minicomp.compile(torch.matmul, (a, c), cache=False, threads=opts.threads)
        torch.testing.assert_close(cm(a, c), a @ c, rtol=1e-4, atol=1e-3)
        flop = 2 * 1024 ** 3
        t_torch = median_us(torch.matmul, (a, c), 20) * 1e-6
        t_ours = median_us(cm, (a, c), 20) * 1e-6
        print(f"matmul 1024^3 fp32: torch {flop / t_torch / 1e9:.1f} GFLOP/s, "
              f"minicomp {flop / t_ours / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
