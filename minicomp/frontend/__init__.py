"""PyTorch -> minicomp IR.

``trace(model_or_fn, example_inputs)`` captures the program at the ATen level with
``make_fx`` (fake tensors, ``no_grad``, functionalized; see :mod:`.capture`) and maps
every ATen op onto registry ops (:mod:`.aten_ops`, :mod:`.aten_structural`) in
:mod:`.importer`. User inputs become graph inputs with the *logical* shape of the
example tensors (any stride or channels-last layout of an example is ignored), and
outputs are the flattened tensors the program returns. Weights and buffers become
named ``constant`` nodes (a snapshot: what :func:`trace` returns), or, with
``lift_weights=True`` (``minicomp.compile``'s default), graph inputs after the user
inputs, in the order of the ``weights`` given, followed by the tensors the program
reads by attribute (:attr:`Traced.tensor_attrs`), so that a compiled program reads
the current values on every call.

The output structure (a tensor, a tuple, a dict of tensors, ...) is not part of
the IR graph: :func:`trace_with_spec` returns it as a torch pytree ``TreeSpec`` in
:attr:`Traced.out_spec`, and :meth:`Traced.unflatten` rebuilds the user's structure
from the graph's flat output list.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from minicomp.frontend.capture import capture, clean_name
from minicomp.frontend.data_dependent import DATA_DEPENDENT, VALUE_READS, data_dependent_error
from minicomp.frontend.importer import Importer
from minicomp.frontend.value_guards import ValueGuard, check as check_guards, specialized_spec
from minicomp.ir.graph import Graph

__all__ = ["trace", "trace_with_spec", "Traced"]


@dataclass
class Traced:
    """An imported program: the IR graph plus how its flat outputs nest (``out_spec``)."""

    graph: Graph
    out_spec: pytree.TreeSpec
    #: Tensors read through attributes (closure/global tensors, unregistered tensor attributes),
    #: the last graph inputs when weights are lifted, else constants made from them.
    tensor_attrs: list[torch.Tensor] = field(default_factory=list)
    #: Values the model's Python read while traced with real examples (see
    #: :mod:`minicomp.frontend.value_guards`): one graph output each, after the user's.
    #: ``out_spec`` then nests the user's structure and one leaf per guard.
    guards: tuple[ValueGuard, ...] = ()
    #: The user's output structure (``out_spec`` without the guard leaves).
    user_spec: pytree.TreeSpec | None = None
    #: The program depends on the example inputs' strides (``as_strided`` reads storage order):
    #: the driver guards each call's input strides and offsets against the example's.
    layout_sensitive: bool = False

    def unflatten(self, flat_outputs: Sequence[Any]) -> Any:
        """The user's output structure (tensor, tuple, list, dict, ``ModelOutput``) holding
        ``flat_outputs``; the trailing guard outputs are checked (``ValueGuardError``) and dropped."""
        flat = list(flat_outputs)
        if self.guards:
            n = len(flat) - len(self.guards)
            check_guards(self.guards, flat[n:])
            flat = flat[:n]
        return pytree.tree_unflatten(flat, self.user_spec if self.user_spec is not None else self.out_spec)


def trace_with_spec(model_or_fn: Any, example_inputs: Any, *, name: str | None = None,
                    fallback: bool = False, lift_weights: bool = False,
                    weights: Sequence[tuple[str, torch.Tensor]] | None = None, specialize: bool = False) -> Traced:
    """Import ``model_or_fn(*example_inputs)`` as an IR graph plus its output structure.

    ``model_or_fn`` is an ``nn.Module`` (traced as it is: call ``.eval()`` first for
    inference semantics), a ``torch.fx.GraphModule`` or a function of tensors. The
    result's graph has one input per example tensor and one output per returned
    tensor; every IR type equals the shape and dtype eager PyTorch computes.
    Raises ``minicomp.UnsupportedOpError`` naming the ATen op and the user's source
    line for an op minicomp cannot express; with ``fallback=True`` such an op
    becomes an ``external`` node instead when it can be replayed through
    ``torch.ops`` (see :mod:`minicomp.frontend.external`), and the error is raised
    only for the ones that cannot (mutating, random, non-tensor or unsupported-dtype).
    ``lift_weights`` and ``weights`` (dotted name, tensor) are described in the module
    docstring. ``specialize``: when the model's Python reads a tensor value (Hugging Face
    mask code), trace again with the real examples, specialized on the values read, each
    behind a guard (:attr:`Traced.guards`, checked by :meth:`Traced.unflatten`; see
    :mod:`minicomp.frontend.value_guards`); else such a model raises ``DataDependentError``.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    importer = None
    try:  # data-dependent Python fails in torch's tracer: one clear error instead (issue 14, point 13)
        try:
            captured = capture(model_or_fn, inputs, weights)
        except VALUE_READS:
            if not specialize or not _real(inputs):
                raise
            # Python read a value: trace again with the real examples, specialized behind guards
            captured = capture(model_or_fn, inputs, weights, values=True)
        importer = Importer(captured, name or _default_name(model_or_fn), external=fallback,
                            lift_weights=lift_weights)
        graph = importer.run()
    except DATA_DEPENDENT as exc:
        raise data_dependent_error(exc, importer.node if importer is not None else None) from None
    return Traced(graph, specialized_spec(captured.out_spec, len(captured.guards)), importer.tensor_attrs,
                  captured.guards, captured.out_spec, importer.layout_sensitive)


def _real(inputs: Sequence[Any]) -> bool:
    """Whether every example holds values (no fake or meta tensor) for a trace that reads them."""
    from torch._subclasses.fake_tensor import FakeTensor
    return all(isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor) and t.device.type != "meta"
               for t in inputs)


def trace(model_or_fn: Any, example_inputs: Any, *, name: str | None = None, fallback: bool = False) -> Graph:
    """Import ``model_or_fn(*example_inputs)`` as an IR graph (see :func:`trace_with_spec`)."""
    return trace_with_spec(model_or_fn, example_inputs, name=name, fallback=fallback).graph


def _default_name(obj: Any) -> str:
    if isinstance(obj, torch.fx.GraphModule):
        return "main"
    raw = type(obj).__name__ if isinstance(obj, torch.nn.Module) else getattr(obj, "__name__", "main")
    name = clean_name(re.sub(r"(?<!^)(?=[A-Z])", "_", raw).lower())
    return name if name != "lambda" else "main"
