"""Training with minicomp: the forward and the backward graph both compiled natively.

AOTAutograd traces a training step's joint forward-backward graph with the
decompositions of :mod:`minicomp.frontend.aten_backward` (so backward ATen ops become
ops minicomp has), splits it with the min-cut partitioner (the activations saved for
the backward are chosen to save memory, cheap pointwise ops are recomputed, as
Inductor does), and hands each half to :class:`GraphCompiler`, which compiles it with
minicomp on first use. The result is an autograd-aware callable: its forward runs the
compiled forward graph, and ``loss.backward()`` runs the compiled backward graph.

Used by ``torch.compile(model, backend="minicomp")`` (:mod:`minicomp.dynamo`) and by
``minicomp.compile`` on a model called with grad needed (:mod:`minicomp.grad`).

Random numbers (training-mode dropout) are drawn with torch's generator before each
call, in the shape the graph needs, and passed to the compiled program, which does
the rest (the same distribution as eager's dropout, not the same numbers).

What falls back (each listed in :attr:`GraphRecord.fallbacks`, with a ``RuntimeWarning``
once per graph): a graph with an op minicomp cannot express runs its unsupported ops in
PyTorch between native parts (``fallback`` targets), or the whole graph in eager
PyTorch when it cannot be compiled at all (other random ops, transposed convolutions,
symbolic sizes). With ``strict=True`` any fallback is an error instead.
:func:`record` lists every graph compiled while it is active (tests use it to check
that forward and backward ran natively).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from minicomp.errors import CompileError, MinicompError
from minicomp.frontend.capture import CAPTURE_LOCK

__all__ = ["GraphCompiler", "GraphRecord", "aot_backend", "aot_callable", "partition", "record"]

_RECORDERS: list[list[GraphRecord]] = []
_COMPUTED = object()  # an output slot filled by the compiled program
#: AOTAutograd's tracing and minicomp's first compile of a graph, one at a time (their tracers keep
#: process-wide state); calls of compiled graphs are not serialized.
TRACE_LOCK = CAPTURE_LOCK


@dataclass
class GraphRecord:
    """One graph a training compile produced: ``kind`` is "forward", "backward" or "inference"."""

    kind: str
    n_ops: int
    fallbacks: list[str] = field(default_factory=list)
    eager: bool = False
    kernels: int = 0
    notes: list[str] = field(default_factory=list)
    #: Kernels that compute (not only gather, copy or fill: ``cat``, ``copy``, ``full`` kernels).
    compute_kernels: int = 0

    @property
    def native(self) -> bool:
        """Whether every op of the graph runs in minicomp's compiled code."""
        return not self.fallbacks and not self.eager


@contextlib.contextmanager
def record() -> Iterator[list[GraphRecord]]:
    """Collect a :class:`GraphRecord` for every graph compiled inside the ``with`` block."""
    records: list[GraphRecord] = []
    _RECORDERS.append(records)
    try:
        yield records
    finally:
        _RECORDERS.remove(records)


def partition(joint: fx.GraphModule, joint_inputs: Any, *, num_fwd_outputs: int, **kwargs: Any):
    """The min-cut rematerialization partitioner (Inductor's), or AOTAutograd's default one where
    the min-cut one cannot handle the graph."""
    from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition
    try:
        return min_cut_rematerialization_partition(joint, joint_inputs, num_fwd_outputs=num_fwd_outputs, **kwargs)
    except Exception:  # noqa: BLE001 - a partitioner limitation: save more, never fail the compile
        return default_partition(joint, joint_inputs, num_fwd_outputs=num_fwd_outputs, **kwargs)


def _compilers(target: str, strict: bool, options: dict[str, Any]) -> dict[str, Any]:
    from torch._functorch.aot_autograd import make_boxed_func

    from minicomp.frontend.aten_backward import decompositions
    from minicomp.train_optim import foreach_decompositions

    def make(kind: str) -> Callable:
        def compiler(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
            return make_boxed_func(GraphCompiler(gm, kind, target, strict, options))
        return compiler
    return dict(fw_compiler=make("forward"), bw_compiler=make("backward"), inference_compiler=make("inference"),
                partition_fn=partition, decompositions={**decompositions(), **foreach_decompositions()})


def aot_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], *, target: str = "cpu", strict: bool = False,
                **options: Any) -> Callable:
    """A Dynamo backend result for a graph that needs autograd: compiled forward and backward."""
    from torch._dynamo.backends.common import aot_autograd
    return aot_autograd(**_compilers(target, strict, options))(gm, example_inputs)


def aot_callable(fn: Callable, *, target: str = "cpu", strict: bool = False, **options: Any) -> Callable:
    """``fn`` (tensors in, a flat tuple of tensors out) with compiled forward and backward graphs."""
    from torch._functorch.aot_autograd import aot_function
    return aot_function(fn, **_compilers(target, strict, options))


class GraphCompiler:
    """Compiles one AOTAutograd graph with minicomp on its first call, then runs it.

    Outputs that are not tensors (a backward graph returns ``None`` for inputs that need no
    gradient) are left out of the compiled program and put back around its results.
    """

    def __init__(self, gm: fx.GraphModule, kind: str, target: str, strict: bool, options: dict[str, Any]):
        self.gm = gm
        self.kind = kind
        self.target = target
        self.strict = strict
        self.options = options
        self.record = GraphRecord(kind, sum(n.op == "call_function" for n in gm.graph.nodes))
        for records in _RECORDERS:
            records.append(self.record)
        self._run: Callable | None = None

    def __call__(self, *args: Any) -> Any:
        if self._run is None:
            with TRACE_LOCK:
                if self._run is None:
                    self._run = self._compile(args)
        return self._run(*args)

    def _compile(self, args: Sequence[Any]) -> Callable:
        tensors_only = all(isinstance(a, torch.Tensor) for a in args)
        try:
            if not tensors_only:
                raise CompileError("a graph input that is not a tensor (a symbolic size)")
            return self._native(args)
        except MinicompError as err:
            if self.strict:
                raise CompileError(f"minicomp could not compile the {self.kind} graph natively: {err}") from err
            self.record.eager = True
            self.record.fallbacks.append(f"{type(err).__name__}: {err}")
            warnings.warn(f"minicomp runs a {self.kind} graph of a training step in eager PyTorch: {err}",
                          RuntimeWarning, stacklevel=3)
            return self.gm

    def _native(self, args: Sequence[torch.Tensor]) -> Callable:
        from minicomp.driver import compile as driver_compile
        outputs = _output_node(self.gm).args[0]
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        kept = [o for o in outputs if isinstance(o, fx.Node)]
        fixed = [_COMPUTED if isinstance(o, fx.Node) else o for o in outputs]
        if not kept:
            return lambda *_: tuple(fixed)
        gm, draws = _lift_random(_with_outputs(self.gm, kept))
        if draws:
            self.record.notes.append(f"{len(draws)} random tensor(s) drawn by torch's generator per call")
        example = [*args, *[_placeholder_value(d) for d in draws]]  # no draw: calls follow the seed
        cm = driver_compile(gm, example, target=self.target, fallback=not self.strict, **self.options)
        if cm.fallbacks:
            if self.strict:
                raise CompileError("; ".join(cm.fallbacks))
            self.record.fallbacks.extend(cm.fallbacks)
            warnings.warn(f"minicomp runs part of a {self.kind} graph of a training step in PyTorch: "
                          + "; ".join(cm.fallbacks), RuntimeWarning, stacklevel=4)
        if not cm.fallbacks:
            names = [k.name.split("_", 1)[-1] for k in cm.kernels]
            self.record.kernels = len(names)
            self.record.compute_kernels = sum(n not in ("cat", "copy", "full") for n in names)
        self.compiled = cm
        return functools.partial(_run_compiled, cm, fixed, draws)


def _run_compiled(cm: Any, fixed: list[Any], draws: list[fx.Node], *args: torch.Tensor) -> tuple:
    results = iter(cm(*args, *[_draw(d) for d in draws]) if draws else cm(*args))
    return tuple(next(results) if f is _COMPUTED else f for f in fixed)


def _output_node(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


def _with_outputs(gm: fx.GraphModule, outputs: list[fx.Node]) -> fx.GraphModule:
    """A copy of ``gm`` returning the tuple ``outputs`` (nodes of ``gm``)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            graph.output(tuple(env[o] for o in outputs))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return fx.GraphModule(gm, graph)


#: Random ops of a static shape (training-mode dropout's uniform numbers): drawn with torch's generator
#: before each call and passed in, so the compiled program is deterministic and the draws follow
#: ``torch.manual_seed``.
_RANDOM = {torch.ops.aten.rand.default}


def _lift_random(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[fx.Node]]:
    """``gm`` with each random node of constant arguments turned into a trailing graph input, and those nodes."""
    draws = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _RANDOM
             and not any(isinstance(a, fx.Node) for a in n.all_input_nodes)]
    if not draws:
        return gm, []
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = graph.node_copy(node, lambda n: env[n])
    for i, node in enumerate(draws):
        env[node] = graph.placeholder(f"random_{i}")
        env[node].meta = dict(node.meta)
    for node in gm.graph.nodes:
        if node not in env:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return fx.GraphModule(gm, graph), draws


def _draw(node: fx.Node) -> torch.Tensor:
    return node.target(*node.args, **node.kwargs)


def _placeholder_value(node: fx.Node) -> torch.Tensor:
    """Zeros shaped like a random node's result (an example input for compiling; draws nothing)."""
    val = node.meta["val"]
    return torch.zeros(val.shape, dtype=val.dtype, device=val.device)
