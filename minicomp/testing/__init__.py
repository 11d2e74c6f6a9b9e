"""Property-based testing for minicomp and for compilers built on it (passes, backends).

Public names::

    from minicomp.testing import tensor_types, tensor_values, broadcastable  # hypothesis strategies
    from minicomp.testing import graphs, Case, Coverage                      # random valid graphs
    from minicomp.testing import check_compile, MismatchError, bisect_passes # differential + bit-exact oracles
    from minicomp.testing import zero_sign_difference                        # the differential's sign-of-zero rule
    from minicomp.testing import check_passes_exact, bit_difference          # the bit-exact oracle alone
    from minicomp.testing import shrink, shrink_case                         # delta-debugging reducer
    from minicomp.testing import hunt                                        # generate, check, shrink, report
    from minicomp.testing import register_target, load_plugin                # backends and plugins under test

``graphs()`` draws a :class:`Case` (graph + inputs); ``check_compile(case)``
compares PyTorch eager, the interpreter and compile targets, checks that every
pass keeps the bits, and on a failure names the first diverging pass or backend
(:func:`bisect_passes`), writes a repro script and raises :class:`MismatchError`.
``hunt()`` runs that over many graphs and shrinks the first failure. See docs/testing.md.
"""
from __future__ import annotations

from minicomp.testing.check import (Failure, InvalidCaseError, MismatchError, bisect_passes, check_compile,
                                    compare_outputs, find_failure, run_layer, zero_sign_difference)
from minicomp.testing.exact import REASSOCIATING_PASSES, bit_difference, check_passes_exact
from minicomp.testing.graphs import Case, Coverage, default_ops, graphs
from minicomp.testing.hunt import Finding, hunt
from minicomp.testing.plugins import PluginError, load_plugin
from minicomp.testing.repro import CANNOT_RUN, NOT_REPRODUCED, REPRODUCED
from minicomp.testing.shrink import shrink, shrink_case
from minicomp.testing.strategies import broadcastable, broadcastable_pairs, tensor_types, tensor_values
from minicomp.testing.targets import UnknownTargetError, register_target, target_names

__all__ = ["tensor_types", "tensor_values", "broadcastable", "broadcastable_pairs", "graphs", "Case", "Coverage",
           "default_ops", "check_compile", "find_failure", "Failure", "MismatchError", "InvalidCaseError",
           "compare_outputs", "zero_sign_difference", "run_layer", "bisect_passes", "check_passes_exact",
           "bit_difference",
           "REASSOCIATING_PASSES", "shrink", "shrink_case", "hunt", "Finding", "register_target", "target_names",
           "UnknownTargetError", "load_plugin", "PluginError", "REPRODUCED", "NOT_REPRODUCED", "CANNOT_RUN"]
