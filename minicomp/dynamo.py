"""``torch.compile(model, backend="minicomp")``: minicomp as a TorchDynamo backend.

The entry point ``minicomp = "minicomp.dynamo:minicomp_backend"`` (pyproject) lets
Dynamo find the backend by name. Dynamo hands over each captured subgraph (one per
graph break) as an FX ``GraphModule``; :func:`minicomp_backend` returns a callable
that compiles it on first use for the concrete shapes it is called with and
caches one compiled program per (shapes, dtypes, devices, integer arguments) key,
so Dynamo's symbolic shapes become static ones (a recompilation per new shape).

Weights: Dynamo passes a module's parameters and buffers as graph inputs, read from
the module on every call; they are ordinary tensor inputs of the compiled program
here, so any update (in place, through ``.data``, or a new ``nn.Parameter``) is seen
by the next call. Nothing is keyed on object identity.

Autograd: when grad mode is on and an example input (a parameter included) requires
grad, the graph goes through AOTAutograd (:mod:`minicomp.training`): minicomp compiles
its forward and backward graphs natively, each on first use; what cannot be compiled
runs in PyTorch, listed in :func:`minicomp.training.record`'s records with a warning
once per graph, so gradients are always eager's.

For another target use ``make_backend(target="interpret")`` (the reference
interpreter, no code generation) and pass the result as ``backend=``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from minicomp.errors import MinicompError

__all__ = ["minicomp_backend", "make_backend"]


def minicomp_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], *, target: str = "cpu",
                     strict: bool = False) -> Callable:
    """Dynamo backend: a callable with ``gm``'s signature and results, running minicomp code.

    A graph that needs autograd gets compiled forward and backward graphs
    (:func:`minicomp.training.aot_backend`); ``strict``: an op that would run in PyTorch
    there is an error instead of a listed fallback.
    """
    needs_grad = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                                 for t in example_inputs)
    if needs_grad or _mutates(gm):  # AOTAutograd: the backward, or the write-back of updated inputs
        from minicomp.training import aot_backend
        return aot_backend(gm, example_inputs, target=target, strict=strict)
    return _Specializing(gm, target)


def _mutates(gm: fx.GraphModule) -> bool:
    """Whether the graph updates one of its inputs or attributes in place (``p.add_(...)``,
    ``torch._foreach_mul_(params, ...)``: an optimizer step, whose parameters and states Dynamo makes
    attributes): minicomp programs are functional, AOTAutograd writes the new values back."""
    for node in gm.graph.nodes:
        if node.op not in ("call_method", "call_function") or not node.args:
            continue
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if not (isinstance(name, str) and name.endswith("_") and not name.startswith("__")):
            continue
        first = node.args[0]
        targets = first if isinstance(first, (list, tuple)) else [first]
        if any(isinstance(t, fx.Node) and t.op in ("placeholder", "get_attr") for t in targets):
            return True
    return False


def make_backend(target: str = "cpu", strict: bool = False) -> Callable:
    """A Dynamo backend compiling for ``target`` ("cpu", "gpu", "interpret", ...); ``strict``: see
    :func:`minicomp_backend`."""
    def backend(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        return minicomp_backend(gm, example_inputs, target=target, strict=strict)
    return backend


class _Specializing:
    """Compiles ``gm`` once per concrete call signature and runs the cached program.

    ``eager_fallback``: a graph minicomp cannot compile runs as the FX graph itself
    (the reason is appended to :attr:`fallbacks`); otherwise the error propagates.
    """

    def __init__(self, gm: fx.GraphModule, target: str, eager_fallback: bool = False):
        self.gm = gm
        self.target = target
        self.eager_fallback = eager_fallback
        self.fallbacks: list[str] = []
        self.cache: dict[tuple, tuple[list[int], Callable]] = {}

    def __call__(self, *args: Any) -> Any:
        key = tuple(_arg_key(a) for a in args)
        entry = self.cache.get(key)
        if entry is None:
            entry = self.cache[key] = self._compile(args)
        tensor_positions, fn = entry
        return fn(*[args[i] for i in tensor_positions])

    def _compile(self, args: Sequence[Any]) -> tuple[list[int], Callable]:
        """Bind the integer arguments of this call into a copy of the graph, then compile it."""
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
            if isinstance(arg, torch.Tensor):  # parameters too: read on every call like any input
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
        if not self.eager_fallback:
            return tensor_positions, _compile_graph(specialized, inputs, self.target)
        try:
            return tensor_positions, _compile_graph(specialized, inputs, self.target, fallback=True)
        except MinicompError as err:
            self.fallbacks.append(f"{type(err).__name__}: {err}")
            warnings.warn(f"minicomp could not compile a graph of torch.compile(backend='minicomp') and runs it "
                          f"in eager PyTorch: {err}", RuntimeWarning, stacklevel=2)
            return tensor_positions, specialized


def _compile_graph(gm: fx.GraphModule, inputs: list[torch.Tensor], target: str, fallback: bool = False) -> Callable:
    if target != "interpret":
        try:
            from minicomp.driver import compile as driver_compile
        except ImportError:  # the driver is optional; the interpreter always works
            driver_compile = None
        if driver_compile is not None:
            return driver_compile(gm, inputs, target=target, fallback=fallback)
    return interpreted(gm, inputs)


def interpreted(model_or_fn: Any, example_inputs: Sequence[torch.Tensor]) -> Callable:
    """Trace once and return a callable running the graph on minicomp's reference interpreter.

    The callable takes and returns torch tensors, nested like the traced program's output.
    Tensors the program reads by attribute are constants (a snapshot).
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
    if isinstance(arg, torch.Tensor):
        return ("tensor", tuple(arg.shape), arg.dtype, arg.device.type)
    return ("value", type(arg).__name__, arg)
