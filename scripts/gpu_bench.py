"""Benchmark minicomp's Triton backend against eager PyTorch and torch.compile (Inductor) on a GPU.

Needs a CUDA device (not runnable on the CPU-only dev machine). Runs the three
examples (examples/mlp.py, lenet.py, transformer_block.py: ``model()`` and
``example_inputs()``) and four micro benchmarks, checks minicomp's results against
eager, and writes a markdown table (card name, median times, ratios) to ``--out``.

    python scripts/gpu_bench.py --out gpu_bench.md [--autotune] [--reps 50]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_example(name: str):
    from minicomp.cli import load_model_file
    return load_model_file(str(ROOT / "examples" / f"{name}.py"))


def minicomp_triton(fn, inputs, autotune: bool):
    """``minicomp.compile(fn, inputs, target="triton")``: the public path, traced on the GPU."""
    import minicomp
    return minicomp.compile(fn, inputs, target="triton", autotune=autotune)


def bench(fn, inputs, reps: int) -> float:
    """Median milliseconds of ``fn(*inputs)`` measured with CUDA events after warm-up."""
    for _ in range(5):
        fn(*inputs)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*inputs)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def cases():
    """(name, function or module, inputs on cuda) for every benchmark."""
    out = []
    for name in ("mlp", "lenet", "transformer_block"):
        ex = load_example(name)
        out.append((name, ex.model().cuda().eval(), tuple(t.cuda() for t in ex.example_inputs())))
    x16m = torch.randn(16 * 1024 * 1024, device="cuda")
    out.append(("chain sigmoid(2x+1)*tanh(x)-abs(x) 16M", lambda x: torch.sigmoid(2 * x + 1) * torch.tanh(x) - x.abs(),
                (x16m,)))
    x = torch.randn(4096, 1024, device="cuda")
    out.append(("softmax 4096x1024", lambda x: torch.softmax(x, dim=-1), (x,)))
    w, b = torch.randn(1024, device="cuda"), torch.randn(1024, device="cuda")
    out.append(("layernorm 4096x1024", lambda x, w, b: torch.nn.functional.layer_norm(x, (1024,), w, b), (x, w, b)))
    a, c = torch.randn(2048, 2048, device="cuda"), torch.randn(2048, 2048, device="cuda")
    out.append(("gemm 2048", lambda a, c: a @ c, (a, c)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--autotune", action="store_true", help="let minicomp time a few block sizes per kernel")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench.py needs a CUDA device", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name()
    rows = []
    with torch.no_grad():
        for name, fn, inputs in cases():
            eager = bench(fn, inputs, args.reps)
            note = ""
            try:
                inductor = bench(torch.compile(fn), inputs, args.reps)
            except Exception as exc:  # report and go on: one failure must not lose the table
                inductor, note = float("nan"), f"inductor failed: {type(exc).__name__}; "
            try:
                ours = minicomp_triton(fn, inputs, args.autotune)
                got, want = ours(*inputs), fn(*inputs)
                for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                    try:
                        torch.testing.assert_close(g, w)
                    except AssertionError:
                        note += f"differs from eager: max abs diff {(g.float() - w.float()).abs().max().item():.3g}; "
                mc = bench(ours, inputs, args.reps)
            except Exception as exc:
                mc, note = float("nan"), note + f"minicomp failed: {type(exc).__name__}: {str(exc)[:120]}"
            rows.append((name, eager, inductor, mc, note))
            print(f"{name}: eager {eager:.3f} ms, inductor {inductor:.3f} ms, minicomp {mc:.3f} ms {note}", flush=True)
    lines = [f"# minicomp Triton backend on {card}", "",
             f"torch {torch.__version__}, median of {args.reps} runs, CUDA events, autotune={args.autotune}.", "",
             "| case | eager ms | inductor ms | minicomp ms | eager/minicomp | inductor/minicomp | note |",
             "|---|---|---|---|---|---|---|"]
    for name, e, i, m, note in rows:
        lines.append(f"| {name} | {e:.3f} | {i:.3f} | {m:.3f} | {e / m:.2f}x | {i / m:.2f}x | {note} |")
    pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
