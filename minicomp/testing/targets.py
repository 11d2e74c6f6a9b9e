"""Compile an IR :class:`Graph` (not a PyTorch function) for one target and run it.

``minicomp.compile`` starts from a PyTorch program; random graphs start from IR.
:func:`compile_graph` runs the same steps as the driver after tracing, through
the driver's own helpers (its pass pipeline, lowering, CPU JIT and runtime), so
what is tested is what users run. Targets: ``"cpu"`` (LLVM JIT), ``"interpret"``
(passes, then the numpy interpreter) and ``"triton"`` (passes and lowering for
the GPU, kernels run by Triton's interpreter on CPU tensors, ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from minicomp.ir.graph import Graph

Runner = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]
TARGETS = ("cpu", "interpret", "triton")


def compile_graph(graph: Graph, target: str = "cpu", passes: Sequence[Any] | None = None,
                  verify: bool = True) -> Runner:
    """A function running ``graph`` compiled for ``target``: CPU tensors in, list of tensors out.

    ``passes``: None for the driver's default pipeline for the target, else pass
    names or Pass objects ([] runs none). ``verify`` verifies the IR after every
    pass. ``graph`` itself is left untouched.
    """
    from minicomp import driver
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    options: dict[str, Any] = {"verify": verify}
    g, _ = driver._run_passes(graph.copy(), target, passes, options)
    if target == "interpret":
        return driver._interpreter(g)
    from minicomp.ir.lowering import lower_graph
    program = lower_graph(g)
    if target == "cpu":
        from minicomp.runtime import NativeProgram
        module = driver._compile_cpu(program, g.name, {"cache": False})
        return NativeProgram(program, module.entry_address, keepalive=module)
    return _triton_runner(program, g.name)


def _triton_runner(program, name: str) -> Runner:
    from minicomp.codegen.triton import generate
    from minicomp.codegen.triton.module import interpret_mode
    from minicomp.runtime import constant_tensor
    with interpret_mode(True):
        run = generate(program, name).load()
    out_types = {s.index: s.type for s in program.slots if s.kind == "output"}
    consts = sorted((s.index, s) for s in program.slots if s.kind == "const")
    constants = [constant_tensor(program.constants[i], s.type.dtype) for i, s in consts]
    aliases = dict(program.aliases)
    from minicomp.guards import TORCH_DTYPE

    def runner(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ins = [t.contiguous() for t in inputs]
        outs = [torch.empty(out_types[j].shape, dtype=TORCH_DTYPE[out_types[j].dtype]) if j in out_types
                else torch.empty(0) for j in range(program.num_outputs)]
        if program.calls:
            with interpret_mode(True):  # triton reads the flag lazily, also while launching
                run(*ins, *outs, *constants)
        for j, slot_no in aliases.items():
            slot = program.slots[slot_no]
            src = {"input": ins, "const": constants, "output": outs}[slot.kind][slot.index]
            outs[j] = src.clone()
        return outs
    return runner
