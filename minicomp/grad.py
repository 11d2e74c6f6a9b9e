"""Autograd through a compiled model: the compiled program forward, eager PyTorch backward.

minicomp compiles inference programs. When grad mode is on and an input or a weight
requires grad, a call of a :class:`~minicomp.driver.CompiledModel` goes through
:class:`Differentiable` instead of dropping autograd: one ``torch.autograd.Function``
whose forward runs the compiled program and whose backward recomputes the forward in
eager PyTorch (``torch.func.functional_call`` of the original module with the saved
weights, or the original function) and takes its vector-Jacobian product with
``torch.autograd.grad``. So ``loss.backward()`` fills every ``.grad`` with eager's
values, an in-place change of a saved tensor before ``backward`` raises as in eager,
and each output requires grad exactly when eager's does (found once per pattern of
which tensors require grad, by running the eager forward once).

Under ``torch.no_grad()``, ``torch.inference_mode()`` or when nothing requires grad,
calls never come here: the fast path is unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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

    def __call__(self, user: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                 attrs: Sequence[torch.Tensor]) -> list[Any]:
        """The flat outputs, connected to autograd like eager's."""
        tensors = (*user, *weights, *attrs)
        pattern = tuple(t.requires_grad for t in tensors)
        mask = self._masks.get(pattern)
        if mask is None:
            with torch.enable_grad():
                outs = self.eager(tensors)
            mask = self._masks[pattern] = tuple(isinstance(o, torch.Tensor) and o.requires_grad for o in outs)
        return list(_CompiledForward.apply(self, mask, *tensors))

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
