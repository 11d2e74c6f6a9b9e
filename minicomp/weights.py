"""Weights of a compiled model: read at call time (the default), or frozen on request.

By default (``freeze=False``) a module's parameters and buffers are *inputs* of the
compiled program, after the user's inputs: every call passes the tensors the module
holds at that moment, so an update after compile (``lin.weight.fill_(1)``,
``m.weight.data.mul_(2)``, ``m.weight.data = new``, ``m.weight = nn.Parameter(...)``)
is seen by the next call, as in eager PyTorch. :class:`WeightPlan` records, per
weight, the owning submodule's path and the attribute name, and fetches the current
tensors with one dict lookup per submodule and per weight (never by ``id()``); their
shapes, dtypes and devices are guarded like the user's inputs (a new shape compiles
a new program).

With ``freeze=True`` the weights are constants of the program (so passes can fold
and pre-pack them) and :class:`FrozenWeights` checks on every call that the module
still holds the same tensor objects with the same data pointer, version counter,
shape, strides and dtype; a change compiles afresh. An update through ``.data``
(``m.weight.data.mul_(2)``) gets a *new* version counter and bypasses this check
(as with Inductor's freezing): freeze only weights that stay fixed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from minicomp.errors import GuardError

__all__ = ["WeightPlan", "FrozenWeights"]


class WeightPlan:
    """Where each parameter and buffer of a module lives, to read the current ones on every call.

    ``names`` are the dotted paths (``fc1.weight``) in ``named_parameters()`` then
    ``named_buffers()`` order, the order of the lifted graph inputs.
    """

    def __init__(self, root: torch.nn.Module, names: Sequence[str], kinds: Sequence[str]):
        self.root = root
        self.names = list(names)
        self.kinds = list(kinds)
        index: dict[str, int] = {"": 0}
        self._mod_steps: list[tuple[int, str]] = []  # (parent's index, child name) -> mods[i + 1]
        self._steps: list[tuple[int, bool, str]] = []  # (module index, is a parameter, attribute name)
        for name, kind in zip(self.names, self.kinds):
            path, _, attr = name.rpartition(".")
            self._steps.append((self._module_index(index, path), kind == "parameter", attr))

    def _module_index(self, index: dict[str, int], path: str) -> int:
        if path not in index:
            parent, _, child = path.rpartition(".")
            self._mod_steps.append((self._module_index(index, parent), child))
            index[path] = len(self._mod_steps)
        return index[path]

    @staticmethod
    def of(model: Any) -> WeightPlan | None:
        """The plan of an ``nn.Module`` (``fx.GraphModule`` included) with weights, else None."""
        if not isinstance(model, torch.nn.Module):
            return None
        named = [(n, "parameter") for n, _ in model.named_parameters()]
        named += [(n, "buffer") for n, _ in model.named_buffers()]
        if not named:
            return None
        return WeightPlan(model, [n for n, _ in named], [k for _, k in named])

    def fetch(self) -> tuple[torch.Tensor, ...]:
        """The tensors the module holds now (the call path: raises KeyError if one is gone)."""
        mods = [self.root]
        for parent, child in self._mod_steps:
            mods.append(mods[parent]._modules[child])
        return tuple([mods[i]._parameters[a] if p else mods[i]._buffers[a] for i, p, a in self._steps])

    def fetch_checked(self) -> list[torch.Tensor]:
        """Like :meth:`fetch`, but reads through ``getattr`` and says clearly what is missing."""
        out = []
        for name in self.names:
            obj: Any = self.root
            try:
                for part in name.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                raise GuardError(f"the model no longer has '{name}' (it had it when compiled); "
                                 "compile it again after changing its structure") from None
            if not isinstance(obj, torch.Tensor):
                raise GuardError(f"the model's '{name}' is now {type(obj).__name__}, not a tensor; "
                                 "compile it again after changing its structure")
            out.append(obj)
        return out


class FrozenWeights:
    """``freeze=True``: what a program's constants were made from, checked on every call.

    One record per module weight (in plan order) and per tensor attribute the graph
    read: the object itself (held; weights are compared with ``is``), its data pointer,
    version counter, shape, strides and dtype.
    """

    def __init__(self, names: Sequence[str], weights: Sequence[torch.Tensor], attrs: Sequence[torch.Tensor]):
        self.names = list(names) + [f"tensor attribute {i}" for i in range(len(attrs))]
        self._weights = [_record(t) for t in weights]
        self._attrs = [_record(t) for t in attrs]

    def holds(self, weights: Sequence[torch.Tensor]) -> bool:
        """True when ``weights`` (fetched now) and the tensor attributes are the ones frozen, unchanged."""
        for t, rec in zip(weights, self._weights):
            if t is not rec[0] or not _same(t, rec):
                return False
        return all(_same(rec[0], rec) for rec in self._attrs)

    def change(self, weights: Sequence[torch.Tensor]) -> str | None:
        """What differs from the frozen state, or None."""
        pairs = list(zip(weights, self._weights)) + [(rec[0], rec) for rec in self._attrs]
        for name, (t, rec) in zip(self.names, pairs):
            if t is not rec[0]:
                return f"weight '{name}' was replaced by another tensor"
            if t._version != rec[2]:
                return f"'{name}' was modified in place (version {rec[2]} -> {t._version})"
            if not _same(t, rec):
                return f"'{name}' now holds other data (its .data was assigned)"
        return None


def _record(t: torch.Tensor) -> tuple:
    return (t, t._version, t.data_ptr(), t.shape, t.stride(), t.dtype)


def _same(t: torch.Tensor, rec: tuple) -> bool:
    _, version, ptr, shape, stride, dtype = rec
    return t._version == version and t.data_ptr() == ptr and t.shape == shape and t.stride() == stride \
        and t.dtype is dtype
