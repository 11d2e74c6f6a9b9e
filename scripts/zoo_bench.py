"""Benchmark the model zoo: eager, Inductor and minicomp latency at batch 1, compile times, kernels.

    python scripts/zoo_bench.py                      # every zoo model, tiny configurations
    python scripts/zoo_bench.py gpt2 resnet18 --size full --repeats 50 --json /tmp/zoo.json

Per model: eager latency (``torch.no_grad``), Inductor's cold compile time (first call of
``torch.compile(model)``, its caches off) and latency, minicomp's compile time and latency
(``minicomp.compile(..., target="cpu")``), minicomp's kernel count and Inductor's generated
kernel count, and whether minicomp matched eager at float32's default tolerances. Latency
is the median of ``--repeats`` timed calls after warm-up. Models whose Python reads tensor
values (Hugging Face masks) are compiled specialized on the example's values
(``trace_with_spec(..., specialize=True)``, weights frozen), marked ``specialized``, until
``minicomp.compile`` does that itself. :func:`run` returns the rows for ``minicomp bench --zoo``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch


def _median_seconds(fn: Any, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _minicomp(fn: Any, inputs: tuple) -> tuple[Any, Any, str]:
    """(callable over ``inputs`` returning the user's structure, compiled model, how it was compiled)."""
    import minicomp
    from minicomp.errors import DataDependentError
    from minicomp.frontend import trace_with_spec
    try:
        cm = minicomp.compile(fn, inputs, target="cpu", cache=False)
        return (lambda: cm(*inputs)), cm, "native"
    except DataDependentError:
        traced = trace_with_spec(fn, inputs, specialize=True)
        cm = minicomp.compile(traced.graph, inputs, target="cpu", cache=False)
        return (lambda: traced.unflatten(cm(*inputs))), cm, "specialized"


def _inductor(fn: Any, inputs: tuple) -> tuple[Any, float, int | None]:
    """(callable, cold compile seconds, generated kernel count or None)."""
    import torch._dynamo
    import torch._inductor.config as cfg
    from torch._inductor import metrics
    torch._dynamo.reset()
    metrics.reset()
    compiled = torch.compile(fn)
    with cfg.patch(fx_graph_cache=False, autotune_local_cache=False), torch.no_grad():
        start = time.perf_counter()
        compiled(*inputs)
        seconds = time.perf_counter() - start
    return (lambda: compiled(*inputs)), seconds, getattr(metrics, "generated_kernel_count", None)


def measure(name: str, size: str = "tiny", repeats: int = 20, inductor: bool = True) -> dict[str, Any]:
    """One row: the figures for zoo model ``name`` (see the module docstring)."""
    from minicomp import zoo
    from minicomp.frontend.keywords import bind
    model, args, kwargs = zoo.build(name, size)
    fn, inputs = bind(model, args, kwargs)
    row: dict[str, Any] = {"model": name, "size": size}
    with torch.no_grad():
        want = fn(*inputs)
        row["eager_ms"] = 1e3 * _median_seconds(lambda: fn(*inputs), repeats)
        start = time.perf_counter()
        try:
            call, cm, how = _minicomp(fn, inputs)
        except Exception as err:  # noqa: BLE001 - a model that does not compile is a row, not a crash
            row["minicomp_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        else:
            row["minicomp_compile_s"] = time.perf_counter() - start
            row["minicomp_mode"] = how
            row["minicomp_kernels"] = len(cm.kernels)
            try:
                torch.testing.assert_close(call(), want)
                row["matches_eager"] = True
            except AssertionError:
                row["matches_eager"] = False
            row["minicomp_ms"] = 1e3 * _median_seconds(call, repeats)
        if inductor:
            try:
                icall, seconds, kernels = _inductor(fn, inputs)
                row.update(inductor_compile_s=seconds, inductor_kernels=kernels,
                           inductor_ms=1e3 * _median_seconds(icall, repeats))
            except Exception as err:  # noqa: BLE001
                row["inductor_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return row


def run(names: list[str] | None = None, size: str = "tiny", repeats: int = 20, inductor: bool = True,
        out: Any = None) -> list[dict[str, Any]]:
    """Rows for ``names`` (default: the whole zoo), printed to ``out`` as they come when given."""
    from minicomp import zoo
    rows = []
    for name in names or zoo.names():
        row = measure(name, size, repeats, inductor)
        rows.append(row)
        if out is not None:
            print(format_row(row), file=out, flush=True)
    return rows


def _f(row: dict[str, Any], key: str, fmt: str) -> str:
    return format(row[key], fmt) if row.get(key) is not None else "-"


def format_row(row: dict[str, Any]) -> str:
    """One table line: model, latencies (ms), compile times (s), kernels, matches."""
    if "minicomp_error" in row:
        return f"{row['model']:22s} eager {_f(row, 'eager_ms', '.3f')} ms; minicomp: {row['minicomp_error']}"
    return (f"{row['model']:22s} eager {_f(row, 'eager_ms', '8.3f')}  inductor {_f(row, 'inductor_ms', '8.3f')}  "
            f"minicomp {_f(row, 'minicomp_ms', '8.3f')} ms | compile inductor {_f(row, 'inductor_compile_s', '6.1f')}"
            f"  minicomp {_f(row, 'minicomp_compile_s', '6.1f')} s | kernels inductor "
            f"{_f(row, 'inductor_kernels', 'd')} minicomp {_f(row, 'minicomp_kernels', 'd')} | "
            f"{row.get('minicomp_mode', '')} matches={row.get('matches_eager')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-inductor", action="store_true", help="skip torch.compile (Inductor)")
    parser.add_argument("--json", help="write the rows here")
    a = parser.parse_args(argv)
    rows = run(a.models or None, a.size, a.repeats, not a.no_inductor, out=sys.stdout)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r.get("matches_eager") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
