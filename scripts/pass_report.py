"""What the CPU pass pipeline does to each example: kernels, copy kernels, bytes moved, arena, latency.

    python scripts/pass_report.py

"Before" is the traced graph with no passes (one op = one kernel); "after" is the default CPU
pipeline. Bytes moved is the pass manager's estimate (operand + result bytes of every kernel).
Latency is the median of repeated calls of eager and of the compiled model, in this process.
Prints a markdown table.
"""
from __future__ import annotations

import pathlib

import torch

import minicomp
from minicomp.cli import load_model_file
from minicomp.passes.manager import PassContext, PassManager, bytes_moved, default_pipeline, kernel_count
from minicomp.timing import median_time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def report_row(name: str) -> str:
    ex = load_model_file(str(ROOT / "examples" / f"{name}.py"))
    model, inputs = ex.model().eval(), tuple(ex.example_inputs())
    graph = minicomp.trace(model, inputs)
    k0, b0 = kernel_count(graph), bytes_moved(graph)
    ctx = PassContext(options={"target": "cpu"})
    after = PassManager(default_pipeline("cpu", {})).run(graph.copy(), ctx)
    memory = [d for d in ctx.decisions if d.kind == "memory"]
    arena = memory[-1].subject.split()[1] if memory else "?"
    total = memory[-1].why.split()[-2] if memory else "?"
    cm = minicomp.compile(model, inputs, cache=False)
    kinds = [k.kind for k in cm.kernels]
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs))
        eager = median_time(lambda: model(*inputs)) * 1e3
        ours = median_time(lambda: cm(*inputs)) * 1e3
    return (f"| {name} | {k0} -> {len(kinds)} | {kinds.count('copy')} | {b0:,} -> {bytes_moved(after):,} | "
            f"{int(arena):,} / {int(total):,} | {eager:.3f} -> {ours:.3f} ms |")


def main() -> None:
    print("| model | kernels before -> after | copy kernels | est. bytes moved before -> after |"
          " arena / sum of intermediates (bytes) | latency eager -> minicomp |")
    print("|---|---|---|---|---|---|")
    for name in ("mlp", "lenet", "transformer_block"):
        print(report_row(name), flush=True)


if __name__ == "__main__":
    main()
