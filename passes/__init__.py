"""Graph-to-graph passes and the pass manager.

The public names::

    from minicomp.passes import Pass, PassContext, PassManager, default_pipeline, get_pass
    from minicomp.passes import RewritePattern, Rewriter, apply_patterns, register_pass, explain

Passes by name (``minicomp opt FILE.mcir --passes dce,cse,fuse``): ``dce``, ``cse``,
``constant-fold``, ``canonicalize``, ``decompose``, ``layout``, ``fuse``, ``plan-memory``.
"""
from __future__ import annotations

from minicomp.passes.manager import (Decision, Pass, PassContext, PassManager, PassStats, bytes_moved,
                                     default_pipeline, get_pass, kernel_count, pass_names, register_pass,
                                     stats_table)
from minicomp.passes.rewrite import RewritePattern, Rewriter, apply_patterns
from minicomp.passes.explain import explain
from minicomp.passes import attention, canonicalize, decompose, fusion, layout, memory  # noqa: F401  (register passes)
from minicomp.passes.memory import plan_memory

__all__ = ["Pass", "PassContext", "PassManager", "PassStats", "Decision", "default_pipeline", "get_pass",
           "pass_names", "register_pass", "RewritePattern", "Rewriter", "apply_patterns", "explain",
           "kernel_count", "bytes_moved", "stats_table", "plan_memory"]
