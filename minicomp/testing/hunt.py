"""A bug hunt: random graphs through both oracles until the first failure, then shrink and report it.

:func:`hunt` is "a default run of the toolkit": it draws graphs with
:func:`~minicomp.testing.graphs.graphs` (a mix of the profiles in :data:`PROFILES`:
plain float32, NaN/inf/-0.0 inputs, all dtypes; swarm and whole-registry op choice), checks each with
:func:`~minicomp.testing.check.find_failure` (PyTorch differential and bit-exact
pass checks), and on the first failure shrinks the case
(:func:`~minicomp.testing.shrink.shrink_case`), writes a repro script and returns
a :class:`Finding`. It stops at a time budget; hypothesis only draws (no shrinking
of its own, no example database, and ``seed`` decides the draws even under the CI profile).
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType
from minicomp.testing.graphs import Case, Coverage, graphs

_F = (DType.f32,)
_ALL = (DType.f32, DType.f64, DType.f16, DType.bf16, DType.i32, DType.i64, DType.bool)
#: Graph profiles a hunt mixes (keyword arguments of :func:`graphs`), drawn with equal odds: three
#: swarm profiles (20 of the registry's ops per graph, so ops meet each other in the pairs rewrites
#: match) and one over the whole registry (every op in one graph: single-op bugs, rare combinations).
PROFILES: tuple[dict[str, Any], ...] = (
    dict(dtypes=_F, min_nodes=30, max_nodes=80, depth=0.5, swarm=20),
    dict(dtypes=_F, min_nodes=30, max_nodes=80, special_values=True, depth=0.5, swarm=20, extra_outputs=0.5),
    dict(dtypes=_ALL, min_nodes=8, max_nodes=30, special_values=True, depth=0.3, swarm=20),
    dict(dtypes=_F, min_nodes=30, max_nodes=80, special_values=True, depth=0.5, extra_outputs=0.5),
)


@dataclasses.dataclass
class Finding:
    """The first failure of a :func:`hunt`: the :class:`~minicomp.testing.check.MismatchError` (its
    ``report`` is one screen) and the hunt's figures (``skipped``: failures ``blame`` left out)."""

    error: Any
    seconds_to_failure: float
    graphs_tried: int
    original_nodes: int
    shrunk_nodes: int
    shrink_seconds: float
    skipped: int = 0

    @property
    def layer(self) -> str:
        return self.error.layer

    @property
    def case(self) -> Case:
        return self.error.case

    @property
    def repro_path(self) -> str:
        return self.error.repro_path

    def __str__(self) -> str:
        skipped = f" ({self.skipped} other failures skipped)" if self.skipped else ""
        return (f"{self.error.report}\n--- found after {self.graphs_tried} graphs in {self.seconds_to_failure:.1f}s"
                f"{skipped}; shrunk {self.original_nodes} -> {self.shrunk_nodes} op nodes in {self.shrink_seconds:.1f}s")


class _Stop(Exception):
    """Ends the hypothesis loop (found a failure, or out of time)."""


def _strategy(profiles: Sequence[dict[str, Any]], coverage: Coverage | None, graph_kwargs: dict[str, Any]):
    if graph_kwargs:
        return graphs(coverage=coverage, **graph_kwargs)
    return st.one_of(*[graphs(coverage=coverage, **p) for p in profiles])


def warm_up(targets: Sequence[str]) -> None:
    """Import and initialize everything a check needs (torch, LLVM, the targets) on a one-op graph, so a
    hunt's time budget is spent hunting, not starting up."""
    import numpy as np

    from minicomp.ir import parse
    from minicomp.testing.check import find_failure
    case = Case(parse("graph @w(%x: f32[2]) {\n  %y = neg %x : f32[2]\n  return %y\n}"),
                [np.array([1.0, -2.0], np.float32)])
    find_failure(case, targets)


def hunt(targets: Sequence[str] = ("cpu",), passes: Sequence[Any] | None = None, *, time_budget_s: float = 60.0,
         max_examples: int = 100_000, seed: int = 0, exact: bool = True, shrink_budget_s: float = 20.0,
         coverage: Coverage | None = None, profiles: Sequence[dict[str, Any]] = PROFILES,
         blame: Sequence[str] | None = None, clock: str = "wall", **graph_kwargs: Any) -> Finding | None:
    """Check random graphs until one fails or ``time_budget_s`` runs out; the shrunk failure, or None.

    ``targets``/``passes``/``exact`` as for :func:`~minicomp.testing.check.check_compile`;
    ``graph_kwargs`` (``max_nodes=...``, ``dtypes=...``) replace the mixed ``profiles``;
    ``coverage`` counts what was drawn. Cases PyTorch rejects are skipped. ``blame``
    (e.g. ``("pass", "backend")``) keeps only failures whose blamed layer starts with
    one of these words and hunts on past the others (an ``interpreter`` finding is a
    disagreement between the reference interpreter and eager, not about your pass or
    backend); their count is ``Finding.skipped``. The budget starts after :func:`warm_up`.
    ``clock``: ``"wall"`` (default) or ``"cpu"``, this process's CPU time (all its threads), for
    budgets and times that mean the same on a machine shared with other jobs.
    """
    from minicomp.testing.check import InvalidCaseError, find_failure, mismatch_error
    from minicomp.testing.report import op_nodes
    from minicomp.testing.shrink import shrink_case
    from minicomp.testing.targets import check_targets
    check_targets(targets)
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock={clock!r}: expected 'wall' or 'cpu'")
    now = time.monotonic if clock == "wall" else time.process_time
    warm_up(targets)
    state: dict[str, Any] = {"tried": 0}
    start = now()

    @hseed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.generate],
              derandomize=False, suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(_strategy(profiles, coverage, graph_kwargs))
    def run(case: Case) -> None:
        if "found" in state or now() - start > time_budget_s:
            raise _Stop
        state["tried"] += 1
        try:
            failure = find_failure(case, targets, passes, exact=exact)
        except InvalidCaseError:
            return
        if failure is not None and blame is not None and not failure.layer.startswith(tuple(blame)):
            state["skipped"] = state.get("skipped", 0) + 1
        elif failure is not None:
            state["found"] = (case, failure, now() - start)
            raise _Stop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run()
        except Exception:  # noqa: BLE001 - _Stop (wrapped by hypothesis, or as is); real errors re-raised below
            if "found" not in state and now() - start <= time_budget_s:
                raise
    if "found" not in state:
        return None
    case, failure, elapsed = state["found"]
    t0 = time.monotonic()
    small, failure = shrink_case(case, failure, targets, passes, exact=exact, budget_s=shrink_budget_s)
    shrink_s = time.monotonic() - t0  # (wall clock: the shrinker's budget is wall-clock time)
    err = mismatch_error(small, failure, targets, passes, op_nodes(case.graph))
    return Finding(err, elapsed, state["tried"], op_nodes(case.graph), op_nodes(small.graph), shrink_s,
                   state.get("skipped", 0))
