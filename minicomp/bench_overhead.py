"""What a compiled CPU call costs beyond its kernels: each kernel timed alone against the whole call.

:func:`kernel_times` calls every kernel of a compiled program by itself through its native
address, with the arena, outputs and constants laid out as the entry function lays them out,
many times in a row (data hot in cache, as it never is inside a whole call: a kernel's time
alone is a floor for its share of the call). :func:`call_overhead` sets the sum of those against

* the entry function (one native call of the whole program): ``entry_us - kernels_us`` is
  the per-call overhead of issue 19's target, the hand-offs between kernels (pool wake-ups,
  the tail of the last grains, arena set-up);
* ``cm(*inputs)``: ``call_us - entry_us`` is the Python call path (guards, weights read at
  call time, output allocation, the foreign call).

``scripts/kernel_profile.py`` prints the same per kernel, with the path each matmul took.
"""
from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable


def median_us(fn: Callable[[], object], calls: int = 50, rounds: int = 20) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` back-to-back calls, in microseconds."""
    for _ in range(calls * 4):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times) * 1e6


class _Layout:
    """Pointers for each slot of a program as its entry function would pass them."""

    def __init__(self, cm, inputs: tuple):
        import torch
        entry = cm._current()
        self.prog, self.mod, self.native = entry.program, entry.module, entry.run
        if entry.lifted:  # the program also reads the weights and attribute tensors, after the user's inputs
            inputs = (*inputs, *cm._weights(), *entry.attrs)
        self.inputs = inputs
        self.arena = torch.empty(self.prog.arena_bytes + 64, dtype=torch.uint8)
        self.base = -(-self.arena.data_ptr() // 64) * 64
        self.keep: dict[int, object] = {}

    def pointer(self, slot_id: int) -> int:
        """The address the entry function passes for slot ``slot_id`` (constants and outputs made once)."""
        import torch

        from minicomp.guards import TORCH_DTYPE
        from minicomp.runtime import constant_tensor
        slot = self.prog.slots[slot_id]
        if slot.kind == "arena":
            return self.base + slot.index
        if slot.kind == "input":
            return self.inputs[slot.index].data_ptr()
        if slot_id not in self.keep:
            self.keep[slot_id] = (constant_tensor(self.prog.constants[slot.index], slot.type.dtype)
                                  if slot.kind == "const"
                                  else torch.empty(slot.type.shape, dtype=TORCH_DTYPE[slot.type.dtype]))
        return self.keep[slot_id].data_ptr()


def single_program(cm) -> bool:
    """Whether ``cm`` runs as one native program (partitioned or eager ones have no single entry)."""
    try:
        entry = cm._current()
    except Exception:  # noqa: BLE001 - nothing compiled: no program
        return False
    return entry.program is not None and entry.module is not None and not entry.parts


def kernel_times(cm, inputs: tuple, calls: int = 50) -> list[tuple[str, str, float]]:
    """(name, kind, median microseconds) of every kernel call of ``cm``'s program, each run alone."""
    from minicomp.ir.kernel import kernel_checks
    lay = _Layout(cm, inputs)
    error_word = ctypes.c_int32(0)
    out = []
    for call in lay.prog.calls:
        k = lay.prog.kernels[call.kernel]
        ptrs = [lay.pointer(s) for s in call.args]
        if kernel_checks(k):  # kernels with run-time checks take the error word last
            ptrs.append(ctypes.addressof(error_word))
        fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(ptrs))(lay.mod.kernel_address(call.kernel))
        out.append((k.name, k.kind, median_us(lambda fn=fn, ptrs=ptrs: fn(*ptrs), calls)))
    return out


def entry_us(cm, inputs: tuple, calls: int = 50) -> float:
    """Median microseconds of one call of the program's entry function (all kernels, no Python)."""
    import torch
    lay = _Layout(cm, inputs)
    native = lay.native
    arr = native._args_array()
    outs = [torch.empty(shape, dtype=dt) for _, shape, dt in native._outputs]
    for i, t in enumerate(lay.inputs):
        arr[i] = t.data_ptr()
    for pos, t in zip(native._out_pos, outs):
        arr[pos] = t.data_ptr()
    return median_us(lambda: native._entry(arr), calls)


def call_overhead(cm, inputs: tuple, calls: int = 50) -> dict | None:
    """Kernels alone, entry call and ``cm(*inputs)`` in microseconds, and the two overheads of the
    module docstring; None when ``cm`` is not one native program."""
    import torch
    if not single_program(cm):
        return None
    kernels = kernel_times(cm, inputs, calls)
    total = sum(us for _, _, us in kernels)
    entry = entry_us(cm, inputs, calls)
    with torch.no_grad():
        call = median_us(lambda: cm(*inputs), calls)
    return {"kernels_us": total, "entry_us": entry, "call_us": call, "overhead_us": entry - total,
            "call_path_us": call - entry, "kernels": [{"name": n, "kind": k, "us": us} for n, k, us in kernels]}
