"""The compiled kernels of the final graph: kind, graph node, LLVM IR, assembly and measured time.

The graph after the last pass is compiled for the CPU as it is (``minicomp.compile``
of a Graph with no passes), so the kernels are the ones the pipeline shown produced.
Each kernel is then called by itself through its native address, with the arena,
inputs, outputs and constants laid out as the program's entry function lays them
out, many times in a row (:func:`minicomp.bench_overhead.kernel_times`, as
``scripts/kernel_profile.py`` does); its median time is shown beside the median time
of one whole call of the entry function (:func:`minicomp.bench_overhead.entry_us`). A kernel
timed alone runs with its data hot in cache, as it rarely is inside a call, so the
shares are estimates and need not add up to 100%.
"""
from __future__ import annotations

import re
import time
from typing import Any

from minicomp.ir.graph import Graph

_OUT_PREFIX = re.compile(r"^out\d+_")
_ASM_LABEL = re.compile(r"^([^\s#.][^:\s]*):")
_KERNEL_OF_LABEL = re.compile(r"\.k(\d+)\.k\d+_")


def kernel_report(graph: Graph, tensors: list[Any], target: str = "cpu") -> dict[str, Any]:
    """``{"kernels": [...], "call_us": ..., "error": None}`` for ``graph`` compiled for ``target``
    ("cpu": LLVM IR, assembly and times; "triton": Triton source, no times)."""
    import minicomp
    cm = minicomp.compile(graph, tensors, target=target, passes=[])
    program = cm.program
    if program is None:
        return {"error": "no native program (the graph ran in the interpreter)", "kernels": []}
    asm = _asm_by_kernel(cm.source("asm")) if target == "cpu" else {}
    owner = _owners(graph)
    out: list[dict[str, Any]] = []
    for i, (info, k) in enumerate(zip(cm.kernels, program.kernels)):
        names = [_OUT_PREFIX.sub("", b.name) for b in k.outputs]
        node = next((owner[n] for n in names if n in owner), None)
        out.append({"index": i, "name": info.name, "kind": info.kind, "source": info.source,
                    "language": "LLVM IR" if target == "cpu" else "Triton", "asm": asm.get(i, ""), "node": node,
                    "outputs": names})
    result: dict[str, Any] = {"kernels": out, "error": None, "arena_bytes": program.arena_bytes}
    if target != "cpu":
        result["timing_error"] = "kernels are timed for the CPU target only"
        return result
    try:
        times, call_us = time_kernels(cm, program, tensors)
    except Exception as exc:  # noqa: BLE001 - the page says why there are no times
        result["timing_error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["call_us"] = call_us
    for k, us in zip(out, times):
        k["us"] = us
        k["share"] = us / call_us if call_us > 0 else None
    return result


def _owners(graph: Graph) -> dict[str, list[str]]:
    """Value name (top level or a fused body's output) -> result names of the top-level node defining it."""
    owner: dict[str, list[str]] = {}
    for node in graph.nodes:
        names = [r.name for r in node.results]
        for n in names:
            owner[n] = names
        body = node.attrs.get("body")
        if isinstance(body, Graph):
            for v in body.outputs:
                owner.setdefault(v.name, names)
    return owner


def _asm_by_kernel(asm: str) -> dict[int, str]:
    """The assembly split at function labels: kernel index -> its functions' lines."""
    parts: dict[int, list[str]] = {}
    current: int | None = None
    for line in asm.splitlines():
        m = _ASM_LABEL.match(line)
        if m:
            k = _KERNEL_OF_LABEL.search(m.group(1))
            current = int(k.group(1)) if k else None
        if current is not None:
            parts.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def time_kernels(cm, program, tensors: list[Any]) -> tuple[list[float], float]:
    """Median microseconds of each kernel (summed over its calls), each called alone, and of one
    whole entry call, through :mod:`minicomp.bench_overhead`. A program whose call takes more than a
    few milliseconds is timed with fewer calls per round, to keep large models quick to explore."""
    import torch

    from minicomp.bench_overhead import entry_us, kernel_times, single_program
    if not single_program(cm):
        raise RuntimeError("the graph did not compile to one native program")
    inputs = tuple(t.contiguous() for t in tensors)
    t0 = time.perf_counter()
    with torch.no_grad():
        cm(*inputs)
    calls = 1 if time.perf_counter() - t0 > 0.005 else 5
    per_kernel: dict[int, float] = {}
    for call, (_, _, us) in zip(program.calls, kernel_times(cm, inputs, calls)):
        per_kernel[call.kernel] = per_kernel.get(call.kernel, 0.0) + us
    return [per_kernel.get(i, 0.0) for i in range(len(program.kernels))], entry_us(cm, inputs, calls)
