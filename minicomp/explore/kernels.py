"""The compiled kernels of the final graph: kind, graph node, LLVM IR, assembly and measured time.

The graph after the last pass is compiled for the CPU as it is (``minicomp.compile``
of a Graph with no passes), so the kernels are the ones the pipeline shown produced.
Each kernel is then called by itself through its native address, with the arena,
inputs, outputs and constants laid out as the program's entry function lays them
out, many times in a row (as ``scripts/kernel_profile.py`` does); its median time is
shown beside the median time of one whole call of the entry function. A kernel
timed alone runs with its data hot in cache, as it rarely is inside a call, so the
shares are estimates and need not add up to 100%.
"""
from __future__ import annotations

import ctypes
import re
import statistics
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
    entry = cm._current()
    program, module = entry.program, entry.module
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
        times, call_us = time_kernels(program, module, entry.run, tensors)
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


def _median_us(fn, calls: int = 10, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` back-to-back calls, in microseconds; a
    call slower than a few milliseconds is timed fewer times, to keep large models quick to explore."""
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > 0.005:
        calls, rounds = 1, 3
    for _ in range(calls):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times) * 1e6


def time_kernels(program, module, native, tensors: list[Any]) -> tuple[list[float], float]:
    """Median microseconds of each kernel call alone, and of one whole entry call."""
    import torch

    from minicomp.guards import TORCH_DTYPE
    from minicomp.ir.kernel import kernel_checks
    from minicomp.runtime import constant_tensor
    inputs = [t.contiguous() for t in tensors]
    arena = torch.empty(program.arena_bytes + 64, dtype=torch.uint8)
    base = -(-arena.data_ptr() // 64) * 64
    keep: dict[int, Any] = {}

    def pointer(slot_id: int) -> int:
        slot = program.slots[slot_id]
        if slot.kind == "arena":
            return base + slot.index
        if slot.kind == "input":
            return inputs[slot.index].data_ptr()
        if slot_id not in keep:
            keep[slot_id] = (constant_tensor(program.constants[slot.index], slot.type.dtype) if slot.kind == "const"
                             else torch.empty(slot.type.shape, dtype=TORCH_DTYPE[slot.type.dtype]))
        return keep[slot_id].data_ptr()

    error_word = ctypes.c_int32(0)
    per_kernel: dict[int, float] = {}
    for call in program.calls:
        k = program.kernels[call.kernel]
        ptrs = [pointer(s) for s in call.args]
        if kernel_checks(k):  # kernels with run-time checks take the error word last
            ptrs.append(ctypes.addressof(error_word))
        fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(ptrs))(module.kernel_address(call.kernel))
        per_kernel[call.kernel] = per_kernel.get(call.kernel, 0.0) + _median_us(lambda fn=fn, p=ptrs: fn(*p))
    with torch.no_grad():
        call_us = _median_us(lambda: native(inputs))
    return [per_kernel.get(i, 0.0) for i in range(len(program.kernels))], call_us
