"""``minicomp demo``: compile the examples, check them against PyTorch, print a table.

Eager and minicomp are timed in alternating rounds on the same device (the one minicomp's
program runs on), so a busy machine's drift and the device itself fall on both alike.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

EXAMPLES = ("mlp", "lenet", "transformer_block")


def _examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples"


def _on_gpu(model, inputs: tuple, target: str) -> tuple:
    """``(model, inputs)`` where the ``target``'s program runs: for a GPU target with a CUDA device,
    a copy of the model and the inputs moved there (so minicomp reads its weights where it runs,
    and eager is timed on the same device); unchanged otherwise."""
    import copy

    import torch
    if target not in ("triton", "cuda") or not torch.cuda.is_available():
        return model, inputs
    device = torch.device("cuda")
    moved = copy.deepcopy(model).to(device) if isinstance(model, torch.nn.Module) else model
    return moved, tuple(t.to(device) for t in inputs)


def _latencies_us(model, cm, args, budget_s: float = 1.0) -> tuple[float, float]:
    """Median call times of eager ``model`` and minicomp's ``cm`` on ``args`` in microseconds, timed
    in alternating rounds (:func:`~minicomp.timing.interleaved_medians`, as ``minicomp bench``
    does). The caller passes the model and the arguments on the device ``cm`` runs on
    (:func:`_on_gpu`); on CUDA both wait for the device after each call. NaN for both under
    Triton's interpreter (meaningless there)."""
    import torch

    from minicomp.timing import interleaved_medians
    if cm.target in ("triton", "cuda") and cm.device.type != "cuda":
        return float("nan"), float("nan")
    sync = torch.cuda.synchronize if cm.device.type == "cuda" else (lambda: None)

    def eager():
        model(*args)
        sync()

    def ours():
        cm(*args)
        sync()
    with torch.no_grad():  # for both: no autograd bookkeeping on either side
        med = interleaved_medians({"eager": eager, "minicomp": ours}, budget_s=budget_s)
    return med["eager"] * 1e6, med["minicomp"] * 1e6


def run_demo(targets: list[str] | None = None, progress: Callable[[str], None] = print) -> int:
    """Compile each example for each target; returns 0 when every result matches eager."""
    import torch

    import minicomp
    from minicomp.cli import load_model_file
    from minicomp.passes.manager import kernel_count

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
        before = kernel_count(minicomp.trace(model, inputs))  # one op = one kernel before fusion
        for target in targets:
            progress(f"compiling {name} for {target}")
            where, example = _on_gpu(model, inputs, target)
            cm = minicomp.compile(where, example, target=target)
            args = tuple(t.to(cm.device) for t in example)
            got = cm(*args).cpu()
            err = (got.float() - expected.float()).abs().max().item() if got.numel() else 0.0
            try:
                torch.testing.assert_close(got, expected)
                status = "ok"
            except AssertionError:
                status, ok = "MISMATCH", False
            eager_us, mc_us = _latencies_us(where, cm, args)
            timed = mc_us == mc_us  # NaN: not timed
            rows.append((name, target, str(cm.device) if timed else "-", before, len(cm.kernels), f"{err:.2e}",
                         f"{eager_us:,.0f}" if timed else "-",
                         f"{mc_us:,.0f}" if timed else "-", f"{eager_us / mc_us:.2f}x" if timed else "-", status))
    header = ("model", "target", "timed on", "ops", "kernels", "max err", "eager us", "minicomp us", "speedup", "check")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    return 0 if ok else 1
