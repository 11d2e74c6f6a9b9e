"""The dynamic-shape sweep of issue 17: one compile for every size, measured against the static
program and the peers at each size, in one run.

For each model (the MLP and LeNet over batch sizes, the transformer block over sequence
lengths) the sweep compiles ONE dynamic program (``minicomp.compile(..., dynamic=...)``) and
calls it at every size of the range, counting compiles. At the sampled sizes it also compiles
the static program for that size, ``torch.compile(dynamic=True)`` (Inductor) once, and times
eager, Inductor, the static and the dynamic program interleaved (:func:`~minicomp.timing.
interleaved_medians`). Reported per model: compiles, the geometric mean over the samples of
dynamic / static latency (issue 17's goal: at most 1.15), and each size >= 8 where the dynamic
program is slower than the faster of eager and Inductor.

``python -m minicomp.bench_dynamic [--quick] [--json PATH]``; figures go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

#: issue 17's goal: the dynamic program within this factor of the static one (geometric mean).
STATIC_RATIO_GOAL = 1.15


@dataclass(frozen=True)
class Sweep:
    """A model, its input at size ``n`` (``make(n)``), the dynamic spec, the full range and samples."""

    name: str
    model: Callable[[], object]
    make: Callable[[int], tuple]
    dynamic: object
    sizes: tuple[int, ...]
    samples: tuple[int, ...]


def _example_model(name: str):
    from minicomp.bench_cases import _example
    return _example(name)[0]


def _randn(*shape):
    import torch
    g = torch.Generator().manual_seed(sum(shape))
    return torch.randn(*shape, generator=g)


def sweeps(quick: bool = False) -> list[Sweep]:
    """The three sweeps of issue 17 (``quick``: fewer sizes, for a smoke run)."""
    batch = tuple(range(1, 65)) if not quick else (1, 2, 3, 8, 17, 64)
    seq = tuple(range(1, 513)) if not quick else (1, 2, 7, 64, 129, 512)
    batch_samples = (1, 2, 3, 8, 13, 32, 64) if not quick else (2, 8, 64)
    seq_samples = (1, 2, 8, 31, 64, 127, 256, 512) if not quick else (8, 64, 512)
    return [
        Sweep("mlp", lambda: _example_model("mlp"), lambda n: (_randn(n, 256),), {0: (0,)}, batch, batch_samples),
        Sweep("lenet", lambda: _example_model("lenet"), lambda n: (_randn(n, 1, 28, 28),), {0: (0,)},
              batch, batch_samples),
        Sweep("block", lambda: _example_model("transformer_block"), lambda n: (_randn(1, n, 128),), {0: (1,)},
              seq, seq_samples),
    ]


def compile_count(cm) -> int:
    """How many programs ``cm`` compiled (the symbolic one and any specializations)."""
    return int(getattr(cm, "compiles", getattr(cm, "_builds", 0)))


def run_sweep(sw: Sweep, progress: Callable[[str], None] = lambda s: None) -> dict:
    """One sweep's figures (see the module docstring)."""
    import torch

    import minicomp
    from minicomp.timing import interleaved_medians
    model = sw.model()
    progress(f"{sw.name}: dynamic compile")
    dyn = minicomp.compile(model, sw.make(sw.sizes[len(sw.sizes) // 2]), target="cpu", dynamic=sw.dynamic,
                           cache=False)
    with torch.no_grad():
        for n in sw.sizes:  # every size of the range through the one dynamic program
            x = sw.make(n)
            torch.testing.assert_close(dyn(*x), model(*x))
    compiles = compile_count(dyn)
    torch._dynamo.reset()
    ind = torch.compile(model, dynamic=True)
    rows = []
    for n in sw.samples:
        progress(f"{sw.name}: size {n}")
        x = sw.make(n)
        static = minicomp.compile(model, x, target="cpu", cache=False)
        with torch.no_grad():
            med = interleaved_medians({"eager": lambda: model(*x), "inductor": lambda: ind(*x),
                                       "static": lambda: static(*x), "dynamic": lambda: dyn(*x)}, budget_s=1.0)
        rows.append({"size": n, **{f"{k}_ms": v * 1e3 for k, v in med.items()}})
    ratios = [r["dynamic_ms"] / r["static_ms"] for r in rows]
    slower = [r["size"] for r in rows if r["size"] >= 8 and r["dynamic_ms"] > min(r["eager_ms"], r["inductor_ms"])]
    return {"name": sw.name, "sizes": [sw.sizes[0], sw.sizes[-1], len(sw.sizes)], "compiles": compiles,
            "dynamic_over_static_geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
            "slower_than_best_peer_at": slower, "rows": rows, "notes": list(getattr(dyn, "notes", []) or [])}


def report(results: list[dict]) -> str:
    """A markdown table of the sweep results."""
    lines = ["| model | sizes | compiles | dynamic/static (geomean) | slower than best peer at (>= 8) |",
             "|---|---|---|---|---|"]
    for r in results:
        lo, hi, count = r["sizes"]
        lines.append(f"| {r['name']} | {lo}..{hi} ({count}) | {r['compiles']} | "
                     f"{r['dynamic_over_static_geomean']:.2f} | {r['slower_than_best_peer_at'] or 'none'} |")
    lines += ["", "| model | size | eager ms | inductor (dynamic) ms | static ms | dynamic ms |", "|---|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            lines.append(f"| {r['name']} | {row['size']} | {row['eager_ms']:.3f} | {row['inductor_ms']:.3f} | "
                         f"{row['static_ms']:.3f} | {row['dynamic_ms']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicomp.bench_dynamic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--only", metavar="NAME", action="append", help="run only these sweeps (mlp, lenet, block)")
    args = parser.parse_args(argv)
    chosen = [s for s in sweeps(args.quick) if not args.only or s.name in args.only]
    results = [run_sweep(s, lambda m: print(m, file=sys.stderr)) for s in chosen]
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
