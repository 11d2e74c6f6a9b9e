"""Small timing helpers shared by ``minicomp demo`` and ``minicomp bench``."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], *, min_runs: int = 5, max_runs: int = 200,
                budget_s: float = 0.5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds, over as many runs as fit in ``budget_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], *, budget_s: float = 3.0, rounds: int = 8,
                        runs: int | None = None, warmup: int = 3) -> dict[str, float]:
    """Median wall time in seconds of each function of ``fns``, timed in alternating rounds.

    A shared machine's speed drifts over seconds; timing one function for a second and then
    the next puts that drift into their ratio. Here each of ``rounds`` rounds times every
    function in turn (the order rotating from round to round) for its share of ``budget_s``
    (at least one call), so all of them are measured across the same stretch of time.
    ``runs`` fixes the number of calls per function instead (spread evenly over the rounds).
    """
    names = list(fns)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in names}
    share = budget_s / (rounds * max(len(names), 1))
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, slot = fns[name], times[name]
            want = None if runs is None else -(-runs * (r + 1) // rounds) - len(slot)
            start = time.perf_counter()
            n = 0
            while (n < want) if want is not None else (n == 0 or time.perf_counter() - start < share):
                t0 = time.perf_counter()
                fn()
                slot.append(time.perf_counter() - t0)
                n += 1
    return {k: statistics.median(v) for k, v in times.items()}
