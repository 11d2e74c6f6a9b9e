"""Property-based testing for minicomp and for compilers built on it.

Public names::

    from minicomp.testing import tensor_types, tensor_values, broadcastable  # hypothesis strategies
    from minicomp.testing import graphs, Case                                # random valid graphs
    from minicomp.testing import check_compile, MismatchError                # differential check

``graphs()`` draws a :class:`Case` (graph + inputs); ``check_compile(case)``
compares PyTorch eager, the interpreter and compile targets and, on a mismatch,
names the first diverging pass or backend and writes a repro script.
"""
from __future__ import annotations

from minicomp.testing.check import InvalidCaseError, MismatchError, check_compile, compare_outputs, run_layer
from minicomp.testing.graphs import Case, default_ops, graphs
from minicomp.testing.strategies import broadcastable, broadcastable_pairs, tensor_types, tensor_values

__all__ = ["tensor_types", "tensor_values", "broadcastable", "broadcastable_pairs", "graphs", "Case",
           "default_ops", "check_compile", "MismatchError", "InvalidCaseError", "compare_outputs", "run_layer"]
