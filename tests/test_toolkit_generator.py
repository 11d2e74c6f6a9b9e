"""The random-graph generator's balance and reach (issue 21).

Before: about 2 op nodes per graph, and ``abs`` (first in alphabetical order) a fifth of
all nodes. Now: op choice balanced over the registry, sizes as asked, larger dims,
special values and interesting constant splats that rewrites care about.
"""
from __future__ import annotations

import collections

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings

from minicomp.ir.dtypes import DType
from minicomp.passes.rewrite import Rewriter
from minicomp.testing import Coverage, default_ops, graphs

GEN = settings(max_examples=60, deadline=None, database=None, phases=[Phase.generate], derandomize=False,
               suppress_health_check=list(HealthCheck))


def _draw(**kwargs) -> tuple[list, Coverage]:
    cases, cov = [], Coverage()

    @seed(21)
    @GEN
    @given(graphs(coverage=cov, **kwargs))
    def collect(case) -> None:
        cases.append(case)

    collect()
    return cases, cov


def test_op_choice_is_balanced_and_sizes_follow_the_knobs() -> None:
    cases, cov = _draw(min_nodes=10, max_nodes=25, special_values=True, dtypes=tuple(DType))
    sizes = [sum(n.op != "constant" for n in c.graph.nodes) for c in cases]
    assert np.mean(sizes) >= 12 and max(sizes) <= 25, sizes
    total = sum(cov.ops.values())
    top, count = cov.ops.most_common(1)[0]
    assert count / total < 0.05, f"{top} is {count / total:.0%} of all nodes"
    missing = set(default_ops()) - set(cov.ops)
    assert len(missing) <= 3, f"never drawn in 60 graphs: {missing}"  # (each op alone: test_each_op_is_generated)
    assert "never drawn:" in cov.summary()


def test_values_reach_the_corners() -> None:
    cases, _ = _draw(min_nodes=5, max_nodes=20, special_values=True, magnitudes=True)
    seen = collections.Counter()
    for c in cases:
        for a in c.inputs:
            a = np.asarray(a)
            if a.dtype.kind == "f":
                seen["nan"] += bool(np.isnan(a).any())
                seen["-0.0"] += bool(((a == 0) & np.signbit(a)).any())
                seen["large"] += bool((np.abs(a[np.isfinite(a)]) >= 1e29).any())
                seen["tiny"] += bool(((np.abs(a) > 0) & (np.abs(a) <= 1e-29)).any())
            seen["big dim"] += any(s >= 8 for s in a.shape)
        seen["size 0"] += any(v.type.numel == 0 for v in c.graph.values())
        for n in c.graph.nodes:
            if len(n.operands) == 2 and any(Rewriter.splat(o) is not None for o in n.operands):
                seen["splat operand"] += 1
            if len(n.operands) == 2 and n.operands[0] is n.operands[1]:
                seen["x op x"] += 1
    for what in ("nan", "-0.0", "large", "tiny", "big dim", "size 0", "splat operand", "x op x"):
        assert seen[what] >= 2, (what, seen)
