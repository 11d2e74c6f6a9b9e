"""Keyword inputs: calling a model that takes ``input_ids=..., attention_mask=...``.

minicomp traces and calls programs over a flat list of tensors. :func:`bind` turns a
call ``model(*args, **kwargs)`` into a :class:`KeywordCall` module taking the positional
tensors, then the keyword tensors in a fixed order, as positional arguments; keyword
arguments that are not tensors (``output_hidden_states=True``, ``None``) are bound as
they are, so the traced program is specialized on them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["KeywordCall", "bind"]


class KeywordCall(torch.nn.Module):
    """``module(*tensors[:n_args], **dict(zip(names, tensors[n_args:])), **constants)``.

    ``module`` is a submodule, so its parameters and buffers are this module's (named
    ``module.<name>``) and a compiled program reads them at call time as usual.
    """

    def __init__(self, module: Any, n_args: int, names: Sequence[str], constants: Mapping[str, Any]):
        super().__init__()
        self.module = module
        self.n_args = n_args
        self.names = tuple(names)
        self.constants = dict(constants)

    def forward(self, *tensors: torch.Tensor) -> Any:
        if len(tensors) != self.n_args + len(self.names):
            raise TypeError(f"expected {self.n_args} positional and {len(self.names)} keyword tensors "
                            f"({', '.join(self.names)}), got {len(tensors)} tensors")
        kwargs = dict(zip(self.names, tensors[self.n_args:]))
        return self.module(*tensors[:self.n_args], **kwargs, **self.constants)

    def flatten(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """The flat tensors of a call ``module(*args, **kwargs)``: the same keyword tensors, the same
        non-tensor values (a different one would need another trace: ``ValueError``)."""
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        others = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
        if len(args) != self.n_args or set(tensors) != set(self.names) or others.keys() != self.constants.keys() \
                or any(others[k] is not v and others[k] != v for k, v in self.constants.items()):
            raise ValueError(f"this call's arguments differ from the traced call's: positional {len(args)} "
                             f"(traced {self.n_args}), keyword tensors {sorted(tensors)} (traced {sorted(self.names)}), "
                             f"other keywords {others} (traced {self.constants})")
        return (*args, *(tensors[k] for k in self.names))


def bind(model: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
         ) -> tuple[KeywordCall, tuple[torch.Tensor, ...]]:
    """``(module, tensors)`` such that ``module(*tensors)`` is ``model(*args, **kwargs)``.

    Positional ``args`` must be tensors; keyword arguments may be anything (non-tensors are
    bound as constants).
    """
    kwargs = dict(kwargs or {})
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"positional argument {i} is a {type(a).__name__}; pass non-tensors by keyword")
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    constants = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    call = KeywordCall(model, len(args), names, constants)
    if isinstance(model, torch.nn.Module) and not model.training:
        call.eval()
    return call, (*args, *(kwargs[k] for k in names))
