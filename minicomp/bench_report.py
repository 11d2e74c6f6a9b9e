"""The tables and the plot of ``minicomp bench`` (rows as :func:`minicomp.bench.run_case` makes them)."""
from __future__ import annotations

import math


def _grid(header: tuple, rows: list[tuple]) -> str:
    out = [header] + rows
    widths = [max(len(row[i]) for row in out) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in out)


def _peak_text(row: dict) -> str:
    p = row.get("peak_mb")
    return "-" if not p else f"{p['eager']:.3g}/{p['inductor']:.3g}/{p['minicomp']:.3g}"


def limit_text(row: dict) -> str:
    """minicomp's fraction of the limit that binds the case, e.g. ``71% FMA`` or ``45% copy``."""
    r = row.get("roofline", {}).get("minicomp")
    if not r or not isinstance(r.get("fraction"), float) or math.isnan(r["fraction"]):
        return "-"
    return f"{100 * r['fraction']:.0f}% {'FMA' if r['bound'] == 'compute' else 'copy'}"


def _overhead_text(row: dict) -> str:
    o = row.get("overhead")
    return "-" if not o else f"{o['overhead_us']:.1f}/{o['call_path_us']:.1f}"


def _thp_text(row: dict) -> str:
    return f"{row['minicomp_no_thp_ms']:.3f}" if "minicomp_no_thp_ms" in row else "-"


def format_table(rows: list[dict]) -> str:
    """The latency table: times, ratios, minicomp's place on the roofline, its per-call overhead
    (between kernels / Python call path, microseconds), the compile times of the headline method,
    the largest difference from eager and the peak memory of one call."""
    header = ("case", "eager ms", "inductor ms", "minicomp ms", "no-THP ms", "vs eager", "vs inductor", "limit",
              "overhead us", "compile s", "inductor compile s", "cached s", "max diff", "peak MB eager/ind/mc")
    out = []
    for r in rows:
        c = r["compile_s"]
        out.append((r["name"], f"{r['eager_ms']:.3f}", f"{r['inductor_ms']:.3f}", f"{r['minicomp_ms']:.3f}",
                    _thp_text(r), f"{r['eager_ms'] / r['minicomp_ms']:.2f}x",
                    f"{r['inductor_ms'] / r['minicomp_ms']:.2f}x",
                    limit_text(r), _overhead_text(r), f"{c['minicomp']:.2f}", f"{c['inductor']:.2f}",
                    f"{c['minicomp_cached']:.3f}", f"{r['max_abs_diff_vs_eager']:.1e}", _peak_text(r)))
    return _grid(header, out)


def _cached_text(times: dict) -> str:
    """A disk-cached compile's seconds, marked when it was not served from the cache."""
    return f"{times['cached_s']:.3f}" + ("" if times.get("cache_hit", True) else " (miss)")


def format_compile_table(rows: list[dict]) -> str:
    """Compile seconds by method: fresh process per case (cold, warm, disk-cached, the process's
    start-up apart) beside the in-process measurement the bench made before (old method)."""
    header = ("case", "cold mc", "cold ind", "ratio", "warm mc", "warm ind", "cached mc", "cached ind",
              "start-up mc/ind", "old: mc", "old: ind", "old ratio")
    out = []
    for r in rows:
        fresh, old = r.get("compile", {}).get("fresh_process"), r.get("compile", {}).get("in_process")
        if not fresh or not old:
            continue
        m, i = fresh["minicomp"], fresh["inductor"]
        out.append((r["name"], f"{m['cold_s']:.2f}", f"{i['cold_s']:.2f}", f"{m['cold_s'] / i['cold_s']:.2f}",
                    f"{m['warm_s']:.2f}", f"{i['warm_s']:.2f}", _cached_text(m), _cached_text(i),
                    f"{m['startup_s']:.2f}/{i['startup_s']:.2f}", f"{old['minicomp']:.2f}", f"{old['inductor']:.2f}",
                    f"{old['minicomp'] / old['inductor']:.2f}"))
    return _grid(header, out) if out else ""


def format_targets(rows: list[dict]) -> str:
    """One line per case with an issue-19 target: the value reached, the goal and whether it is met."""
    lines = []
    for r in rows:
        t = r.get("target")
        if not t:
            continue
        if t["kind"] == "overhead":
            text = f"per-call overhead {t['value']:.1f} us (goal under {t['goal']:.0f} us)"
        else:
            text = f"{100 * t['value']:.0f}% of the {'FMA peak' if t['kind'] == 'fma' else 'copy bandwidth'} " \
                   f"(goal at least {100 * t['goal']:.0f}%)"
        lines.append(f"  {r['name']}: {text}: {'met' if t['met'] else 'MISSED'}")
    return "targets (issue 19):\n" + "\n".join(lines) if lines else ""


def machine_line(machine: dict) -> str:
    """One line: the CPU, the thread counts of the three and the limits measured in this run."""
    th, lim = machine["threads"], machine["limits"]
    return (f"machine: {machine['cpu']}; threads minicomp {th['minicomp']}, eager {th['eager']}, inductor "
            f"{th['inductor']}; FMA peak {lim['fma_peak_gflops']} GFLOP/s ({lim['fma_peak_gflops_1t']} on one "
            f"thread), copy {lim['copy_gbps']} GB/s ({lim['copy_gbps_1t']} on one), torch sgemm "
            f"{machine['sgemm_gflops']} GFLOP/s")


def plot(rows: list[dict], path: str) -> bool:
    """Bar chart of speedups (eager/minicomp, inductor/minicomp); False when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["name"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar([x - 0.2 for x in xs], [r["eager_ms"] / r["minicomp_ms"] for r in rows], 0.4, label="vs eager")
    ax.bar([x + 0.2 for x in xs], [r["inductor_ms"] / r["minicomp_ms"] for r in rows], 0.4, label="vs Inductor")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("speedup of minicomp (higher is better)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
