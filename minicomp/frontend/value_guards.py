"""Specialize on the example's values behind guards: tracing models whose Python reads values.

Hugging Face models (and many others) inspect tensor *values* while they build masks
and caches: ``if padding_mask.all(): skip the mask``. With fake tensors there is no
value to inspect and torch raises ``GuardOnDataDependentSymNode``. minicomp then traces
again with the real example tensors (:func:`minicomp.frontend.capture.capture` with
``values=True``): every value the Python code reads is the example's, so the traced
program is the one eager runs for these values, specialized on them.

That is only sound behind a guard per value read. :class:`ValueRecorder` records each
value handed to Python (``aten._local_scalar_dense``, under ``bool(t)``, ``t.item()``,
``int(t)``, ...) with the user's source line; :func:`attach` makes the tensor that was
read an extra output of the traced graph. The compiled program computes those tensors
on every call and :func:`check` compares them with the recorded values: a call whose
values would have taken another path raises :class:`ValueGuardError`, never a wrong
answer; the caller recompiles (or, unable to, reports it).
"""
from __future__ import annotations

import linecache
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.utils._python_dispatch import TorchDispatchMode

from minicomp.errors import DataDependentError, GuardError

aten = torch.ops.aten

#: Ops that hand one tensor value to Python; each leaves one ``_local_scalar_dense`` node in
#: the traced graph (``is_nonzero`` and ``item`` decompose into it below this mode).
_SCALAR_READS = (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default)


class ValueGuardError(GuardError):
    """A call's tensor values differ from those the program was specialized on (see the module docstring)."""


@dataclass(frozen=True)
class ValueGuard:
    """One value the traced Python read: ``value`` (a Python scalar) at ``where`` (``file.py:LINE``)."""

    value: bool | int | float
    where: str | None
    code: str

    def describe(self) -> str:
        at = f" at {self.where}" if self.where else ""
        return f"`{self.code}`{at}" if self.code else f"a value read{at}"


class ValueRecorder(TorchDispatchMode):
    """Records every Python scalar an op hands to the traced code, in order, with the user's line.

    Entered inside the function ``make_fx`` traces (above its proxy mode), so it sees the
    user's ops; ops that return a Python scalar other than the reads above (``aten.equal``)
    raise :class:`DataDependentError`: the graph would not say where the value came from.
    """

    def __init__(self, skip_dirs: tuple[str, ...]):
        super().__init__()
        self.skip_dirs = skip_dirs
        self.reads: list[ValueGuard] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if torch.Tag.dynamic_output_shape in func.tags and _value_shaped(func, args):
            where, code = self._user_line()  # traced with real values, its shape would be burnt in
            raise DataDependentError(str(func), where, code, what="an output shape that depends on tensor values")
        out = func(*args, **(kwargs or {}))
        if isinstance(out, (bool, int, float)):
            where, code = self._user_line()
            if func not in _SCALAR_READS:
                raise DataDependentError(str(func), where, code, what="a tensor value returned to Python")
            self.reads.append(ValueGuard(out, where, code))
        return out

    def _user_line(self) -> tuple[str | None, str]:
        f = sys._getframe(2)
        while f is not None:
            name = f.f_code.co_filename
            if not name.startswith("<") and not os.path.abspath(name).startswith(self.skip_dirs):
                line = linecache.getline(name, f.f_lineno).strip()
                return f"{os.path.basename(name)}:{f.f_lineno}", line
            f = f.f_back
        return None, ""


def _value_shaped(func: Any, args: Sequence[Any]) -> bool:
    """Whether this call's result shape depends on values (indexing: only with a boolean mask)."""
    if func is aten.index.Tensor:
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])
    return True


def attach(gm: fx.GraphModule, reads: Sequence[ValueGuard]) -> list[ValueGuard]:
    """Append the tensor behind each ``_local_scalar_dense`` node of ``gm`` to its outputs.

    ``reads`` are the values :class:`ValueRecorder` saw, in trace order; there must be
    exactly one per such node (else :class:`DataDependentError`: a read the recorder did
    not see, made by torch itself, cannot be guarded). Returns the guards in output order.
    """
    nodes = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten._local_scalar_dense.default]
    if len(nodes) != len(reads):
        where = reads[0].where if reads else None
        raise DataDependentError("aten._local_scalar_dense", where, "",
                                 what=f"{len(nodes)} value read(s) in the graph but {len(reads)} seen in Python")
    if not nodes:
        return []
    out = next(n for n in gm.graph.nodes if n.op == "output")
    flat = list(out.args[0])
    out.args = (flat + [n.args[0] for n in nodes],)
    gm.recompile()
    return list(reads)


def check(guards: Sequence[ValueGuard], tensors: Sequence[torch.Tensor]) -> None:
    """Raise :class:`ValueGuardError` unless each guard tensor holds its recorded value."""
    for guard, t in zip(guards, tensors):
        got = t.item()
        if got != guard.value and not (got != got and guard.value != guard.value):  # NaN read as NaN holds
            raise ValueGuardError(
                f"this call's tensor values take another path through the model's Python than the "
                f"traced example: {guard.describe()} read {guard.value!r} when traced and {got!r} now; "
                f"the compiled program is specialized on the traced values (recompile for these inputs)")


def specialized_spec(user_spec: Any, count: int) -> Any:
    """The pytree spec of a graph's flat outputs: the user's structure, then ``count`` guard leaves."""
    import torch.utils._pytree as pytree
    if not count:
        return user_spec
    return pytree.treespec_tuple([user_spec, *[pytree.treespec_leaf() for _ in range(count)]])
