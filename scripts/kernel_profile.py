"""Time each kernel of a compiled CPU program on its own (not a test).

    python scripts/kernel_profile.py examples/transformer_block.py [--args 1 64] [--threads N]

Compiles FILE's ``model()`` on ``example_inputs(*args)`` for the CPU, then calls every kernel
of the program by itself through its native address (the arena, outputs and constants laid
out as the entry function lays them out), many times in a row, and prints the median time
of one call, the path the matmul code generator took and the rate. The sum of the kernels
beside the time of the whole entry call and of ``cm(x)`` shows what the call path and the
hand-offs between kernels cost. Each kernel runs with its data hot in cache, as it never is
inside a whole call: read the figures as a ceiling on what a kernel can gain, not as its
share of the call.
"""
from __future__ import annotations

import argparse
import ctypes
import re

import torch

import minicomp
from minicomp.cli import load_model_file
from minicomp.ir.kernel import kernel_checks
from minicomp.runtime import constant_tensor
from minicomp.bench_overhead import median_us
from minicomp.guards import TORCH_DTYPE


def _paths(cm) -> dict[str, str]:
    """Kernel symbol suffix -> the matmul path its code took (from the unoptimized IR)."""
    src = cm.source("llvm-unopt")
    found = {}
    pattern = r'define internal void @"[^"]*\.(k\d+_[A-Za-z0-9_]+)\.(ptile|dtile|rtile|gemv|gemm|dot|axpy)"'
    for name, path in re.findall(pattern, src):
        found.setdefault(name, path)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--args", nargs="*", type=int, default=[], help="arguments of example_inputs()")
    ap.add_argument("--threads", type=int, default=None,
                    help="minicomp threads (default: the usable cores, or MINICOMP_NUM_THREADS)")
    opts = ap.parse_args()
    ex = load_model_file(opts.file)
    model, inputs = ex.model().eval(), tuple(ex.example_inputs(*opts.args))
    cm = minicomp.compile(model, inputs, target="cpu", cache=False, threads=opts.threads)
    entry = cm._current()
    prog, mod, native = entry.program, entry.module, entry.run
    user_inputs = inputs
    if entry.lifted:  # the program also reads the weights and attribute tensors, after the user's inputs
        inputs = (*inputs, *cm._weights(), *entry.attrs)
    arena = torch.empty(prog.arena_bytes + 64, dtype=torch.uint8)
    base = -(-arena.data_ptr() // 64) * 64
    keep: dict[int, torch.Tensor] = {}

    def pointer(slot_id: int) -> int:
        slot = prog.slots[slot_id]
        if slot.kind == "arena":
            return base + slot.index
        if slot.kind == "input":
            return inputs[slot.index].data_ptr()
        if slot_id not in keep:
            keep[slot_id] = (constant_tensor(prog.constants[slot.index], slot.type.dtype) if slot.kind == "const"
                             else torch.empty(slot.type.shape, dtype=TORCH_DTYPE[slot.type.dtype]))
        return keep[slot_id].data_ptr()

    paths = _paths(cm)
    error_word = ctypes.c_int32(0)
    total = 0.0
    print(f"{'kernel':<28} {'kind':<10} {'path':<6} {'us':>8}  shape / rate")
    for call in prog.calls:
        k = prog.kernels[call.kernel]
        ptrs = [pointer(s) for s in call.args]
        if kernel_checks(k):  # kernels with run-time checks take the error word last
            ptrs.append(ctypes.addressof(error_word))
        fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(ptrs))(mod.kernel_address(call.kernel))
        us = median_us(lambda fn=fn, ptrs=ptrs: fn(*ptrs))
        total += us
        extra = ""
        batch = 1
        for d in getattr(k, "batch", ()):
            batch *= d
        if k.kind == "matmul":
            flops = 2 * batch * k.m * k.n * k.k
            extra = f"{batch}x{k.m}x{k.n}x{k.k}: {flops / us / 1e3:.0f} GFLOP/s"
        elif k.kind == "attention":  # the two products (softmax not counted)
            flops = 2 * batch * k.m * k.n * (k.d + k.e)
            extra = f"{batch}x{k.m}x{k.n}, d={k.d}, e={k.e}: {flops / us / 1e3:.0f} GFLOP/s"
        print(f"{k.name:<28} {k.kind:<10} {paths.get(k.name, '-'):<6} {us:8.1f}  {extra}")
    print(f"{'sum of kernels':<46} {total:8.1f}")
    arr = native._args_array()
    outs = [torch.empty(shape, dtype=dt) for _, shape, dt in native._outputs]
    for i, t in enumerate(inputs):
        arr[i] = t.data_ptr()
    for pos, t in zip(native._out_pos, outs):
        arr[pos] = t.data_ptr()
    print(f"{'entry function (one native call)':<46} {median_us(lambda: native._entry(arr)):8.1f}")
    with torch.no_grad():
        print(f"{'cm(*inputs)':<46} {median_us(lambda: cm(*user_inputs)):8.1f}")
        print(f"{'eager':<46} {median_us(lambda: model(*user_inputs)):8.1f}")


if __name__ == "__main__":
    main()
