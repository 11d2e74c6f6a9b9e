"""Graph-to-graph passes and the pass manager.

The public names::

    from minicomp.passes import Pass, PassContext, PassManager, default_pipeline, get_pass, Extend
    from minicomp.passes import RewritePattern, Rewriter, apply_patterns, register_pass, explain

``minicomp.compile(..., passes=...)`` takes None (the default pipeline), a list (exactly
those passes) or ``Extend(after={"fuse": [MyPass()]})`` (the default pipeline plus extra
passes at named points; see docs/passes.md).

Passes by name (``minicomp opt FILE.mcir --passes dce,cse,fuse``): ``dce``, ``cse``,
``constant-fold``, ``canonicalize``, ``decompose``, ``layout``, ``fuse``, ``plan-memory``.
"""
from __future__ import annotations

from minicomp.passes.manager import (Decision, Extend, Pass, PassContext, PassManager, PassStats, build_pipeline,
                                     bytes_moved, default_pass_names, default_pipeline, get_pass, kernel_count,
                                     pass_names, register_pass, stats_table, verify_requested)
from minicomp.passes.rewrite import RewriteListener, RewritePattern, Rewriter, apply_patterns, defining
from minicomp.passes.explain import explain
from minicomp.passes import attention, canonicalize, decompose, fusion, layout, memory  # noqa: F401  (register passes)
from minicomp.passes.memory import plan_memory

__all__ = ["Pass", "PassContext", "PassManager", "PassStats", "Decision", "default_pipeline", "get_pass",
           "pass_names", "register_pass", "RewritePattern", "Rewriter", "apply_patterns", "explain",
           "kernel_count", "bytes_moved", "stats_table", "plan_memory", "Extend", "build_pipeline",
           "default_pass_names", "verify_requested", "RewriteListener", "defining"]
