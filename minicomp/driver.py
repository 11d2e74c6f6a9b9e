"""``minicomp.compile``: trace -> passes -> lowering -> backend, behind a fast call path.

The returned :class:`CompiledModel` is called like the model. Each input
signature (shapes and dtypes) gets its own compiled program, cached like
``torch.compile`` does: a call with a new signature re-traces and compiles
(``recompile=True``, the default, up to ``recompile_limit`` signatures) or raises
:class:`~minicomp.errors.GuardError` (``recompile=False``).

The model may also be a :class:`minicomp.ir.Graph`: it is compiled as it is (no
tracing; the caller's graph is never modified), calls must match its input types
exactly, and a call returns a ``list`` with one tensor per graph output.

``fallback=True`` (targets "cpu" and "interpret") partitions the model: each ATen
op minicomp cannot import becomes an ``external`` node, the graph is split there
(:mod:`minicomp.fallback`), the native parts are compiled as separate programs
and the external ops run in PyTorch between them; ``.fallbacks`` names each one
with its source line. When an op cannot be replayed that way (it mutates, is
random, or has non-tensor results), on the GPU targets, or when a part cannot be
lowered, the *whole* model runs in eager PyTorch (a Graph: in the reference
interpreter) for that signature and the reason is listed in ``.fallbacks``.
"""
from __future__ import annotations

import contextlib
import gc
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from minicomp import guards
from minicomp.errors import CompileError, GuardError, UnsupportedOpError
from minicomp.ir.graph import Graph
from minicomp.ir.lowering import LoweringError, lower_graph
from minicomp.grad import Differentiable
from minicomp.calls import CallPath, input_layout
from minicomp.weights import FrozenWeights, WeightPlan
from minicomp.threads import compile_threads
from minicomp.options import validate as validate_options
from minicomp.passes.manager import Extend, stats_table
from minicomp.pipeline import _DRIVER_OPTIONS, _GPU_TARGETS, pass_context, run_passes  # noqa: F401 (public here too)

TARGETS = ("cpu", "interpret", "triton", "cuda")
#: Targets where ``fallback=True`` partitions (elsewhere the whole model falls back to eager).
_PARTITION_TARGETS = ("cpu", "interpret")


@dataclass(frozen=True)
class KernelInfo:
    """One kernel of a compiled program: its name, kind and (backend) source text."""

    name: str
    kind: str
    source: str


@dataclass
class _Entry:
    """Everything compiled for one input signature."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    run: Any                       # list[Tensor] -> list[Tensor] (or the eager output)
    unflatten: Any                 # flat outputs -> the user's structure
    graph: Graph | None = None
    program: Any = None
    module: Any = None             # LLVMModule (cpu) or TritonModule (triton)
    ctx: Any = None
    fallbacks: list[str] = field(default_factory=list)
    eager: bool = False
    notes: list[str] = field(default_factory=list)  # lowering remarks (split fused nodes, copies)
    compile_s: float = 0.0
    graph_loader: Any = None       # model-cache hit: reads the final graph on first use
    parts: list[tuple[Any, Any]] = field(default_factory=list)  # partitioned: (program, module) per native part
    n_user: int = 0                # the user's inputs; ``shapes`` may go on with weights and tensor attributes
    lifted: bool = False           # run takes [user inputs, weights, attrs] (else the user inputs only)
    attrs: tuple = ()              # tensors read by attribute, passed after the weights (lifted)
    rest_types: tuple = ()         # (shape, dtype) of each weight and attribute tensor (lifted)
    frozen: Any = None             # freeze=True: minicomp.weights.FrozenWeights, checked on every call
    grad: Any = None               # minicomp.grad.Differentiable: the call when autograd is needed
    mode: tuple = ()               # the ``training`` flag of each submodule when this entry was traced
    layout: tuple = ()             # the example inputs' (strides, offset) when the program depends on them


class CompiledModel(CallPath):
    """A compiled model or function. Call it with torch tensors (or numpy arrays) on ``device``."""

    def __init__(self, model_or_fn: Any, target: str, fallback: bool, passes: Any, options: dict[str, Any]):
        self._fn = model_or_fn
        self.target = target
        self._fallback = fallback
        self._passes = passes
        self._recompile = options.pop("recompile", True)
        self._limit = options.pop("recompile_limit", 8)
        self._dump_dir = options.pop("dump_dir", None)
        self._print_ir = bool(options.pop("print_ir_after_all", False))
        self._options = options
        self._options["threads"] = compile_threads(options)  # fixed now: part of the code and cache keys
        self._gpu = target in _GPU_TARGETS
        if self._gpu:
            from minicomp.triton_runtime import choose_device
            self.device = choose_device()
        else:
            self.device = torch.device("cpu")
        self._cuda = self.device.type == "cuda"
        self._trace_device = self.device  # where tracing runs: the example inputs' device
        self._entries: dict[tuple[guards.Signature, tuple], _Entry] = {}  # (signature, train/eval mode)
        self._last: _Entry | None = None
        self._lock = threading.Lock()
        self._freeze = bool(options.get("freeze", False))
        self._plan = None if isinstance(model_or_fn, Graph) else WeightPlan.of(model_or_fn)
        self._modules = tuple(model_or_fn.modules()) if isinstance(model_or_fn, torch.nn.Module) else ()
        self._nargs: int | None = None  # the user's inputs per call (set by compile)
        self._builds = 0

    def _build_for(self, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> _Entry:
        return _build(self, tensors, weights)

    # -- inspection -------------------------------------------------------------------------
    def _current(self) -> _Entry:
        if self._last is None:
            raise CompileError("nothing compiled yet")
        return self._last

    @property
    def graph(self) -> Graph | None:
        """The final IR graph (after passes) of the most recently used signature."""
        e = self._current()
        if e.graph is None and e.graph_loader is not None:
            e.graph, e.graph_loader = e.graph_loader(), None
        return e.graph

    @property
    def program(self):
        """The lowered :class:`~minicomp.ir.program.Program` (None for interpret/eager/partitioned)."""
        return self._current().program

    def _programs(self) -> list[tuple[Any, Any]]:
        """(program, module) of every native part of the current signature."""
        e = self._current()
        return e.parts if e.parts else [(e.program, e.module)] if e.program is not None else []

    @property
    def fallbacks(self) -> list[str]:
        """Why parts ran in eager PyTorch (empty when everything runs natively)."""
        return list(self._current().fallbacks)

    @property
    def threads(self) -> int:
        """Threads the compiled CPU code runs on: the caller plus up to ``threads - 1`` pool workers
        (the ``threads`` option, else ``$MINICOMP_NUM_THREADS``, else the cores; :mod:`minicomp.threads`)."""
        return self._options["threads"]

    @property
    def kernels(self) -> list[KernelInfo]:
        """The kernels of the current program with their source (LLVM IR for the CPU, Triton for GPUs)."""
        out = []
        for program, module in self._programs():
            if self._gpu:
                out += [KernelInfo(k.name, k.kind, src.text) for k, src in zip(program.kernels, module.kernels)]
                continue
            sources = dict(module.kernel_sources) if module is not None else {}
            symbols = getattr(module, "symbols", [])
            for i, k in enumerate(program.kernels):
                sym = symbols[i] if i < len(symbols) else k.name
                out.append(KernelInfo(k.name, k.kind, sources.get(sym, "")))
        return out

    def source_kinds(self) -> list[str]:
        """The kinds :meth:`source` accepts for the current signature ([] when there is no native code)."""
        if not self._programs():
            return []
        return ["triton"] if self._gpu else ["llvm", "llvm-unopt", "asm"]

    def source(self, kind: str | None = None) -> str:
        """Backend source of the whole program: "llvm", "llvm-unopt" or "asm" (cpu), "triton" (GPU).

        ``kind=None`` gives the first of :meth:`source_kinds`.
        """
        e = self._current()
        kinds = self.source_kinds()
        if not kinds:
            raise CompileError(f"no native source for target '{self.target}'"
                               + (" (the model ran in eager PyTorch)" if e.eager else ""))
        kind = kind or kinds[0]
        if kind not in kinds:
            raise CompileError(f"no {kind!r} source for target '{self.target}'; available: {', '.join(kinds)}")
        return "\n".join(m.source if self._gpu else m.source(kind) for _, m in self._programs())

    def aot_compile(self, arch: int = 90) -> list:
        """Compile every Triton kernel ahead of time for ``sm_{arch}`` (no GPU needed).

        Returns one :class:`minicomp.codegen.triton.aot.AotResult` (``name``, ``ok``,
        ``error``, PTX/cubin sizes) per kernel; a failing kernel never hides the others.
        """
        e = self._current()
        if not self._gpu:
            raise CompileError(f"aot_compile needs a Triton target, this model was compiled for '{self.target}'")
        if e.module is None:
            return []
        from minicomp.triton_runtime import aot_compile
        return aot_compile(e.module, arch)

    def summary(self) -> str:
        """A short text: target and device, compile time, kernels with their kind, arena, fallbacks."""
        e = self._current()
        where = f" on {self.device}" + (" (Triton interpreter)" if self._gpu and not self._cuda else "")
        lines = [f"target: {self.target}{where}; signature: {guards.Signature(e.shapes, e.dtypes)}",
                 f"compile time: {e.compile_s:.2f} s"]
        if self._programs():
            lines += _kernel_lines(self._programs())
        elif not e.eager:
            lines.append("no kernels (runs in the reference interpreter)")
        lines.append("fallbacks: " + ("; ".join(e.fallbacks) if e.fallbacks else "none"))
        return "\n".join(lines)

    def explain(self) -> str:
        """What the compiler did: pass decisions and statistics, kernels, fallbacks."""
        e = self._current()
        lines = [f"target: {self.target}; signature: {guards.Signature(e.shapes, e.dtypes)}"]
        if e.ctx is not None and getattr(e.ctx, "decisions", None) is not None:
            lines += [str(d) for d in e.ctx.decisions]
            lines.append(stats_table(e.ctx))
        lines += _kernel_lines(self._programs())
        lines += [f"lowering: {n}" for n in e.notes]
        if e.fallbacks:
            lines.append("ran in eager PyTorch: " + "; ".join(e.fallbacks))
        return "\n".join(lines)


def _kernel_lines(parts: list[tuple[Any, Any]]) -> list[str]:
    lines = []
    for i, (program, _) in enumerate(parts):
        part = f"part {i}: " if len(parts) > 1 else ""
        lines.append(f"{part}{len(program.kernels)} kernel(s), arena {program.arena_bytes} bytes:")
        lines += [f"  {k.name} ({k.kind})" for k in program.kernels]
    return lines


def compile(model_or_fn: Any, example_inputs: Any, target: str = "cpu", *, fallback: bool = False,
            passes: Sequence[Any] | None = None, **options: Any) -> CompiledModel:
    """Compile ``model_or_fn`` (a module, a function of tensors, or an IR ``Graph``) for inputs
    like ``example_inputs``.

    ``target``: "cpu" (LLVM JIT), "interpret" (the numpy reference interpreter),
    "triton"/"cuda" (Triton kernels on the current CUDA device; without a GPU they
    run in Triton's interpreter on CPU tensors, and ``TRITON_INTERPRET=1`` is set in
    this process with a warning). Calls take tensors on the model's ``device``; for
    the GPU targets the example inputs may also be CPU tensors (tracing then runs on
    the CPU). ``passes``: None for the default pipeline, a list of pass
    names/objects (exactly those passes; [] runs none), or ``minicomp.passes.Extend(after={"fuse":
    [MyPass()]})``: the default pipeline plus extra passes at named points (docs/passes.md). Options: ``threads`` (the ``threads`` option, else
    ``$MINICOMP_NUM_THREADS``, else the cores this process may run on; pass
    ``threads=torch.get_num_threads()`` to follow torch's setting; see :mod:`minicomp.threads`
    and ``.threads``), ``opt_level`` (3),
    ``cache`` (True: on-disk object cache, CPU), ``autotune`` (False) and
    ``max_rblock`` (Triton), ``recompile`` (True), ``recompile_limit`` (8),
    ``verify`` (False: verify the IR after each pass; ``MINICOMP_VERIFY=1`` turns it on for
    every compile), ``dump_dir`` (None: write the IR
    after each pass there), ``print_ir_after_all`` (False), and pass options
    (``fuse``, ``layout``, ``plan_memory``...).
    """
    if target not in TARGETS:
        raise CompileError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    validate_options(options, passes, fallback)  # one OptionError naming the option (minicomp.options)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    cm = CompiledModel(model_or_fn, target, fallback, passes, dict(options))
    on_cpu = all(not isinstance(t, torch.Tensor) or t.is_cpu for t in inputs)
    if cm._gpu and on_cpu:
        cm._trace_device = torch.device("cpu")
    tensors = cm._as_tensors(inputs, None, cm._trace_device)
    cm._nargs = len(tensors)
    entry = cm._entry_for(tensors, cm._weights())
    cm._last = entry
    return cm


# -- building one signature --------------------------------------------------------------------
@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while the body runs, back as it was after.

    A compile allocates tens of thousands of IR objects; now and then that triggers a full
    collection, whose cost grows with everything the process holds: 0.16-0.2 s with torch
    and its ~320,000 tracked objects (``gc.collect()`` timed after a compile). Twelve cold
    compiles of the transformer block each way, alternating: collector on, median 0.45 s
    and two of twelve over 0.8 s; paused, median 0.46 s and none over 0.51 s. The cycles a
    compile leaves (IR nodes point at their parents) go at the next collection after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build(cm: CompiledModel, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> _Entry:
    """Compile for these inputs and weights, then set how the entry is called (see minicomp.weights)."""
    found: dict[str, Any] = {}
    with _collector_paused():
        entry = _build_entry(cm, tensors, weights, found)
    attrs, names = tuple(found.get("attrs", ())), cm._plan.names if cm._plan is not None else []
    entry.n_user = len(tensors)
    if found.get("layout"):
        entry.layout = input_layout(tensors)
    if entry.eager:
        return entry
    entry.lifted = not cm._freeze
    if entry.lifted:
        entry.attrs = attrs
        sig = guards.Signature.of([*tensors, *weights, *attrs])
        entry.shapes, entry.dtypes = sig.shapes, sig.dtypes
        entry.rest_types = tuple(zip(sig.shapes[len(tensors):], sig.dtypes[len(tensors):]))
    elif weights or attrs:
        entry.frozen = FrozenWeights(names, weights, attrs)
    if not isinstance(cm._fn, Graph):
        entry.grad = Differentiable(cm._fn, len(tensors), names, entry.run, entry.lifted)
    return entry


def _build_entry(cm: CompiledModel, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                 found: dict[str, Any]) -> _Entry:
    """The entry for one signature; ``found["attrs"]``: the tensors the traced program reads by attribute."""
    sig = guards.Signature.of(tensors)
    if isinstance(cm._fn, Graph):
        _check_graph_inputs(cm._fn, tensors)
        graph, unflatten = cm._fn.copy(), list
    else:
        from minicomp.frontend import trace_with_spec
        try:
            traced = trace_with_spec(cm._fn, tuple(t.to(cm._trace_device) for t in tensors),
                                     fallback=cm._fallback and cm.target in _PARTITION_TARGETS,
                                     lift_weights=not cm._freeze,
                                     weights=list(zip(cm._plan.names, weights)) if cm._plan is not None else None)
        except UnsupportedOpError as err:
            if not cm._fallback:
                raise
            return _eager(cm, sig, [f"unsupported op '{err.op}'" + (f" at {err.where}" if err.where else "")])
        graph = traced.graph
        unflatten = (lambda outs: outs[0]) if traced.out_spec.is_leaf() else traced.unflatten
        found["attrs"] = traced.tensor_attrs
        found["layout"] = traced.layout_sensitive
    mkey = _model_key(cm, graph, None if isinstance(cm._fn, Graph) else traced.out_spec)
    hit = _from_model_cache(cm, mkey, graph, sig, unflatten) if mkey is not None else None
    if hit is not None:
        return hit
    graph, ctx = _run_passes(graph, cm.target, cm._passes, cm._options, cm._dump_dir, cm._print_ir)
    if any(n.op == "external" for n in graph.nodes):
        return _partitioned(cm, sig, graph, unflatten, ctx)
    if cm.target == "interpret":
        return _Entry(sig.shapes, sig.dtypes, _interpreter(graph), unflatten, graph, ctx=ctx)
    notes: list[str] = []
    try:
        program = lower_graph(graph, notes=notes)
    except LoweringError as err:
        if not cm._fallback:
            raise CompileError(f"cannot lower the graph: {err}") from err
        return _eager(cm, sig, [f"lowering: {err}"])
    if cm._gpu:
        from minicomp.codegen.triton import generate
        from minicomp.triton_runtime import TritonProgram
        gen_opts = {k: cm._options[k] for k in ("autotune", "max_rblock") if k in cm._options}
        module = generate(program, name=_symbol(graph.name), **gen_opts)
        run = TritonProgram(program, module, cm.device)
        return _Entry(sig.shapes, sig.dtypes, run, unflatten, graph, program, module, ctx, notes=notes)
    module = _compile_cpu(program, graph.name, cm._options)
    from minicomp.runtime import NativeProgram
    native = NativeProgram(program, module.entry_address, keepalive=module)
    if mkey is not None:
        from minicomp.program_cache import store_model
        store_model(mkey, program, module.name, graph, notes)
    return _Entry(sig.shapes, sig.dtypes, native, unflatten, graph, program, module, ctx, notes=notes)


def _partitioned(cm: CompiledModel, sig, graph: Graph, unflatten, ctx) -> _Entry:
    """Native parts compiled one program each, ``external`` nodes run in PyTorch between them."""
    from minicomp.fallback import PartitionedProgram, Segment, describe, partition
    if cm.target not in _PARTITION_TARGETS:
        raise CompileError(f"graph '{graph.name}' has external (PyTorch) ops; target '{cm.target}' cannot run "
                           f"them (use {' or '.join(map(repr, _PARTITION_TARGETS))})")
    steps = partition(graph)
    reasons = [describe(s) for s in steps if not isinstance(s, Segment)]
    runners, parts, notes = [], [], []
    for seg in (s for s in steps if isinstance(s, Segment)):
        if cm.target == "interpret":
            runners.append(_interpreter(seg.graph))
            continue
        try:
            program = lower_graph(seg.graph, notes=notes)
        except LoweringError as err:
            if not cm._fallback:
                raise CompileError(f"cannot lower the graph: {err}") from err
            return _eager(cm, sig, [f"lowering: {err}"])
        module = _compile_cpu(program, seg.graph.name, cm._options)
        from minicomp.runtime import NativeProgram
        runners.append(NativeProgram(program, module.entry_address, keepalive=module))
        parts.append((program, module))
    run = PartitionedProgram(graph, steps, runners, cm.device)
    return _Entry(sig.shapes, sig.dtypes, run, unflatten, graph, ctx=ctx, fallbacks=reasons, notes=notes,
                  parts=parts)


def _model_key(cm: CompiledModel, graph: Graph, out_spec) -> str | None:
    """The program-cache key of the traced ``graph`` (:mod:`minicomp.program_cache`), or None when this
    compile must not use (or fill) the cache."""
    if (cm.target != "cpu" or not cm._options.get("cache", True) or isinstance(cm._fn, Graph)
            or cm._dump_dir is not None or cm._print_ir):
        return None
    from minicomp.program_cache import graph_key
    passes = cm._passes.resolve(cm._options) if isinstance(cm._passes, Extend) else cm._passes  # keyed as a list
    return graph_key(graph, out_spec, cm.target, cm._options, passes, cm._fallback)


def _from_model_cache(cm: CompiledModel, key: str, graph: Graph, sig, unflatten) -> _Entry | None:
    """An entry from a program-cache hit that fits the traced ``graph``: no passes, lowering or LLVM."""
    from minicomp.program_cache import compile_cpu, lookup_model
    from minicomp.runtime import NativeProgram
    hit = lookup_model(key, graph)
    if hit is None:
        return None
    module = compile_cpu(hit.program, hit.name, cm._options)
    native = NativeProgram(hit.program, module.entry_address, keepalive=module)
    return _Entry(sig.shapes, sig.dtypes, native, unflatten, None, hit.program, module,
                  notes=hit.notes, graph_loader=hit.load_graph)


def _check_graph_inputs(graph: Graph, tensors: Sequence[torch.Tensor]) -> None:
    """A Graph has one static signature: its input types; and it must be valid IR (checked before any
    pass, so a mistake in the user's graph is reported against that graph, not after a pass)."""
    from minicomp.ir.verifier import VerifyError, verify
    try:
        verify(graph)
    except VerifyError as exc:
        raise CompileError(f"graph '{graph.name}' is not valid IR: {exc}") from None
    if len(tensors) != len(graph.inputs):
        raise GuardError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s), got {len(tensors)}")
    for i, (t, v) in enumerate(zip(tensors, graph.inputs)):
        want = guards.TORCH_DTYPE[v.type.dtype]
        if tuple(t.shape) != tuple(v.type.shape) or t.dtype != want:
            raise GuardError(f"input {i} is {str(t.dtype).replace('torch.', '')}{list(t.shape)}, but graph "
                             f"'{graph.name}' input %{v.name} has type {v.type}")


def _eager(cm: CompiledModel, sig, reasons: list[str]) -> _Entry:
    fn = cm._fn
    if isinstance(fn, Graph):
        return _Entry(sig.shapes, sig.dtypes, _interpreter(fn.copy()), list, fallbacks=reasons, eager=True)
    return _Entry(sig.shapes, sig.dtypes, lambda ts: fn(*ts[:len(sig.shapes)]), lambda out: out, fallbacks=reasons,
                  eager=True)


def _run_passes(graph: Graph, target: str, passes, options: dict[str, Any], dump_dir=None,
                print_after_all: bool = False):
    """What a compile runs (tests replace it to watch compiles); see :func:`run_passes`."""
    return run_passes(graph, target, passes, options, dump_dir=dump_dir, print_after_all=print_after_all)


def _interpreter(graph: Graph):
    import numpy as np

    from minicomp.ir.interpreter import interpret

    def run(tensors):
        arrays = [t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy() for t in tensors]
        outs = interpret(graph, *arrays)
        result = []
        for o, v in zip(outs, graph.outputs):
            t = torch.from_numpy(np.array(o, order="C"))  # (ascontiguousarray makes 0-d 1-d)
            result.append(t.to(guards.TORCH_DTYPE[v.type.dtype]))
        return result
    return run
def _symbol(name: str) -> str:
    return "mc_" + (re.sub(r"[^A-Za-z0-9_]", "_", name) or "main")


def _compile_cpu(program, graph_name: str, options: dict[str, Any]):
    from minicomp.program_cache import compile_cpu
    return compile_cpu(program, _symbol(graph_name), options)


def program_text(program) -> str:
    """A deterministic text of everything in a Program that determines its machine code
    (:func:`minicomp.program_cache.program_text`)."""
    from minicomp.program_cache import program_text as text
    return text(program)
