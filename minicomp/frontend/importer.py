"""Turn a captured ATen FX graph into a minicomp :class:`~minicomp.ir.graph.Graph`.

The :class:`Importer` walks the FX nodes in order. User inputs become the first
graph inputs. Parameters and buffers become named ``constant`` nodes, or, with
``lift_weights=True`` (what ``minicomp.compile`` does unless ``freeze=True``), named
graph inputs after the user's, so that a compiled program reads them at call time;
so do tensors the program reads through ``get_attr`` other than fresh constants
(``torch.tensor(...)`` in the traced code, imported through ``lift_fresh_copy``),
which are listed in :attr:`Importer.tensor_attrs` for the caller to pass. Each ATen call
is mapped by the handler registered for it in :mod:`minicomp.frontend.aten_ops`.
After every node the IR result types are checked against the shape and dtype torch
computed for it (``node.meta["val"]``), so a mapping error is reported at import,
naming the op and the user's source line.
"""
from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from minicomp.errors import CompileError, UnsupportedOpError
from minicomp.frontend.capture import SKIP_DIRS, Captured
from minicomp.frontend.tensors import ir_dtype, to_numpy
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Value, constant
from minicomp.ir.types import TensorType

def user_frame(stack_trace: str | None) -> tuple[str | None, str]:
    """(``file.py:LINE``, source text) of the innermost frame in user code, or (None, "").

    Frames in torch and in minicomp itself (:data:`~minicomp.frontend.capture.SKIP_DIRS`)
    and frames without a file (``<string>``, ``<frozen ...>``) are not user code: an op
    inside an ``nn`` layer is reported at the user's line that called the layer.
    """
    if not stack_trace:
        return None, ""
    lines = stack_trace.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line.startswith('File "'):
            continue
        path = line[len('File "'):line.index('"', len('File "'))]
        if path.startswith("<") or os.path.abspath(path).startswith(SKIP_DIRS):
            continue
        lineno = line.split(", line ")[1].split(",")[0] if ", line " in line else "?"
        code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File ") else ""
        return f"{os.path.basename(path)}:{lineno}", code
    return None, ""


class Importer:
    """Builds one IR graph from one :class:`Captured` program. Handlers call back into it."""

    def __init__(self, captured: Captured, name: str, external: bool = False, lift_weights: bool = False):
        self.captured = captured
        self.external = external  # True: unsupported ops become ``external`` nodes (the PyTorch fallback)
        self.lift_weights = lift_weights
        #: Tensors read through ``get_attr`` (closure/global tensors, plain tensor attributes):
        #: trailing graph inputs when weights are lifted, constants otherwise.
        self.tensor_attrs: list[torch.Tensor] = []
        #: a handler read the inputs' memory layout (as_strided): calls must have the example's strides
        self.layout_sensitive = False
        self._weight_inputs: list[Value] = []  # graph inputs that hold weights (see is_weight)
        self.graph = Graph(name)
        self.env: dict[fx.Node, Any] = {}
        self.node: fx.Node | None = None  # the FX node being imported
        self.loc: str | None = None

    # -- helpers for handlers -------------------------------------------------------------
    @property
    def op_name(self) -> str:
        return str(self.node.target) if self.node is not None else "?"

    def expected(self, index: int | None = None) -> tuple[tuple[int, ...], DType]:
        """(shape, dtype) torch computed for the current node (or its ``index``-th result)."""
        val = self.node.meta.get("val")
        if index is not None:
            val = val[index]
        return tuple(int(s) for s in val.shape), ir_dtype(val.dtype, self.op_name, self.loc)

    def emit(self, op: str, operands: Sequence[Value] = (), **attrs: Any) -> Value:
        """Add one single-result IR node at the current source location."""
        return self.emit_multi(op, operands, attrs)[0]

    def emit_multi(self, op: str, operands: Sequence[Value], attrs: dict[str, Any], count: int = 1) -> list[Value]:
        """Add an IR node with ``count`` results; they are named after the FX node."""
        names = [self.node.name] * count if self.node is not None else None
        try:
            node = self.graph.add(op, list(operands), attrs, names=names, loc=self.loc)
        except Exception as e:  # an IR rule rejected what we built: say which torch op it was
            raise CompileError(f"importing '{self.op_name}'{self._at()}: IR op '{op}' failed: {e}") from e
        return node.results

    def const(self, value: Any, dtype: DType) -> Value:
        """A constant (a 0-d one for a Python scalar) of IR dtype ``dtype``."""
        return constant(self.graph, np.asarray(value, dtype=np.float64 if dtype.is_float else None)
                        .astype(dtype.np), dtype)

    def cast(self, value: Value, dtype: DType) -> Value:
        """``value`` converted to ``dtype`` (itself when it already has it)."""
        return value if value.type.dtype is dtype else self.emit("cast", [value], dtype=dtype)

    def is_weight(self, value: Value) -> bool:
        """Whether ``value`` is a weight: a constant, or a graph input holding a parameter, buffer or
        tensor attribute (lifted, or a parameter Dynamo passed as an input). A Linear's ``t(weight)``
        feeding ``mm``/``addmm`` is imported as ``linear`` only for weights (activations keep ``matmul``)."""
        p = value.producer
        return (p is not None and p.op == "constant") or any(value is w for w in self._weight_inputs)

    def unsupported(self, detail: str = "") -> UnsupportedOpError:
        """The error to raise for the current node (caller raises it)."""
        where, code = user_frame(self.node.meta.get("stack_trace"))
        if code:
            detail = f"{detail}; in `{code}`" if detail else f"in `{code}`"
        return UnsupportedOpError(self.op_name, where, detail)

    def _at(self) -> str:
        return f" at {self.loc}" if self.loc else ""

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Graph:
        from minicomp.frontend.aten_ops import handler_for
        cap = self.captured
        placeholders = [n for n in cap.gm.graph.nodes if n.op == "placeholder"]
        n_params = len(cap.param_names)
        for i, node in enumerate(placeholders[n_params:]):  # user inputs first
            self.env[node] = self._input(node, cap.input_names[i])
            if i in cap.weight_inputs:
                self._weight_inputs.append(self.env[node])
        for i, node in enumerate(placeholders[:n_params]):
            if self.lift_weights:
                self.env[node] = self._input(node, cap.param_names[i])
                self._weight_inputs.append(self.env[node])
            else:
                arr, dt = to_numpy(cap.param_values[i])
                self.env[node] = constant(self.graph, arr, dt, name=cap.param_names[i])
        for node in cap.gm.graph.nodes:
            self.node = node
            self.loc = user_frame(node.meta.get("stack_trace"))[0]
            if node.op == "get_attr":
                self.env[node] = self._get_attr(node)
            elif node.op == "call_function":
                if not node.users:
                    schema = getattr(node.target, "_schema", None)
                    if schema is not None and schema.is_mutable:
                        raise self.unsupported("in-place update of a graph input or weight")
                    continue  # dead in torch: no need to import (or support) it
                if node.target is operator.getitem:
                    self.env[node] = self._getitem(node)
                    continue
                self.env[node] = self._call(node, handler_for(node.target))
            elif node.op == "output":
                outs = fx.node.map_arg(node.args[0], lambda n: self.env[n])
                for o in outs:
                    if not isinstance(o, Value):
                        raise CompileError(f"output {o!r} is not a tensor; minicomp programs return tensors")
                self.graph.set_outputs(outs)
            elif node.op != "placeholder":
                raise self.unsupported(f"FX node kind '{node.op}'")
        _remove_dead(self.graph)
        return self.graph

    def _input(self, node: fx.Node, name: str) -> Value:
        """A graph input typed like the placeholder's example value."""
        shape, dt = tuple(node.meta["val"].shape), ir_dtype(node.meta["val"].dtype, "input")
        return self.graph.add_input(TensorType(dt, shape), name)

    def _get_attr(self, node: fx.Node) -> Value:
        """A tensor the program reads by attribute: a lifted input, or a constant when frozen or fresh."""
        tensor = _fetch_attr(self.captured.gm, str(node.target))
        name = str(node.target).lstrip("_")
        fresh = bool(node.users) and all(u.target is torch.ops.aten.lift_fresh_copy.default for u in node.users)
        if self.lift_weights and not fresh:
            for i, t in enumerate(self.tensor_attrs):  # one input per tensor, however often it is read
                if t is tensor:
                    return self.graph.inputs[len(self.graph.inputs) - len(self.tensor_attrs) + i]
            self.tensor_attrs.append(tensor)
            shape, dt = tuple(tensor.shape), ir_dtype(tensor.dtype, "input")
            self._weight_inputs.append(self.graph.add_input(TensorType(dt, shape), name))
            return self._weight_inputs[-1]
        if not fresh:
            self.tensor_attrs.append(tensor)
        arr, dt = to_numpy(tensor)
        return constant(self.graph, arr, dt, name=name)

    def _call(self, node: fx.Node, handler: Any) -> Any:
        """Import one ATen call with its handler; unsupported ones become ``external`` if allowed."""
        try:
            if handler is None:
                raise self.unsupported("no minicomp mapping for this ATen op")
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self.env[n])
            result = handler(self, *args, **kwargs)
        except UnsupportedOpError:
            if not self.external:
                raise
            from minicomp.frontend.external import emit_external
            result = emit_external(self, node)
            if result is None:  # not expressible as an external call: the original error stands
                raise
        self._check(result)
        return result

    def _getitem(self, node: fx.Node) -> Value:
        seq, index = self.env[node.args[0]], node.args[1]
        value = seq[index]
        if value is None:
            raise CompileError(f"result {index} of '{node.args[0].target}'{self._at()} is used, "
                               f"but minicomp only imports its main result")
        return value

    def _check(self, result: Any) -> None:
        """Compare the IR types of ``result`` with torch's fake values for the node."""
        vals = self.node.meta.get("val")
        if isinstance(result, Value):
            pairs = [(result, vals)]
        else:
            pairs = [(r, v) for r, v in zip(result, vals) if r is not None]
        for value, val in pairs:
            if not isinstance(val, torch.Tensor):  # a Python scalar (item()) kept as a 0-d value
                continue
            want = TensorType(ir_dtype(val.dtype, self.op_name, self.loc), tuple(int(s) for s in val.shape))
            got = value.type
            if got.shape != want.shape or got.dtype is not want.dtype:
                raise CompileError(f"importing '{self.op_name}'{self._at()}: minicomp computed type {got}, "
                                   f"torch computed {want}")


def _fetch_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, torch.Tensor):
        raise CompileError(f"attribute {target} is a {type(obj).__name__}, not a tensor")
    return obj


def _remove_dead(graph: Graph) -> None:
    """Delete nodes whose results nothing uses (mapping leftovers such as a folded ``t``)."""
    live = {id(v) for v in graph.outputs}
    for node in reversed(list(graph.nodes)):
        if any(id(r) in live for r in node.results):
            live.update(id(o) for o in node.operands)
        else:
            graph.remove(node)
