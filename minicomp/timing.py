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
