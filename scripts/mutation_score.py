"""Mutation score of minicomp.testing: inject each bug of the catalogue, hunt it, report.

Usage: python scripts/mutation_score.py [--budget 60] [--clock wall|cpu] [--mutants a,b] [--jobs 1] [--markdown FILE]
       python scripts/mutation_score.py --one NAME [--budget 60]    (one mutant, JSON on the last line)

Each mutant of :data:`minicomp.testing.mutants.CATALOGUE` runs in a fresh process
(the injection is for good, and a crash must not end the run): it is activated as a
plugin, then :func:`minicomp.testing.hunt` (the default toolkit run: mixed random
graphs, PyTorch differential and bit-exact oracles on the CPU target; failures blamed on
the interpreter, i.e. eager vs the reference, are skipped: mutants live in passes and
backends) runs for at most
``--budget`` seconds, shrinks the first failure and writes a repro script. The
parent then replays that repro in another fresh process (it must exit 1) and prints
a table: caught or not, blamed layer, graphs and seconds to the first failure, and
the shrunk graph's op nodes, with the median time to first failure and the score. A
finding counts only if its repro reproduces with the mutant (exit 1) and not without it
(exit 0: ``MINICOMP_REPRO_SKIP_PLUGINS=1``); anything else is a bug of minicomp itself.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_one(name: str, budget: float, seed: int, clock: str = "wall") -> dict:
    """Activate mutant ``name`` in this process and hunt it; the result as a dict."""
    from minicomp.testing import Coverage, hunt, load_plugin
    from minicomp.testing.mutants import CATALOGUE
    load_plugin("minicomp.testing.mutants:enable_" + name.replace("-", "_"))
    start, cpu = time.monotonic(), time.process_time()
    coverage = Coverage()
    found = hunt(("cpu",), time_budget_s=budget, seed=seed, shrink_budget_s=min(30.0, budget / 2), coverage=coverage,
                 blame=("pass", "backend"), clock=clock)
    m = CATALOGUE[name]
    out = {"name": name, "layer": m.layer, "kind": m.kind, "caught": found is not None,
           "wall_s": round(time.monotonic() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
           "clock": clock, "graphs_drawn": coverage.graphs}
    if found is not None:
        print(found)
        out.update(blamed=found.layer, mode=found.error.mode, seconds=round(found.seconds_to_failure, 1),
                   skipped=found.skipped,
                   graphs=found.graphs_tried, original_nodes=found.original_nodes, shrunk_nodes=found.shrunk_nodes,
                   repro=found.repro_path)
    return out


def _child(name: str, budget: float, seed: int, clock: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--budget", str(budget), "--seed", str(seed),
           "--clock", clock]
    try:  # (a CPU-time budget on a loaded machine takes several times as long in wall time)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=budget * (12 if clock == "cpu" else 2) + 120)
    except subprocess.TimeoutExpired:
        return {"name": name, "caught": False, "error": "timed out"}
    lines = run.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"name": name, "caught": False, "error": f"exit {run.returncode}: {run.stderr.strip()[-300:]}"}
    if result.get("repro"):  # replayed with the mutant (must reproduce: 1) and without it (must not: 0)
        replay = subprocess.run([sys.executable, result["repro"]], capture_output=True, text=True, timeout=300)
        result["repro_exit"] = replay.returncode
        env = {**os.environ, "MINICOMP_REPRO_SKIP_PLUGINS": "1"}
        clean = subprocess.run([sys.executable, result["repro"]], capture_output=True, text=True, timeout=300,
                               env=env)
        result["exit_without_mutant"] = clean.returncode
        if clean.returncode != 0:  # the failure is not the mutant's: a bug of minicomp itself (or the oracle)
            result["caught"] = False
            result["error"] = f"found a failure that is not the mutant's (blamed {result.get('blamed')}): " \
                              f"{result['repro']}"
        elif replay.returncode != 1:  # a finding whose repro does not reproduce is not a catch
            result["caught"] = False
            result["error"] = f"the repro exits {replay.returncode} with the mutant: {result['repro']}"
    return result


def table(results: list[dict], budget: float, clock: str = "wall") -> str:
    """The results as a markdown table plus a summary line."""
    rows = ["| mutant | where | bug class | caught | blamed (oracle) | graphs | s to 1st failure | shrunk op nodes "
            "| repro exit with / without |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        blamed = f"{r['blamed']} ({r['mode']})" if r.get("caught") else r.get("error", "-")
        rows.append(f"| {r['name']} | {r.get('layer', '?')} | {r.get('kind', '?')} | "
                    f"{'yes' if r.get('caught') else '**no**'} | {blamed} | {r.get('graphs', '-')} | "
                    f"{r.get('seconds', '-')} | {r.get('original_nodes', '-')} -> {r.get('shrunk_nodes', '-')} | "
                    f"{r.get('repro_exit', '-')} / {r.get('exit_without_mutant', '-')} |" if r.get("caught") else
                    f"| {r['name']} | {r.get('layer', '?')} | {r.get('kind', '?')} | **no** | {blamed} | "
                    f"{r.get('graphs_drawn', '-')} | - | - | - |")
    caught = [r for r in results if r.get("caught")]
    times = [r["seconds"] for r in caught]
    sizes = [r["shrunk_nodes"] for r in caught]
    rows.append("")
    unit = "s" if clock == "wall" else "CPU s"
    rows.append(f"caught {len(caught)}/{len(results)} within {budget:.0f} {unit} each; median time to first failure "
                f"{statistics.median(times) if times else float('nan'):.1f} {unit}; median shrunk size "
                f"{statistics.median(sizes) if sizes else float('nan'):.0f} op nodes (max {max(sizes, default=0)}); "
                f"repros reproducing in a fresh process: {sum(r.get('repro_exit') == 1 for r in caught)}/{len(caught)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of hunting per mutant (default 60)")
    ap.add_argument("--mutants", default="", help="comma-separated names (default: the whole catalogue)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="mutants hunted at once (each in its own process)")
    ap.add_argument("--markdown", default="", help="also write the table to this file")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="what --budget and the times count: wall-clock seconds (default) or this process's CPU "
                         "seconds (for a machine shared with other jobs, where wall time is inflated)")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.budget, args.seed, args.clock)))
        return 0
    from concurrent.futures import ThreadPoolExecutor

    from minicomp.testing.mutants import CATALOGUE
    names = [n for n in args.mutants.split(",") if n] or list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        print(f"unknown mutants {unknown}; known: {', '.join(CATALOGUE)}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = []
        for r in pool.map(lambda n: _child(n, args.budget, args.seed, args.clock), names):
            results.append(r)
            print(json.dumps(r), flush=True)
    text = table(results, args.budget, args.clock)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
