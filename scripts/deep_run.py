"""Deep random-graph run: N random valid graphs through the CPU and Triton-interpreter targets.

Usage: python scripts/deep_run.py [-n 5000] [--targets cpu,triton] [--dtypes f32] [--seed 0]
                                  [--special] [--max-nodes 8]

Prints the number of graphs, the mismatches (first diverging layer and repro path
of each, deduplicated by layer and first line) and the time taken. Exit status 1
when any mismatch was found. Repro scripts go to $MINICOMP_REPRO_DIR (or a temp dir).
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
from minicomp.testing import InvalidCaseError, MismatchError, check_compile, graphs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="number of random graphs (default 5000)")
    ap.add_argument("--targets", default="cpu,triton", help="comma-separated: cpu, interpret, triton")
    ap.add_argument("--dtypes", default="f32", help="comma-separated input dtypes, or 'all'")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--special", action="store_true", help="mix NaN/inf/-0.0 into float inputs")
    ap.add_argument("--max-nodes", type=int, default=8)
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    dtypes = tuple(DType) if args.dtypes == "all" else tuple(DType.parse(d) for d in args.dtypes.split(","))
    warnings.simplefilter("ignore")
    count, found = [0], collections.OrderedDict()
    kinds: collections.Counter = collections.Counter()

    @seed(args.seed if args.seed is not None else random.getrandbits(32))
    @settings(max_examples=args.n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(graphs(max_nodes=args.max_nodes, dtypes=dtypes, special_values=args.special))
    def run(case) -> None:
        count[0] += 1
        try:
            check_compile(case, targets=targets)
        except MismatchError as e:
            key = (e.layer, (e.detail.strip().splitlines() or [""])[-1][:120])
            kinds[key] += 1
            found.setdefault(key, e.repro_path)
        except InvalidCaseError as e:
            kinds[("invalid case", str(e).splitlines()[0][:120])] += 1
        if count[0] % 500 == 0:
            print(f"  {count[0]} graphs, {sum(kinds.values())} mismatches, {time.time() - start:.0f}s", flush=True)

    start = time.time()
    run()
    elapsed = time.time() - start
    print(f"graphs: {count[0]}  targets: {','.join(targets)}  dtypes: {args.dtypes}  "
          f"mismatches: {sum(kinds.values())}  time: {elapsed:.1f}s ({elapsed / max(count[0], 1) * 1e3:.0f} ms/graph)")
    for (layer, line), n in kinds.most_common():
        print(f"  {n:5d}  {layer}: {line}\n         repro: {found.get((layer, line), '-')}")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
