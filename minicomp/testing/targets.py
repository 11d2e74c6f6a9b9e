"""Compile targets for the differential check, and how to add one (a backend under test).

A *target* turns an IR :class:`Graph` plus a pass list into a runner: CPU torch
tensors in, a list of tensors (or numpy arrays) out. The built-in targets wrap the
public ``minicomp.compile`` path (the driver's pass pipeline, lowering, backend and
runtime), so what is tested is what users run: ``"cpu"`` (LLVM JIT), ``"interpret"``
(passes, then the numpy interpreter) and ``"triton"`` (passes and lowering for the
GPU; without a CUDA device the kernels run in Triton's interpreter on CPU tensors,
and the driver sets ``TRITON_INTERPRET=1``).

A new backend registers a factory under a name, in an importable module (repro
scripts import that module again to replay a failure)::

    from minicomp.testing import register_target

    @register_target("my-backend")
    def my_backend(graph, passes):          # passes: None (your default) or a list of Pass
        compiled = MyBackend().compile(graph, passes)
        return lambda inputs: compiled.run(*inputs)

    check_compile(case, targets=("my-backend",))

When ``my-backend`` disagrees with PyTorch, ``check_compile`` bisects the pass
pipeline (``passes``, or the CPU pipeline when None) with the interpreter; if every
pass agrees, it blames ``backend my-backend``. An unknown target name is a usage
error (:class:`UnknownTargetError`, listing the known ones), never a mismatch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from minicomp.errors import MinicompError
from minicomp.ir.graph import Graph

Runner = Callable[[Sequence[Any]], list]
TargetFactory = Callable[[Graph, "list | None"], Runner]
#: Targets built into minicomp (compiled through ``minicomp.compile``).
BUILTIN_TARGETS = ("cpu", "interpret", "triton")
TARGETS = BUILTIN_TARGETS  # (the old name)
_TARGETS: dict[str, TargetFactory] = {}


class UnknownTargetError(MinicompError, ValueError):
    """A target name that is neither built in nor registered (a usage error, not a mismatch)."""


def register_target(name: str, factory: TargetFactory | None = None):
    """Register a target factory ``factory(graph, passes) -> runner`` (usable as a decorator).

    ``passes`` is None (the target's default pipeline) or a list of Pass objects;
    the runner takes a list of CPU torch tensors and returns the outputs. A name
    may not shadow a built-in target; re-registering the same function (same module
    and qualified name, e.g. a re-imported module) replaces it, another function is
    an error.
    """
    def deco(f: TargetFactory) -> TargetFactory:
        if name in BUILTIN_TARGETS:
            raise ValueError(f"target {name!r} is built in; choose another name")
        old = _TARGETS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(f"target {name!r} registered twice ({old.__module__}.{old.__qualname__} and "
                             f"{f.__module__}.{f.__qualname__})")
        _TARGETS[name] = f
        return f
    return deco(factory) if factory is not None else deco


def unregister_target(name: str) -> None:
    """Remove a registered target (for tests); unknown names are ignored."""
    _TARGETS.pop(name, None)


def target_names() -> list[str]:
    """Every usable target: the built-in ones, then the registered ones (sorted)."""
    return list(BUILTIN_TARGETS) + sorted(_TARGETS)


def check_targets(targets: Sequence[str]) -> None:
    """Raise :class:`UnknownTargetError` (naming the known targets) for any unknown name in ``targets``."""
    if isinstance(targets, str):
        raise UnknownTargetError(f"targets must be a sequence of names, not the string {targets!r} "
                                 f"(write targets=({targets!r},))")
    for t in targets:
        if t not in BUILTIN_TARGETS and t not in _TARGETS:
            raise UnknownTargetError(f"unknown target {t!r}; known targets: {', '.join(target_names())} "
                                     "(register a new one with minicomp.testing.register_target)")


def target_factory(name: str) -> TargetFactory | None:
    """The registered factory of ``name`` (None for built-in targets)."""
    check_targets([name])
    return _TARGETS.get(name)


def pipeline_target(target: str) -> str:
    """The pass-pipeline flavour of a target: ``"gpu"`` for triton, else ``"cpu"``."""
    return "gpu" if target == "triton" else "cpu"


def compile_graph(graph: Graph, target: str = "cpu", passes: Sequence[Any] | None = None,
                  verify: bool = True) -> Runner:
    """A function running ``graph`` compiled for ``target``: CPU tensors in, list of CPU tensors out.

    ``passes``: None for the target's default pipeline, else pass names or Pass
    objects ([] runs none). ``verify`` verifies the IR after every pass (built-in
    targets). ``graph`` itself is left untouched.
    """
    factory = target_factory(target)
    if factory is not None:
        from minicomp.passes.manager import get_pass
        plist = None if passes is None else [get_pass(p) if isinstance(p, str) else p for p in passes]
        return factory(graph.copy(), plist)
    import torch

    import minicomp
    from minicomp.guards import TORCH_DTYPE
    examples = [torch.zeros(v.type.shape, dtype=TORCH_DTYPE[v.type.dtype]) for v in graph.inputs]
    cm = minicomp.compile(graph, examples, target=target, passes=passes, verify=verify, cache=False,
                          recompile=False)
    if cm.device.type == "cpu":
        return lambda inputs: cm(*inputs)
    return lambda inputs: [t.cpu() for t in cm(*[t.to(cm.device) for t in inputs])]
