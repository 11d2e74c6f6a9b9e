"""The passes of a compile: the context ``minicomp.compile`` gives them and how it runs them.

:func:`pass_context` and :func:`run_passes` are public (also as ``minicomp.driver.pass_context`` /
``run_passes``) so tools such as ``minicomp explore`` run the pipeline, or one pass at a time,
exactly as a compile does.
"""
from __future__ import annotations

from typing import Any

from minicomp.ir.graph import Graph
from minicomp.passes.manager import PassContext, PassManager, build_pipeline, verify_requested

_GPU_TARGETS = ("triton", "cuda")
#: Options read by the driver and the backends, never handed to the passes.
_DRIVER_OPTIONS = ("threads", "opt_level", "cache", "verify", "autotune", "max_rblock", "freeze")


def pass_context(target: str, options: dict[str, Any] | None = None, listener: Any = None) -> PassContext:
    """The :class:`~minicomp.passes.PassContext` ``minicomp.compile`` gives its passes for ``target``:
    the pass options of ``options`` (driver and backend options left out), the target ("cpu"/"gpu"),
    and what the backend prefers and has (``kn_weight``, ``attention_kernel``). ``listener``: a
    :class:`~minicomp.passes.rewrite.RewriteListener` told about every rewrite of the built-in passes.
    Run passes one at a time with it: ``PassManager([p]).run(graph, ctx)`` for each ``p`` of
    ``build_pipeline(...)``."""
    options = options or {}
    pass_opts = {k: v for k, v in options.items() if k not in _DRIVER_OPTIONS}
    ctx = PassContext(options={"target": "gpu" if target in _GPU_TARGETS else "cpu", **pass_opts}, listener=listener)
    if target == "cpu":  # what the backend prefers (layout) and has (an attention kernel)
        from minicomp.codegen.llvm import attention_fits, kn_weight
        ctx.options.setdefault("kn_weight", kn_weight)
        ctx.options.setdefault("attention_kernel", attention_fits)
    elif target in _GPU_TARGETS:
        from minicomp.codegen.triton import attention_fits as gpu_attention_fits
        ctx.options.setdefault("attention_kernel", gpu_attention_fits)
    return ctx


def run_passes(graph: Graph, target: str, passes: Any = None, options: dict[str, Any] | None = None, *,
               listener: Any = None, dump_dir=None, print_after_all: bool = False) -> tuple[Graph, PassContext]:
    """Run ``passes`` (None: the default pipeline; a list; or ``Extend``) on ``graph`` exactly as
    ``minicomp.compile(..., target=target, passes=passes, **options)`` does: the same context
    (:func:`pass_context`), verifying after every pass when ``options["verify"]`` or
    ``MINICOMP_VERIFY=1`` asks. Returns the graph and the context (decisions, statistics)."""
    options = options or {}
    ctx = pass_context(target, options, listener)
    pass_opts = {k: v for k, v in options.items() if k not in _DRIVER_OPTIONS}
    pipeline = build_pipeline(ctx.options["target"], pass_opts, passes)
    if not pipeline:
        return graph, ctx
    pm = PassManager(pipeline, verify=verify_requested(options.get("verify", False)),
                     dump_dir=str(dump_dir) if dump_dir is not None else None, print_after_all=print_after_all)
    return pm.run(graph, ctx), ctx
