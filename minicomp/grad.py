"""Autograd through a compiled model: compiled forward, compiled backward, eager as a listed fallback.

When grad mode is on and an input or a weight requires grad, a call of a
:class:`~minicomp.driver.CompiledModel` goes through :class:`Differentiable` instead of
dropping autograd. On the CPU target the model is compiled for training
(:func:`minicomp.training.aot_callable`: AOTAutograd's joint graph, the min-cut
partitioner, the forward and the backward graph each compiled by minicomp), once per
pattern of which tensors require grad, so ``loss.backward()`` runs native code and
fills every ``.grad`` with eager's values; buffers a training-mode forward updates
(batch norm's running statistics) are updated as eager does.

The eager fallback, listed in :attr:`Differentiable.fallbacks` with a warning: other
targets, a model AOTAutograd cannot trace, and ``backward(create_graph=True)`` (a
second derivative) recompute the forward in eager PyTorch (``torch.func.functional_call``
of the original module with the saved weights, or the original function) and take its
vector-Jacobian product with ``torch.autograd.grad``. Either way an in-place change of
a saved tensor before ``backward`` raises as in eager, and each output requires grad
exactly when eager's does (found once per pattern, by running the eager forward once).

Under ``torch.no_grad()``, ``torch.inference_mode()`` or when nothing requires grad,
calls never come here: the fast path is unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
import warnings

import torch
import torch.utils._pytree as pytree

__all__ = ["Differentiable"]


class Differentiable:
    """Runs one compiled entry under autograd.

    ``model``: the module or function that was compiled, taking ``n_user`` inputs;
    ``weight_names``: the dotted names of its weights in call order; ``run``: the compiled
    program (list of tensors in, flat list of tensors out); ``lifted``: whether ``run``
    takes the weights and tensor attributes after the user inputs (else the user inputs only).
    """

    def __init__(self, model: Any, n_user: int, weight_names: Sequence[str], run: Callable, lifted: bool):
        self.model = model
        self._n_user = n_user
        self.names = list(weight_names)
        self.run = run
        self.lifted = lifted
        self._masks: dict[tuple[bool, ...], tuple[bool, ...]] = {}
        self._trainers: dict[tuple[bool, ...], Callable | None] = {}
        self._proven: set[tuple[bool, ...]] = set()  # patterns whose training compile ran once
        #: Why a call's backward ran in eager PyTorch (empty while everything runs compiled).
        self.fallbacks: list[str] = []
        self.native = _native_cpu(run)

    def __call__(self, user: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                 attrs: Sequence[torch.Tensor]) -> list[Any]:
        """The flat outputs, connected to autograd like eager's."""
        tensors = (*user, *weights, *attrs)
        pattern = tuple(t.requires_grad for t in tensors)
        if pattern in self._proven:
            return list(_Trained.apply(self, self._trainers[pattern], self._masks[pattern], *tensors))
        from minicomp.training import TRACE_LOCK
        with TRACE_LOCK:  # the first call traces (functional_call swaps the module's weights): one at a time
            mask = self._masks.get(pattern)
            if mask is None:
                with torch.enable_grad():
                    outs = self.eager(tensors)
                mask = self._masks[pattern] = tuple(isinstance(o, torch.Tensor) and o.requires_grad for o in outs)
                self._trainers[pattern] = self._trainer(outs)
            trainer = self._trainers.get(pattern)
            if trainer is not None:
                try:
                    outs = list(_Trained.apply(self, trainer, mask, *tensors))
                    self._proven.add(pattern)
                    return outs
                except Exception as err:  # noqa: BLE001 - not traceable for training: eager backward from now on
                    self._fall_back(pattern, err)
        return list(_CompiledForward.apply(self, mask, *tensors))

    def _trainer(self, outs: Sequence[Any]) -> Callable | None:
        """The training compile of the model (built on its first call), or None: the eager backward."""
        if not self.native:
            return None
        if not all(isinstance(o, torch.Tensor) and o.dtype.is_floating_point for o in outs):
            self.fallbacks.append("an output that is not a floating-point tensor: eager backward")
            return None
        from minicomp.training import aot_callable
        return aot_callable(lambda *ts: tuple(self.eager(ts)))

    def _fall_back(self, pattern: tuple[bool, ...], err: Exception) -> None:
        self._trainers[pattern] = None
        self.fallbacks.append(f"{type(err).__name__}: {err}")
        warnings.warn(f"minicomp cannot compile this model for training and runs its backward in eager "
                      f"PyTorch: {err}", RuntimeWarning, stacklevel=4)

    def forward(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The compiled program's flat outputs."""
        return self.run(list(tensors) if self.lifted else list(tensors[:self._n_user]))

    def eager(self, tensors: Sequence[torch.Tensor]) -> list[Any]:
        """Eager PyTorch's flat outputs for these user inputs and weights."""
        user = tuple(tensors[:self._n_user])
        if self.names:
            weights = tensors[self._n_user:self._n_user + len(self.names)]
            out = torch.func.functional_call(self.model, dict(zip(self.names, weights)), user)
        else:
            out = self.model(*user)
        return pytree.tree_flatten(out)[0]

    def vjp(self, tensors: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list[Any]:
        """Gradients of the outputs (cotangents ``grads``) w.r.t. each tensor that requires grad."""
        result: list[Any] = [None] * len(tensors)
        need: list[int] = []  # each tensor once (one passed twice gets its whole gradient at its first place)
        for i, t in enumerate(tensors):
            if t.requires_grad and not any(tensors[j] is t for j in need):
                need.append(i)
        create = torch.is_grad_enabled()  # backward(create_graph=True): keep the graph of the gradients
        with torch.enable_grad():
            outs = self.eager(tensors)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if isinstance(o, torch.Tensor) and o.requires_grad and g is not None]
        if not need or not pairs:
            return result
        got = torch.autograd.grad([o for o, _ in pairs], [tensors[i] for i in need], [g for _, g in pairs],
                                  allow_unused=True, create_graph=create)
        for i, g in zip(need, got):
            result[i] = g
        return result


class _CompiledForward(torch.autograd.Function):
    """Forward: the compiled program. Backward: eager PyTorch's vector-Jacobian product."""

    @staticmethod
    def forward(ctx: Any, call: Differentiable, mask: tuple[bool, ...], *tensors: torch.Tensor) -> tuple:
        outs = call.forward(tensors)
        ctx.call = call
        ctx.save_for_backward(*tensors)
        ctx.mark_non_differentiable(*[o for o, d in zip(outs, mask) if not d])
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
        return (None, None, *ctx.call.vjp(ctx.saved_tensors, grads))


class _Trained(torch.autograd.Function):
    """Forward: the training compile's forward graph. Backward: its compiled backward graph, or (a second
    derivative, ``create_graph=True``) eager PyTorch's vector-Jacobian product."""

    @staticmethod
    def forward(ctx: Any, call: Differentiable, trainer: Callable, mask: tuple[bool, ...],
                *tensors: torch.Tensor) -> tuple:
        inner = [t.detach().requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in tensors]
        with torch.enable_grad():
            outs = trainer(*inner)
        ctx.call, ctx.inner, ctx.outs = call, inner, outs
        ctx.save_for_backward(*tensors)
        ctx.mark_non_differentiable(*[o for o, d in zip(outs, mask) if not d])
        return tuple(o.detach() for o in outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
        tensors = ctx.saved_tensors  # raises like eager when one was modified in place since
        if torch.is_grad_enabled():
            return (None, None, None, *ctx.call.vjp(tensors, grads))
        need = [i for i, t in enumerate(ctx.inner) if t.requires_grad]
        pairs = [(o, g) for o, g in zip(ctx.outs, grads) if o.requires_grad and g is not None]
        result: list[Any] = [None] * len(tensors)
        if need and pairs:
            got = torch.autograd.grad([o for o, _ in pairs], [ctx.inner[i] for i in need],
                                      [g for _, g in pairs], allow_unused=True)
            for i, g in zip(need, got):
                result[i] = g
        return (None, None, None, *result)


def _native_cpu(run: Any) -> bool:
    """Whether ``run`` is a CPU program (native, or native parts with PyTorch ops between them)."""
    from minicomp.fallback import PartitionedProgram
    from minicomp.runtime import NativeProgram
    return isinstance(run, (NativeProgram, PartitionedProgram))
