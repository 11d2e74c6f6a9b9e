"""ATen calls minicomp cannot compile, kept as ``external`` IR nodes for the PyTorch fallback.

With ``fallback=True`` the importer turns an unsupported ATen call into one
``external`` node (see :mod:`minicomp.ir.ops.misc`) when it can be replayed
exactly: a functional (non-mutating), deterministic op overload whose tensor
arguments are imported values and whose results are tensors of IR dtypes. The
node keeps the op's qualified name (``target``, e.g. ``"aten.sort.default"``),
its result types, and ``args``: a JSON text of the call's arguments in which the
k-th tensor operand is written ``{"tensor": k}``. :func:`decode_args` rebuilds
the call's ``(args, kwargs)`` from that text and the operand tensors, and
:func:`resolve` finds the op in ``torch.ops``. Everything else stays an
:class:`~minicomp.errors.UnsupportedOpError`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from minicomp.errors import UnsupportedOpError
from minicomp.frontend.tensors import ir_dtype
from minicomp.guards import TORCH_DTYPE
from minicomp.ir.graph import Value
from minicomp.ir.types import TensorType

_DTYPES = {str(d).removeprefix("torch."): d for d in vars(torch).values() if isinstance(d, torch.dtype)}
_FORMATS = {str(f).removeprefix("torch."): f for f in vars(torch).values() if isinstance(f, torch.memory_format)}
_LAYOUTS = {str(x).removeprefix("torch."): x for x in vars(torch).values() if isinstance(x, torch.layout)}


class _NotReplayable(Exception):
    """An argument or result the external form cannot express."""


def resolve(target: str) -> torch._ops.OpOverload:
    """The functional op overload named ``target`` ("namespace.op.overload").

    ValueError if there is none, or if its schema says it writes into an argument
    (``is_mutable``: in-place ops, ``out=`` variants, ``aten.max.dim_max``): replayed on the
    caller's tensors it would change them. A text-IR graph can name any target, so this is
    checked here, where the schema is known, and not only by the importer.
    """
    parts = target.split(".")
    if len(parts) != 3:
        raise ValueError(f"external target {target!r} is not 'namespace.op.overload'")
    try:
        op = getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise ValueError(f"no PyTorch op {target!r}") from None
    if not isinstance(op, torch._ops.OpOverload):
        raise ValueError(f"{target!r} is not a PyTorch op overload")
    if op._schema.is_mutable:
        raise ValueError(f"{target!r} writes into its arguments (schema: {op._schema}); "
                         f"only functional ops can be externals")
    return op


def check_results(res: Any, types: Sequence[TensorType], device: torch.device | None) -> list[torch.Tensor]:
    """The results of an external call as a list, checked against the node's declared ``types``.

    The compiled parts after the call read exactly the declared shapes and dtypes, so a result
    of another count, shape, dtype or device (``device`` None: any) raises ValueError instead of
    being read out of bounds or misinterpreted: a text-IR node's ``result_types`` may disagree
    with what its target returns.
    """
    res = [res] if isinstance(res, torch.Tensor) else list(res) if isinstance(res, (tuple, list)) else [res]
    if len(res) != len(types):
        raise ValueError(f"returned {len(res)} result(s), the graph declares {len(types)}")
    for i, (r, t) in enumerate(zip(res, types)):
        if not isinstance(r, torch.Tensor):
            raise ValueError(f"result {i} is a {type(r).__name__}, the graph declares a tensor {t}")
        if tuple(r.shape) != tuple(t.shape) or r.dtype != TORCH_DTYPE[t.dtype] or (
                device is not None and r.device.type != device.type):
            raise ValueError(f"result {i} is {str(r.dtype).removeprefix('torch.')}{list(r.shape)}"
                             f"{'' if device is None else f' on {r.device}'}, the graph declares {t}"
                             f"{'' if device is None else f' on {device}'}")
    return res


def check_call(op: torch._ops.OpOverload, text: str, operands: Sequence[TensorType],
               results: Sequence[TensorType]) -> None:
    """Raise ValueError when ``text`` does not decode for ``operands``, or when ``op`` run on meta
    tensors (shapes and dtypes only, no data) returns other types than ``results``.

    Ops without a meta implementation (or failing on meta tensors) are only checked when they
    run (:func:`check_results`).
    """
    metas = [torch.empty(t.shape, dtype=TORCH_DTYPE[t.dtype], device="meta") for t in operands]
    try:
        args, kwargs = decode_args(text, metas)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"bad args text {text!r}: {e}") from None
    try:
        res = op(*args, **kwargs)
    except Exception:  # noqa: BLE001 - no meta kernel, or data-dependent: checked at call time
        return
    check_results(res, results, None)


def emit_external(ctx: Any, node: fx.Node) -> Value | list[Value] | None:
    """An ``external`` node for ``node`` in ``ctx`` (an Importer), or None when it cannot be replayed."""
    op = node.target
    if not isinstance(op, torch._ops.OpOverload) or op._schema.is_mutable or _random(op, node):
        return None
    operands: list[Value] = []
    try:
        text = json.dumps({"args": _encode(node.args, ctx.env, operands),
                           "kwargs": {k: _encode(v, ctx.env, operands) for k, v in node.kwargs.items()}},
                          sort_keys=True)
        types = _result_types(node.meta.get("val"), str(op))
    except (_NotReplayable, UnsupportedOpError, TypeError, ValueError):
        return None
    results = ctx.emit_multi("external", operands, {"target": str(op), "args": text, "result_types": types},
                             count=len(types))
    return results[0] if isinstance(node.meta["val"], torch.Tensor) else results


def _random(op: torch._ops.OpOverload, node: fx.Node) -> bool:
    """Whether replaying ``op`` could draw random numbers. Ops tagged ``nondeterministic_seeded``
    only for an optional dropout (the attention kernels' ``dropout_p``) are deterministic when
    it is 0, as in inference; the others (bernoulli, rand, ...) always draw."""
    if torch.Tag.nondeterministic_seeded not in op.tags:
        return False
    names = [a.name for a in op._schema.arguments]
    if "dropout_p" not in names:
        return True
    i = names.index("dropout_p")
    p = node.kwargs["dropout_p"] if "dropout_p" in node.kwargs else \
        node.args[i] if i < len(node.args) else op._schema.arguments[i].default_value
    return p != 0


def decode_args(text: str, tensors: Sequence[torch.Tensor]) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` of an external call from its ``args`` text and operand tensors."""
    data = json.loads(text)
    return _decode(data["args"], tensors), {k: _decode(v, tensors) for k, v in data["kwargs"].items()}


def _encode(x: Any, env: dict, operands: list[Value]) -> Any:
    if isinstance(x, fx.Node):
        value = env.get(x)
        if not isinstance(value, Value):
            raise _NotReplayable(f"argument {x.name} is not a tensor")
        for k, v in enumerate(operands):
            if v is value:
                return {"tensor": k}
        operands.append(value)
        return {"tensor": len(operands) - 1}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (list, tuple)):
        return [_encode(v, env, operands) for v in x]
    if isinstance(x, torch.dtype):
        return {"dtype": str(x).removeprefix("torch.")}
    if isinstance(x, torch.device):
        return {"device": str(x)}
    if isinstance(x, torch.memory_format):
        return {"memory_format": str(x).removeprefix("torch.")}
    if isinstance(x, torch.layout):
        return {"layout": str(x).removeprefix("torch.")}
    raise _NotReplayable(f"argument of type {type(x).__name__}")


def _decode(x: Any, tensors: Sequence[torch.Tensor]) -> Any:
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if set(x) == {"tensor"}:
        return tensors[x["tensor"]]
    if set(x) == {"dtype"}:
        return _DTYPES[x["dtype"]]
    if set(x) == {"device"}:
        return torch.device(x["device"])
    if set(x) == {"memory_format"}:
        return _FORMATS[x["memory_format"]]
    if set(x) == {"layout"}:
        return _LAYOUTS[x["layout"]]
    raise ValueError(f"bad external argument {x!r}")


def _result_types(val: Any, op: str) -> tuple[TensorType, ...]:
    vals = [val] if isinstance(val, torch.Tensor) else list(val) if isinstance(val, (tuple, list)) else [None]
    if not vals or not all(isinstance(v, torch.Tensor) for v in vals):
        raise _NotReplayable("a result is not a tensor")
    return tuple(TensorType(ir_dtype(v.dtype, op), tuple(int(s) for s in v.shape)) for v in vals)
