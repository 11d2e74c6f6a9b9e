"""``torch.compile(model, backend="minicomp")``: minicomp as a TorchDynamo backend.

The entry point ``minicomp = "minicomp.dynamo:minicomp_backend"`` (pyproject) lets
Dynamo find the backend by name. Dynamo hands over each captured subgraph (one per
graph break) as an FX ``GraphModule``; :func:`minicomp_backend` returns a callable
that compiles it on first use for the concrete shapes it is called with and
caches one compiled program per (shapes, dtypes, integer arguments) key, so
Dynamo's symbolic shapes become static ones (a recompilation per new shape).

Parameters that Dynamo passes as graph inputs (``nn.Parameter`` arguments) are
frozen into the program as constants; the cache key holds their identity and
version counter, so an in-place weight update compiles afresh.

For another target use ``make_backend(target="interpret")`` (the reference
interpreter, no code generation) and pass the result as ``backend=``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from minicomp.frontend.capture import clean_name

__all__ = ["minicomp_backend", "make_backend"]


def minicomp_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], *, target: str = "cpu") -> Callable:
    """Dynamo backend: a callable with ``gm``'s signature and results, running minicomp code."""
    return _Specializing(gm, target)


def make_backend(target: str = "cpu") -> Callable:
    """A Dynamo backend compiling for ``target`` ("cpu", "gpu", "interpret", ...)."""
    def backend(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        return minicomp_backend(gm, example_inputs, target=target)
    return backend


class _Specializing:
    """Compiles ``gm`` once per concrete call signature and runs the cached program."""

    def __init__(self, gm: fx.GraphModule, target: str):
        self.gm = gm
        self.target = target
        self.cache: dict[tuple, tuple[list[int], Callable]] = {}

    def __call__(self, *args: Any) -> Any:
        key = tuple(_arg_key(a) for a in args)
        entry = self.cache.get(key)
        if entry is None:
            entry = self.cache[key] = self._compile(args)
        tensor_positions, fn = entry
        return fn(*[args[i] for i in tensor_positions])

    def _compile(self, args: Sequence[Any]) -> tuple[list[int], Callable]:
        """Bind ints and parameters of this call into a copy of the graph, then compile it."""
        root = torch.nn.Module()
        for name, mod in self.gm.named_children():
            root.add_module(name, mod)
        for name, p in list(self.gm.named_parameters(recurse=False)) + list(self.gm.named_buffers(recurse=False)):
            setattr(root, name, p)
        graph = fx.Graph()
        env: dict[fx.Node, Any] = {}
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        tensor_positions: list[int] = []
        for i, node in enumerate(placeholders):
            arg = args[i]
            if isinstance(arg, torch.nn.Parameter):
                name = _free_name(root, clean_name(str(node.target)))
                root.register_buffer(name, arg.detach())
                env[node] = graph.get_attr(name)
            elif isinstance(arg, torch.Tensor):
                env[node] = graph.placeholder(node.name)
                env[node].meta = dict(node.meta)
                tensor_positions.append(i)
            else:  # an int (a Dynamo SymInt at trace time): specialize on its value
                env[node] = arg
        for node in self.gm.graph.nodes:
            if node.op != "placeholder":
                env[node] = graph.node_copy(node, lambda n: env[n])
        for name, value in vars(self.gm).items():  # get_attr targets that are plain tensors
            if isinstance(value, torch.Tensor) and not hasattr(root, name):
                setattr(root, name, value)
        specialized = fx.GraphModule(root, graph)
        inputs = [args[i] for i in tensor_positions]
        return tensor_positions, _compile_graph(specialized, inputs, self.target)


def _compile_graph(gm: fx.GraphModule, inputs: list[torch.Tensor], target: str) -> Callable:
    if target != "interpret":
        try:
            from minicomp.driver import compile as driver_compile
        except ImportError:  # the driver is optional; the interpreter always works
            driver_compile = None
        if driver_compile is not None:
            return driver_compile(gm, inputs, target=target)
    return interpreted(gm, inputs)


def interpreted(model_or_fn: Any, example_inputs: Sequence[torch.Tensor]) -> Callable:
    """Trace once and return a callable running the graph on minicomp's reference interpreter.

    The callable takes and returns torch tensors, nested like the traced program's output.
    """
    from minicomp.frontend import trace_with_spec
    from minicomp.frontend.tensors import to_numpy, to_torch
    from minicomp.ir.interpreter import interpret

    traced = trace_with_spec(model_or_fn, example_inputs)
    out_types = [v.type.dtype for v in traced.graph.outputs]

    def run(*tensors: torch.Tensor) -> Any:
        arrays = [to_numpy(t)[0] for t in tensors]
        outs = interpret(traced.graph, *arrays)
        return traced.unflatten([to_torch(o, dt) for o, dt in zip(outs, out_types)])

    return run


def _arg_key(arg: Any) -> Any:
    if isinstance(arg, torch.nn.Parameter):
        return ("param", id(arg), arg._version, tuple(arg.shape), arg.dtype)
    if isinstance(arg, torch.Tensor):
        return ("tensor", tuple(arg.shape), arg.dtype, arg.device.type)
    return ("value", type(arg).__name__, arg)


def _free_name(root: torch.nn.Module, name: str) -> str:
    candidate, k = name, 0
    while hasattr(root, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate
