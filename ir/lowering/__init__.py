"""Lowering: graphs to kernel descriptions (:mod:`minicomp.ir.kernel`).

* :func:`lower_node` - one node (or ``fused`` node) to one kernel;
* :func:`body_problem` - whether a would-be fused body is one kernel (fusion asks it);
* :func:`lower_graph` - a whole graph to a :class:`~minicomp.ir.program.Program`
  (kernels, buffer slots, calls, arena size), the input of every backend.

Modules: ``indexing`` (index arithmetic and its simplification), ``builder``
(scalar expressions of graph values), ``special`` (cat, embedding, copy,
batch_norm), ``reductions`` and ``contractions`` (kernel templates),
``kernels`` (a group of nodes to one kernel), ``program`` (graph to Program,
arena planning).
"""
from minicomp.ir.lowering.builder import CannotFuse, LoweringError, NeedMaterialize
from minicomp.ir.lowering.program import (ArenaPlanner, body_problem, first_fit_arena, inplace_refusal, lower_graph,
                                          lower_node)

__all__ = ["lower_node", "lower_graph", "body_problem", "inplace_refusal", "first_fit_arena", "ArenaPlanner", "LoweringError",
           "CannotFuse", "NeedMaterialize"]
