"""Optimizer steps compiled by minicomp: ``torch._foreach_*`` ops as a few kernels over all parameters.

``torch.compile``'d ``optimizer.step()`` with ``foreach=True`` (SGD with momentum, Adam,
AdamW, ...) traces to ``aten._foreach_*`` ops, one per update formula term, each over
the list of all parameters (or gradients, or optimizer states). minicomp has no list ops;
:func:`foreach_decompositions` (part of :mod:`minicomp.training`'s table) turns each
into the plain elementwise op applied once to the concatenation of the flattened list
(one kernel for all parameters instead of one per parameter), split back into the
parameters' shapes. Lists whose tensors differ in dtype or device, and per-tensor
scalar lists, are applied tensor by tensor instead. The optimizer's in-place updates of
parameters and states are left to AOTAutograd: the compiled program returns the new
values and its runtime wrapper copies them into the tensors.

The single-tensor implementation (``foreach=False``, PyTorch's default on the CPU) compiles
too, as separate elementwise kernels per parameter.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

aten = torch.ops.aten

#: Elementwise ``_foreach_`` ops and the op applied to each element (or the concatenation).
_ELEMENTWISE = [
    "abs", "add", "addcdiv", "addcmul", "ceil", "clamp_max", "clamp_min", "cos", "div", "erf", "exp", "expm1",
    "floor", "lerp", "log", "log1p", "maximum", "minimum", "mul", "neg", "pow", "reciprocal", "round", "rsqrt",
    "sigmoid", "sign", "sin", "sqrt", "sub", "tanh", "trunc",
]


def foreach_decompositions() -> dict[Any, Callable[..., Any]]:
    """Decompositions of every overload of the elementwise ``_foreach_`` ops (plus copy, clone, zero).

    One table is one trace: a list that an earlier decomposition made by splitting a
    concatenation is read as that concatenation again (no copy in and out between two steps
    of an update formula, so minicomp fuses the whole formula over the flat buffers).
    """
    pieces: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}  # id(piece) -> (piece, flat, index)
    table: dict[Any, Callable[..., Any]] = {}
    for name in _ELEMENTWISE + ["copy", "clone", "zero"]:
        packet = getattr(aten, f"_foreach_{name}")
        for overload in packet.overloads():
            table[getattr(packet, overload)] = _decomposition(name, pieces)
    return table


def _decomposition(name: str, pieces: dict[int, Any]) -> Callable[..., Any]:
    if name == "copy":
        return lambda self, src, non_blocking=False: [s.to(t.dtype).expand(t.shape).clone() for t, s in zip(self, src)]
    if name == "clone":
        return lambda self, memory_format=None: [t.clone() for t in self]
    if name == "zero":
        return lambda self: [torch.zeros_like(t) for t in self]
    base = getattr(aten, name)

    def decomposition(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        if name in ("addcdiv", "addcmul") and len(args) == 4:  # the scale: keyword-only in the plain op
            args, kwargs = args[:3], {**kwargs, "value": args[3]}
        lists = [a for a in args if _is_tensor_list(a)]
        n = len(lists[0])
        if not _concatenable(lists, args):
            return [base(*[a[i] if isinstance(a, (list, tuple)) else a for a in args], **kwargs) for i in range(n)]
        shapes = [torch.broadcast_shapes(*[lst[i].shape for lst in lists]) for i in range(n)]
        out = base(*[_flat(a, shapes, pieces) if _is_tensor_list(a) else a for a in args], **kwargs)
        result = [p.reshape(shape) for p, shape in zip(torch.split(out, [s.numel() for s in shapes]), shapes)]
        for i, p in enumerate(result):
            pieces[id(p)] = (p, out, i)
        return result
    return decomposition


def _is_tensor_list(a: Any) -> bool:
    return isinstance(a, (list, tuple)) and len(a) > 0 and isinstance(a[0], torch.Tensor)


def _concatenable(lists: list[Any], args: tuple[Any, ...]) -> bool:
    """One op over the concatenation computes the same: one dtype and device, the tensors at each index
    broadcastable (a list of step counts against a list of parameters), every other operand a scalar or
    a 0-d tensor (a per-tensor scalar list is not)."""
    first = lists[0]
    if len(first) < 2:
        return False
    kinds = {(t.dtype, t.device) for lst in lists for t in lst}
    if len(kinds) != 1 or any(len(lst) != len(first) for lst in lists):
        return False
    try:
        for i in range(len(first)):
            torch.broadcast_shapes(*[lst[i].shape for lst in lists])
    except RuntimeError:
        return False
    return all(_is_tensor_list(a) or not isinstance(a, (list, tuple)) and
               (not isinstance(a, torch.Tensor) or a.dim() == 0) for a in args)


def _flat(ts: Any, shapes: list[torch.Size], pieces: dict[int, Any]) -> torch.Tensor:
    """The concatenation of the ``ts``, each broadcast to its ``shapes`` entry and flattened: the earlier
    concatenation when ``ts`` are exactly its pieces."""
    known = [pieces.get(id(t)) for t in ts]
    if all(k is not None and k[0] is t and t.shape == s for k, t, s in zip(known, ts, shapes)):
        flat = known[0][1]
        if all(k[1] is flat and k[2] == i for i, k in enumerate(known)) and flat.numel() == sum(t.numel() for t in ts):
            return flat
    return torch.cat([t.expand(s).reshape(-1) for t, s in zip(ts, shapes)])
