"""Capture a PyTorch program as an ATen-level FX graph with ``make_fx``.

:func:`capture` traces an ``nn.Module``, a plain function or an FX ``GraphModule``
(Dynamo's subgraphs included) with fake tensors, under ``torch.no_grad()`` and
functionalization (in-place ops such as ``relu_`` become their functional forms).
Parameters and buffers are traced as leading placeholders so that the importer
can turn them into named graph inputs (read at call time) or named constants
(``freeze=True``); outputs are flattened with torch's pytree and the structure is
kept in :attr:`Captured.out_spec`.
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch._decomp import get_decompositions
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from minicomp.frontend.data_dependent import check_value_read
from minicomp.frontend.value_guards import ValueGuard, ValueRecorder, attach

aten = torch.ops.aten

# Composite ops that have no single minicomp op are decomposed into ones that do.
# Everything else keeps its ATen form (softmax, layer_norm, gelu, silu, batch_norm,
# addmm, convolution, ... stay single ops) and is mapped by :mod:`aten_ops`.
_DECOMPOSE = [
    aten.hardswish, aten.hardsigmoid, aten.mish, aten.elu, aten.glu,
    aten.native_group_norm, aten.triu, aten.tril, aten.baddbmm, aten.addcmul, aten.addcdiv,
    aten.lerp, aten.linalg_vector_norm, aten.logit, aten.hardshrink, aten.softshrink, aten.logsumexp,
    aten.softplus, aten.repeat, aten.mse_loss,
    # ops of the model zoo with no reason to be native: they become gathers (``_unsafe_index``,
    # ``index_select``, imported as one indexed load each), views and elementwise ops
    aten.all, aten.any, aten.roll, aten._weight_norm_interface, aten._fused_rms_norm,
    aten.upsample_bilinear2d, aten.upsample_bicubic2d, aten.upsample_linear1d, aten.upsample_trilinear3d,
    aten._upsample_bilinear2d_aa, aten.upsample_nearest1d, aten.upsample_nearest3d,
    aten._upsample_nearest_exact1d, aten._upsample_nearest_exact2d, aten._upsample_nearest_exact3d,
    aten.select_scatter, aten.slice_scatter, aten.pixel_shuffle, aten.pixel_unshuffle, aten.channel_shuffle,
    aten.reflection_pad1d, aten.reflection_pad2d, aten.reflection_pad3d, aten.replication_pad1d,
    aten.replication_pad2d, aten.replication_pad3d, aten.im2col, aten.std_mean,
]


#: One capture at a time per process: make_fx, functionalization and fake tensors keep
#: process-wide state (the current proxy mode, FX's patcher, the current node meta), and
#: two threads tracing at once corrupt each other's (issue 14, point 12). Only tracing is
#: serialized; passes, lowering, native compilation and calls of compiled models are not.
_CAPTURE_LOCK = threading.RLock()
#: The same lock, for every other make_fx/AOT trace in minicomp (training's): two locks let two
#: traces run at once, and FX's process-wide patcher state breaks ("CURRENT_PATCHER is None").
CAPTURE_LOCK = _CAPTURE_LOCK


def decomposition_table() -> dict[Any, Callable[..., Any]]:
    """The decompositions ``make_fx`` applies while tracing (a fresh dict per call)."""
    return get_decompositions(_DECOMPOSE)


@dataclass
class Captured:
    """An ATen graph plus what the importer needs to name and type its values.

    The first ``len(param_names)`` placeholders of ``gm`` are the model's parameters
    and buffers (values in ``param_values``); the rest are the user inputs, named
    ``input_names``. ``out_spec`` rebuilds the user's output structure from the flat
    list of graph outputs. ``weight_inputs``: positions of user inputs that are
    ``nn.Parameter`` s (Dynamo passes a module's parameters as graph inputs).
    """

    gm: fx.GraphModule
    param_names: list[str]
    param_values: list[torch.Tensor]
    input_names: list[str]
    out_spec: pytree.TreeSpec
    weight_inputs: tuple[int, ...] = ()
    #: ``values=True``: the values the Python read, whose tensors follow the user's outputs
    #: (see :mod:`minicomp.frontend.value_guards`).
    guards: tuple[ValueGuard, ...] = ()


class _Interpret(torch.nn.Module):
    """Runs a GraphModule node by node, so that make_fx keeps each node's stack trace."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, *args: Any) -> Any:
        with fx.traceback.preserve_node_meta():
            return fx.Interpreter(self.gm).run(*args)


def _skip_dirs() -> tuple[str, ...]:
    """Directories whose frames are never "the user's line": torch's and all of minicomp's own
    (minicomp, minicomp.ir, minicomp.passes, minicomp.codegen), so that an op inside an
    ``nn`` layer, or a model with no ``forward`` of the user's (``nn.Sequential``), is
    reported at the user's code and never at ``driver.py`` (issue 14, point 17)."""
    import importlib.util
    dirs = [os.path.dirname(torch.__file__)]
    for pkg in ("minicomp", "minicomp.ir", "minicomp.passes", "minicomp.codegen"):
        spec = importlib.util.find_spec(pkg)
        dirs += list(spec.submodule_search_locations or []) if spec is not None else []
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


#: Frames in these directories are skipped when looking for the user's source line.
SKIP_DIRS = _skip_dirs()
_SKIP_DIRS = SKIP_DIRS


class _RecordSource(TorchFunctionMode):
    """Tags the FX nodes made by each torch call with the innermost user frame making it.

    make_fx copies ``stack_trace`` from fx's "current meta" onto every node it creates
    (under ``preserve_node_meta``); this mode sets it per top-level torch call, so ops
    from helper functions and plain functions get their exact line. :func:`capture`
    enters it only while the user's code runs: around the whole of ``make_fx`` it also
    saw the ~1000 torch calls make_fx makes itself (fake-tensor conversion of every
    weight and input, output tracking), each paying the frame walk, and was most of
    the tracing time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.anchor = fx.Graph().placeholder("source")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Walk the frames directly (as traceback.extract_stack would, innermost first) and
        # read the source line of the one frame reported only: a full extract_stack per
        # torch call was most of the tracing time.
        f = sys._getframe(1)
        while f is not None:
            filename = f.f_code.co_filename
            if not filename.startswith(_SKIP_DIRS) and not filename.startswith("<"):
                break
            f = f.f_back
        if f is None:
            check_value_read(func, None, "")
            return func(*args, **(kwargs or {}))
        linecache.lazycache(filename, f.f_globals)
        linecache.checkcache(filename)
        line = linecache.getline(filename, f.f_lineno).strip()
        check_value_read(func, f"{os.path.basename(filename)}:{f.f_lineno}", line)
        self.anchor.meta = {"stack_trace": f'File "{filename}", line {f.f_lineno}, in {f.f_code.co_name}\n'
                                           f"    {line}"}
        with fx.traceback.set_current_meta(self.anchor):
            return func(*args, **(kwargs or {}))


def capture(model_or_fn: Any, example_inputs: Sequence[torch.Tensor],
            weights: Sequence[tuple[str, torch.Tensor]] | None = None, *, values: bool = False) -> Captured:
    """Trace ``model_or_fn(*example_inputs)`` to an ATen FX graph (see module docstring).

    ``weights``: the module's parameters and buffers as (dotted name, tensor), in the
    order the caller will pass them at run time (default: ``named_parameters()`` then
    ``named_buffers()`` of the module now). ``values``: trace with the real example
    tensors instead of fake ones, so that Python may read values; each value read
    becomes a guard (:mod:`minicomp.frontend.value_guards`, :attr:`Captured.guards`).
    """
    inputs = tuple(example_inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"example input {i} is a {type(t).__name__}; minicomp.trace takes tensors only")
    if isinstance(model_or_fn, fx.GraphModule):
        module: torch.nn.Module | None = _Interpret(model_or_fn)
        input_names = [str(n.target) for n in model_or_fn.graph.nodes if n.op == "placeholder"]
        strip = "gm."
    elif isinstance(model_or_fn, torch.nn.Module):
        module = model_or_fn
        input_names = _signature_names(model_or_fn.forward)
        strip = ""
    elif callable(model_or_fn):
        module = None
        input_names = _signature_names(model_or_fn)
        strip = ""
    else:
        raise TypeError(f"cannot trace a {type(model_or_fn).__name__}: expected an nn.Module, "
                        f"a GraphModule or a function")

    state: dict[str, torch.Tensor] = {}
    if module is not None and weights is not None:
        state.update((strip + name, t) for name, t in weights)
    elif module is not None:
        state.update(module.named_parameters())
        state.update(module.named_buffers())
    names = list(state)
    out_spec: list[pytree.TreeSpec] = []

    # A GraphModule's nodes carry their own stack traces (replayed by _Interpret). The mode
    # covers the user's call only (see _RecordSource); functional_call's reparametrization
    # makes no torch calls.
    source = contextlib.nullcontext() if isinstance(model_or_fn, fx.GraphModule) else _RecordSource()
    recorder = ValueRecorder(SKIP_DIRS) if values else contextlib.nullcontext()

    def flat_fn(params: list[torch.Tensor], *args: torch.Tensor) -> list[Any]:
        with source, recorder:
            if module is None:
                out = model_or_fn(*args)
            else:
                out = torch.func.functional_call(module, dict(zip(names, params)), args)
        flat, spec = pytree.tree_flatten(out)
        out_spec.append(spec)
        return flat

    kept = _python_state_kept(module) if module is not None else contextlib.nullcontext()
    with _CAPTURE_LOCK, torch.no_grad(), fx.traceback.preserve_node_meta(), kept:
        gm = make_fx(torch.func.functionalize(flat_fn, remove="mutations"), decomposition_table(),
                     tracing_mode="real" if values else "fake", _allow_non_fake_inputs=True,
                     _error_on_data_dependent_ops=not values)(list(state.values()), *inputs)
    guards = tuple(attach(gm, recorder.reads)) if values else ()
    _fresh_inplace_as_functional(gm)
    input_names = [clean_name(n) for n in input_names[:len(inputs)]]
    input_names += [f"arg{i}" for i in range(len(input_names), len(inputs))]
    return Captured(gm, [clean_name(n.removeprefix(strip)) for n in names], list(state.values()),
                    input_names, out_spec[-1],
                    tuple(i for i, t in enumerate(inputs) if isinstance(t, torch.nn.Parameter)), guards)


@contextlib.contextmanager
def _python_state_kept(module: torch.nn.Module):
    """Put back, after tracing, the Python state the model's ``forward`` wrote while traced.

    Tracing is not a call of the model: a cache its forward fills (timm's EfficientFormerV2
    keeps ``attention_bias_cache[device] = ...`` in eval mode) would otherwise hold tracing
    tensors, and the next eager call would compute with them. Plain attributes, and the
    contents of dict and list attributes, of every submodule are restored; parameters,
    buffers and submodules are not touched (tracing does not replace them)."""
    skip = ("_parameters", "_buffers", "_modules")
    saved = [(m, {k: v for k, v in vars(m).items() if k not in skip}) for m in module.modules()]
    contents = [(v, dict(v) if isinstance(v, dict) else list(v)) for _, attrs in saved for v in attrs.values()
                if type(v) in (dict, list)]
    try:
        yield
    finally:
        for container, before in contents:
            container.clear()
            (container.update if isinstance(container, dict) else container.extend)(before)
        for m, attrs in saved:
            for k in [k for k in vars(m) if k not in skip and k not in attrs]:
                delattr(m, k)
            for k, v in attrs.items():
                if vars(m).get(k, v) is not v:
                    object.__setattr__(m, k, v)


def _fresh_inplace_as_functional(gm: fx.GraphModule) -> None:
    """Turn in-place ATen calls on fresh temporaries into their functional forms.

    Some of torch's C++ composites (``rms_norm``'s ``add_``) mutate a temporary they just made,
    below functionalization. When the mutated value is the fresh result of a non-view op that
    nothing else reads, ``add_(t, s)`` computes exactly ``add(t, s)``; anything else stays as it
    is (and is reported by the importer)."""
    for node in gm.graph.nodes:
        op = node.target
        if node.op != "call_function" or not isinstance(op, torch._ops.OpOverload) or not op._schema.is_mutable:
            continue
        base = op._schema.name.split("::")[-1]
        src = node.args[0] if node.args else None
        if not base.endswith("_") or not isinstance(src, fx.Node) or src.op != "call_function" or len(src.users) != 1:
            continue
        producer = src.target
        if not isinstance(producer, torch._ops.OpOverload) or producer._schema.is_mutable or \
                any(r.alias_info is not None for r in producer._schema.returns):
            continue  # the temporary may be a view of something else, or itself an in-place result
        functional = getattr(getattr(aten, base[:-1], None), op._overloadname, None)
        if isinstance(functional, torch._ops.OpOverload) and not functional._schema.is_mutable:
            node.target = functional
    gm.recompile()


def _signature_names(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def clean_name(name: str) -> str:
    """A short identifier from a parameter path or a Dynamo placeholder name.

    ``fc1.weight`` -> ``fc1_weight``; ``L_self_modules_fc1_parameters_weight_`` ->
    ``fc1_weight``; ``L_x_`` -> ``x``.
    """
    name = re.sub(r"^[LG]_", "", name)
    name = re.sub(r"^self_", "", name)
    name = re.sub(r"(^|_)(modules|parameters|buffers)_", r"\1", name)
    name = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
    if not name or name[0].isdigit():
        name = "v" + name
    return name
