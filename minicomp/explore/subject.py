"""What the explorer runs: the traced graph, the arrays it is checked on, and the reference outputs.

A model file is traced as ``minicomp.compile`` traces it for the CPU (weights and
tensor attributes lifted to graph inputs after the user's), and the reference is
eager PyTorch on the example inputs. A text IR file has no model: its inputs are
drawn from a seeded generator (so every run checks the same numbers) and the
reference is the input graph run by the interpreter.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def subject_of_model_file(path: str, loaded: tuple[Any, Any] | None = None):
    """Trace ``model()`` on ``example_inputs()`` of the model file ``path`` (``loaded``: the two,
    already made by :func:`minicomp.cli.model_and_inputs`)."""
    import torch
    from torch.utils._pytree import tree_leaves

    from minicomp.cli import model_and_inputs
    from minicomp.explore.record import _Subject
    from minicomp.frontend import trace_with_spec
    from minicomp.weights import WeightPlan
    model, inputs = loaded if loaded is not None else model_and_inputs(path)
    plan = WeightPlan.of(model)
    weights = plan.fetch_checked() if plan is not None else []
    traced = trace_with_spec(model, inputs, lift_weights=True,
                             weights=list(zip(plan.names, weights)) if plan is not None else None)
    tensors = [t.detach() for t in (*inputs, *weights, *traced.tensor_attrs)]
    with torch.no_grad():
        eager = [t.detach() for t in tree_leaves(model(*inputs)) if isinstance(t, torch.Tensor)]
    return _Subject(traced.graph, [_array(t) for t in tensors], eager, "eager PyTorch", tensors)


def _array(t) -> np.ndarray:
    import torch
    if t.dtype == torch.bfloat16:  # the interpreter's bf16 values are float32 arrays
        return t.float().numpy()
    return t.contiguous().numpy()


def subject_of_ir_file(path: str):
    """Parse and verify the text IR file ``path``; seeded inputs; the reference is the interpreter."""
    import torch

    from minicomp.cli import read_ir_file
    from minicomp.explore.record import _Subject
    from minicomp.guards import TORCH_DTYPE
    from minicomp.ir.interpreter import interpret
    graph = read_ir_file(path)
    rng = np.random.default_rng(0)
    arrays = [example_array(v.type, rng) for v in graph.inputs]
    ref = interpret(graph.copy(), *arrays)
    reference = [torch.from_numpy(np.array(a, order="C")).to(TORCH_DTYPE[v.type.dtype])
                 for a, v in zip(ref, graph.outputs)]
    tensors = [torch.from_numpy(np.array(a, order="C")).to(TORCH_DTYPE[v.type.dtype])
               for a, v in zip(arrays, graph.inputs)]
    return _Subject(graph, arrays, reference, "the input graph in the interpreter (seeded inputs)", tensors)


def example_array(ttype: Any, rng: np.random.Generator) -> np.ndarray:
    """A seeded array of ``ttype``: normal floats, small non-negative integers, random bools."""
    dt = ttype.dtype
    shape = tuple(ttype.shape)
    if dt.is_float:
        return rng.standard_normal(shape).astype(dt.np)
    if dt.np == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, 3, size=shape).astype(dt.np)
