"""The numeric check: every pass's graph run by the reference interpreter, against the reference.

For a model file the reference is eager PyTorch on the example inputs; for a text IR
file it is the input graph in the interpreter. Each graph is compared output by
output with ``torch.testing.assert_close`` at its default tolerances for the dtype
(NaN equal to NaN); the record keeps the largest absolute and relative differences,
and how much this pass moved the numbers against the previous one. A graph
identical to the previous pass's (same text, same constant arrays) is not run again.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def compare(got: list[Any], want: list[Any]) -> dict[str, Any]:
    """Largest differences of ``got`` (numpy arrays) against ``want`` (tensors), and whether they
    are within torch's default tolerances."""
    import torch
    if len(got) != len(want):
        return {"ok": False, "max_abs": None, "max_rel": None,
                "why": f"{len(got)} output(s), the reference has {len(want)}"}
    max_abs = max_rel = 0.0
    why = None
    for i, (g, w) in enumerate(zip(got, want)):
        g = torch.from_numpy(np.array(g, order="C")).to(w.dtype)
        if tuple(g.shape) != tuple(w.shape):
            return {"ok": False, "max_abs": None, "max_rel": None,
                    "why": f"output {i} has shape {tuple(g.shape)}, the reference {tuple(w.shape)}"}
        a, r = _diffs(g, w)
        max_abs, max_rel = max(max_abs, a), max(max_rel, r)
        try:
            torch.testing.assert_close(g, w, equal_nan=True)
        except AssertionError as exc:
            why = why or f"output {i}: " + " ".join(str(exc).split())[:300]
    return {"ok": why is None, "max_abs": max_abs, "max_rel": max_rel, "why": why}


def _diffs(g, w) -> tuple[float, float]:
    """Largest |g - w| and |g - w| / |w| (NaN where both are NaN counts as equal; one NaN as inf)."""
    import torch
    if g.numel() == 0:
        return 0.0, 0.0
    gd, wd = g.double(), w.double()
    both_nan = torch.isnan(gd) & torch.isnan(wd)
    same = (gd == wd) | both_nan  # equal infinities too
    d = torch.where(same, torch.zeros_like(gd), (gd - wd).abs())
    d = torch.nan_to_num(d, nan=float("inf"))
    rel = torch.where(same, torch.zeros_like(gd), d / wd.abs())
    rel = torch.nan_to_num(rel, nan=float("inf"))
    return float(d.max()), float(rel.max())


def check_passes(report, subject) -> None:
    """Fill ``numeric`` of every pass record of ``report`` (see the module docstring)."""
    from minicomp.ir.interpreter import interpret
    prev_rec = None
    prev_out: list[Any] | None = None
    for rec in list(report.passes):
        if rec.error is not None:
            result: dict[str, Any] = {"ok": None, "skipped": "the pass failed"}
        elif prev_rec is not None and prev_rec.fingerprint == rec.fingerprint and prev_rec.numeric is not None:
            result = dict(prev_rec.numeric, same_graph=True, vs_previous=0.0)
        else:
            try:
                out = interpret(rec.graph, *subject.arrays)
            except Exception as exc:  # noqa: BLE001 - shown on the page as this pass's result
                result = {"ok": False, "max_abs": None, "max_rel": None,
                          "why": f"the interpreter raised {type(exc).__name__}: {exc}"}
                out = None
            else:
                result = compare(out, subject.reference)
                result["vs_previous"] = _moved(out, prev_out)
            prev_out = out
        with report.lock:
            rec.numeric = result
        prev_rec = rec


def _moved(out: list[Any], prev: list[Any] | None) -> float | None:
    """Largest change of any output element from the previous checked graph (None: nothing to compare)."""
    if prev is None or len(prev) != len(out):
        return None
    import torch
    moved = 0.0
    for a, b in zip(out, prev):
        if np.shape(a) != np.shape(b):
            return None
        moved = max(moved, _diffs(torch.from_numpy(np.array(a, order="C")).double(),
                                  torch.from_numpy(np.array(b, order="C")).double())[0])
    return moved


def first_failure(results: list[dict[str, Any] | None]) -> int | None:
    """Index of the first pass record whose numbers are beyond tolerance (None: all within, or unknown)."""
    for i, r in enumerate(results):
        if r is not None and r.get("ok") is False:
            return i
    return None
