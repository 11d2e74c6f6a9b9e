"""Deep random-graph run: N random valid graphs through both oracles, every distinct failure shrunk.

Usage: python scripts/deep_run.py [-n 5000] [--targets cpu,triton] [--dtypes f32] [--seed 0]
                                  [--special] [--magnitudes] [--min-nodes 10] [--max-nodes 50]
                                  [--depth 0.4] [--no-exact] [--shrink 20]

Each graph goes through :func:`minicomp.testing.find_failure` (PyTorch differential on
each target, bit-exact pass checks). Failures are grouped by blamed layer, oracle and
the detail's first line; the first case of each group is shrunk (``--shrink`` seconds,
0 to skip) and gets a repro script. Prints the groups, the coverage (ops, dtypes and
fusion kinds exercised) and the time taken. Exit status 1 when any failure was found.
Repro scripts go to $MINICOMP_REPRO_DIR (or a temp dir).
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import warnings

from hypothesis import HealthCheck, Phase, given, seed, settings

from minicomp.ir.dtypes import DType
from minicomp.testing import Coverage, InvalidCaseError, find_failure, graphs
from minicomp.testing.check import _passes, mismatch_error
from minicomp.testing.report import op_nodes
from minicomp.testing.shrink import shrink_case


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="number of random graphs (default 5000)")
    ap.add_argument("--targets", default="cpu,triton", help="comma-separated: cpu, interpret, triton")
    ap.add_argument("--dtypes", default="f32", help="comma-separated input dtypes, or 'all'")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--special", action="store_true", help="mix NaN/inf/-0.0 into float inputs")
    ap.add_argument("--magnitudes", action="store_true", help="with --special: large and tiny values too")
    ap.add_argument("--min-nodes", type=int, default=10)
    ap.add_argument("--max-nodes", type=int, default=50)
    ap.add_argument("--depth", type=float, default=0.4, help="0..1: how often ops chain on the newest value")
    ap.add_argument("--no-exact", action="store_true", help="skip the bit-exact pass checks")
    ap.add_argument("--shrink", type=float, default=20.0, help="seconds to shrink each distinct failure")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    dtypes = tuple(DType) if args.dtypes == "all" else tuple(DType.parse(d) for d in args.dtypes.split(","))
    warnings.simplefilter("ignore")
    coverage, kinds, first = Coverage(), collections.Counter(), {}
    count = [0]

    @seed(args.seed if args.seed is not None else random.getrandbits(32))
    @settings(max_examples=args.n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(graphs(min_nodes=args.min_nodes, max_nodes=args.max_nodes, dtypes=dtypes, special_values=args.special,
                  magnitudes=args.magnitudes, depth=args.depth, coverage=coverage))
    def run(case) -> None:
        count[0] += 1
        try:
            failure = find_failure(case, targets, exact=not args.no_exact)
        except InvalidCaseError as e:
            kinds[("invalid case", "-", str(e).splitlines()[0][:120])] += 1
            return
        if count[0] % 10 == 0:  # fusion kinds: the pipeline's output, now and then
            from minicomp.passes.manager import PassManager
            coverage.add_compiled(PassManager(_passes(None, targets[0] if targets else "cpu")).run(case.graph.copy()))
        if failure is not None:
            key = (failure.layer, failure.mode, (failure.detail.strip().splitlines() or [""])[0][:120])
            kinds[key] += 1
            first.setdefault(key, (case, failure))
        if count[0] % 500 == 0:
            print(f"  {count[0]} graphs, {sum(kinds.values())} failures, {time.time() - start:.0f}s", flush=True)

    start = time.time()
    run()
    elapsed = time.time() - start
    print(f"graphs: {count[0]}  targets: {','.join(targets)}  dtypes: {args.dtypes}  "
          f"failures: {sum(kinds.values())}  time: {elapsed:.1f}s ({elapsed / max(count[0], 1) * 1e3:.0f} ms/graph)")
    print(coverage.summary())
    for key, n in kinds.most_common():
        print(f"  {n:5d}  {key[0]} ({key[1]}): {key[2]}")
        if key in first:
            case, failure = first[key]
            before = op_nodes(case.graph)
            if args.shrink > 0:
                case, failure = shrink_case(case, failure, targets, None, exact=not args.no_exact,
                                            budget_s=args.shrink)
            err = mismatch_error(case, failure, targets, None, before)
            print("         " + err.report.replace("\n", "\n         "))
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
