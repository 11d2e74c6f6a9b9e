"""Data-dependent Python met while tracing, reported as one :class:`DataDependentError`.

minicomp traces with fake tensors: shapes are known, values are not. A model that
branches on a value (``if x.max() > 0``), reads values into Python (``.tolist()``,
``.numpy()``, ``int(x)`` used as a size) or returns a tensor whose *shape* depends on
values (``nonzero``, ``x[x > 0]``, ``unique``) makes torch raise its own errors deep in
the tracer (``GuardOnDataDependentSymNode``, about a hundred lines). This module turns
them into one :class:`~minicomp.errors.DataDependentError` that names the torch call and
the user's source line; with ``fallback=True`` the driver catches it (it is an
``UnsupportedOpError``) and runs the model in eager PyTorch.

The user's line comes from the exception's traceback (the innermost frame outside torch
and minicomp: the user's code is on the stack while it is traced) or, for an error
raised while importing a node (the PyTorch fallback sizing an ``external`` node), from
that node's recorded source line.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from minicomp.errors import DataDependentError

#: The exceptions torch raises for data-dependent code under fake-tensor tracing.
DATA_DEPENDENT = (GuardOnDataDependentSymNode, DataDependentOutputException, DynamicOutputShapeException)
#: Those of them raised when Python reads a value (a trace with the real examples can guard
#: on it, see :mod:`minicomp.frontend.value_guards`); the others are value-dependent shapes.
VALUE_READS = (GuardOnDataDependentSymNode, DataDependentOutputException)

#: Tensor methods that hand tensor values to Python; under fake tensors they fail with
#: messages that do not say why ("tolist() shouldn't be called on a tensor with unallocated
#: storage"), so the source recorder refuses them first (:func:`check_value_read`).
_VALUE_READS = {torch.Tensor.tolist: "Tensor.tolist", torch.Tensor.numpy: "Tensor.numpy"}


def check_value_read(func: Any, where: str, code: str) -> None:
    """Raise :class:`DataDependentError` when ``func`` reads tensor values into Python."""
    name = _VALUE_READS.get(func)
    if name is not None:
        raise DataDependentError(name, where, code, what="reading tensor values into Python")


def data_dependent_error(exc: BaseException, node: Any = None) -> DataDependentError:
    """The :class:`DataDependentError` for torch's ``exc``; ``node``: the FX node being imported."""
    what = "data-dependent Python"
    if isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException)) or node is not None:
        what = "an output shape that depends on tensor values"
    op = _torch_call(exc.__traceback__) or (str(node.target) if node is not None else "data-dependent value")
    where, code = _user_line(exc.__traceback__)
    if where is None and node is not None:
        from minicomp.frontend.importer import user_frame
        where, code = user_frame(node.meta.get("stack_trace"))
    return DataDependentError(op, where, code, what=what)


def _frames(tb: TracebackType | None) -> Iterator[Any]:
    """The traceback's frames, innermost first."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return reversed(frames)


def _user_line(tb: TracebackType | None) -> tuple[str | None, str]:
    """(``file.py:LINE``, source text) of the innermost traceback frame in user code."""
    import linecache

    from minicomp.frontend.capture import SKIP_DIRS  # (capture imports this module)
    for frame in _frames(tb):
        filename = frame.f_code.co_filename
        if filename.startswith("<") or os.path.abspath(filename).startswith(SKIP_DIRS):
            continue
        line = linecache.getline(filename, frame.f_lineno).strip()
        return f"{os.path.basename(filename)}:{frame.f_lineno}", line
    return None, ""


def _torch_call(tb: TracebackType | None) -> str | None:
    """The torch function the user called when it failed (read from the source recorder's frame)."""
    for frame in _frames(tb):
        if frame.f_code.co_name == "__torch_function__" and "func" in frame.f_locals:
            func = frame.f_locals["func"]
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
            if name:
                return name.replace("TensorBase.", "Tensor.").replace("_TensorBase.", "Tensor.")
    return None
