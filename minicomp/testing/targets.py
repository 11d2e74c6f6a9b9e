"""Compile an IR :class:`Graph` (not a PyTorch function) for one target and run it.

``minicomp.compile`` accepts a Graph as the model; :func:`compile_graph` wraps
that public path (the driver's pass pipeline, lowering, backend and runtime), so
what is tested is what users run. Targets: ``"cpu"`` (LLVM JIT), ``"interpret"``
(passes, then the numpy interpreter) and ``"triton"`` (passes and lowering for
the GPU; without a CUDA device the kernels run in Triton's interpreter on CPU
tensors, and the driver sets ``TRITON_INTERPRET=1``).
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
    """A function running ``graph`` compiled for ``target``: CPU tensors in, list of CPU tensors out.

    ``passes``: None for the driver's default pipeline for the target, else pass
    names or Pass objects ([] runs none). ``verify`` verifies the IR after every
    pass. ``graph`` itself is left untouched.
    """
    import minicomp
    from minicomp.guards import TORCH_DTYPE
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    examples = [torch.zeros(v.type.shape, dtype=TORCH_DTYPE[v.type.dtype]) for v in graph.inputs]
    cm = minicomp.compile(graph, examples, target=target, passes=passes, verify=verify, cache=False,
                          recompile=False)
    if cm.device.type == "cpu":
        return lambda inputs: cm(*inputs)
    return lambda inputs: [t.cpu() for t in cm(*[t.to(cm.device) for t in inputs])]
