"""``minicomp demo``: compile the examples, check them against PyTorch, print a table."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

EXAMPLES = ("mlp", "lenet", "transformer_block")


def _examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples"


def _latency_us(cm, args) -> float:
    """Median call time in microseconds; NaN under Triton's interpreter (meaningless there)."""
    import torch

    from minicomp.timing import median_time
    if cm.device.type == "cuda":
        def call():
            cm(*args)
            torch.cuda.synchronize()
        return median_time(call) * 1e6
    if cm.target in ("triton", "cuda"):
        return float("nan")
    return median_time(lambda: cm(*args)) * 1e6


def run_demo(targets: list[str] | None = None, progress: Callable[[str], None] = print) -> int:
    """Compile each example for each target; returns 0 when every result matches eager."""
    import torch

    import minicomp
    from minicomp.cli import load_model_file
    from minicomp.passes.manager import kernel_count
    from minicomp.timing import median_time

    targets = targets or ["cpu"]
    if "triton" in targets and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
        progress("no CUDA device: Triton kernels run in Triton's interpreter (no latency measured)")
    rows, ok = [], True
    for name in EXAMPLES:
        module = load_model_file(str(_examples_dir() / f"{name}.py"))
        model, inputs = module.model(), tuple(module.example_inputs())
        with torch.no_grad():
            expected = model(*inputs)
            eager_us = median_time(lambda: model(*inputs)) * 1e6
        before = kernel_count(minicomp.trace(model, inputs))  # one op = one kernel before fusion
        for target in targets:
            progress(f"compiling {name} for {target}")
            cm = minicomp.compile(model, inputs, target=target)
            args = tuple(t.to(cm.device) for t in inputs)
            got = cm(*args).cpu()
            err = (got.float() - expected.float()).abs().max().item() if got.numel() else 0.0
            try:
                torch.testing.assert_close(got, expected)
                status = "ok"
            except AssertionError:
                status, ok = "MISMATCH", False
            with torch.no_grad():  # as eager is timed: no autograd bookkeeping on either side
                mc_us = _latency_us(cm, args)
            timed = mc_us == mc_us  # NaN: not timed
            rows.append((name, target, before, len(cm.kernels), f"{err:.2e}", f"{eager_us:,.0f}",
                         f"{mc_us:,.0f}" if timed else "-", f"{eager_us / mc_us:.2f}x" if timed else "-", status))
    header = ("model", "target", "ops", "kernels", "max err", "eager us", "minicomp us", "speedup", "check")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    return 0 if ok else 1
