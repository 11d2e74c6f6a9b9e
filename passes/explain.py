"""Human-readable explanation of what the passes decided (from the PassContext's log)."""
from __future__ import annotations

from minicomp.passes.manager import PassContext, stats_table

_TITLES = {
    "fused": "Kernels formed",
    "unfused": "Adjacent kernels left unfused (and why)",
    "layout": "Layout decisions",
    "reuse": "Buffer reuse",
    "inplace": "In-place updates",
    "memory": "Memory",
    "decompose": "Decompositions",
    "rewrite": "Rewrites",
}


def explain(ctx: PassContext, stats: bool = True) -> str:
    """Every recorded decision grouped by kind, then (optionally) the per-pass statistics table."""
    lines: list[str] = []
    kinds = list(_TITLES) + sorted({d.kind for d in ctx.decisions} - set(_TITLES))
    for kind in kinds:
        items = [d for d in ctx.decisions if d.kind == kind]
        if not items:
            continue
        lines.append(f"{_TITLES.get(kind, kind)}:")
        lines.extend(f"  {d.subject}: {d.why}  [{d.pass_name}]" for d in items)
    if stats and ctx.stats:
        lines.append("Per-pass statistics:")
        lines.extend("  " + row for row in stats_table(ctx).splitlines())
    return "\n".join(lines) if lines else "(no decisions recorded)"
