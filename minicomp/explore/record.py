"""Run the pipeline one pass at a time and record what each pass did.

Per pass: the IR text and its diff against the previous pass, statistics (nodes,
kernels, bytes moved, time), the decisions the pass logged, every rewrite of the
pattern passes (:mod:`minicomp.explore.rewrites`), the graph drawing, and the numeric
check (:mod:`minicomp.explore.numeric`). The passes run exactly as ``minicomp.compile``
runs them for the CPU (same context options, weights lifted to graph inputs), each
through the pass manager, which verifies the graph after it.

The numeric check and the compiled kernels take the longest; with ``deferred=True``
they run in a background thread after :func:`explore_file` returns, and
:meth:`Report.data` says which parts are still ``pending`` (the server's page polls).
"""
from __future__ import annotations

import difflib
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minicomp.ir.graph import Graph
from minicomp.ir.printer import print_graph


@dataclass
class PassRecord:
    """What the graph looked like after one pass (index 0: the input graph)."""

    index: int
    name: str
    seconds: float
    nodes: int
    kernels: int
    bytes_moved: int
    text: str
    diff: list[tuple[str, str]]
    decisions: list[str]
    rewrites: list[Any]
    graph: Graph
    fingerprint: tuple
    svg: str = ""
    error: str | None = None
    numeric: dict[str, Any] | None = None
    rewrite_data: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rewrite_data = [_rewrite_data(r) for r in self.rewrites]  # once: the server sends it on every poll

    def data(self) -> dict[str, Any]:
        """The JSON-ready form the page reads."""
        return {"index": self.index, "name": self.name, "ms": round(self.seconds * 1e3, 3), "nodes": self.nodes,
                "kernels": self.kernels, "bytes": self.bytes_moved, "diff": self.diff,
                "changed": any(t != " " for t, _ in self.diff), "decisions": self.decisions,
                "rewrites": self.rewrite_data, "svg": self.svg, "error": self.error,
                "numeric": self.numeric}


@dataclass
class Report:
    """Everything the explorer page shows, filled pass by pass (thread-safe reads via :meth:`data`)."""

    title: str
    path: str
    reference: str
    target: str = "cpu"
    passes: list[PassRecord] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    kernels: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    worker: threading.Thread | None = None

    def data(self) -> dict[str, Any]:
        """The JSON-ready record (what the page reads)."""
        from minicomp.explore.numeric import first_failure
        with self.lock:
            return {"title": self.title, "path": self.path, "reference": self.reference, "target": self.target,
                    "passes": [p.data() for p in self.passes], "sources": self.sources,
                    "kernels": self.kernels, "notes": list(self.notes), "pending": list(self.pending),
                    "first_failure": first_failure([p.numeric for p in self.passes]),
                    "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def wait(self, timeout: float | None = None) -> None:
        """Block until the deferred work (numeric check, kernels) is done."""
        if self.worker is not None:
            self.worker.join(timeout)


@dataclass
class _Subject:
    """What is explored: the traced graph, the arrays it runs on, the reference outputs."""

    graph: Graph
    arrays: list[Any]
    reference: list[Any]
    reference_name: str
    tensors: list[Any]


def new_report(path: str, target: str = "cpu") -> Report:
    """An empty record for ``path``, everything pending (a server can show it while it fills)."""
    reference = "the input graph in the interpreter (seeded inputs)" if path.endswith(".mcir") else "eager PyTorch"
    return Report(title=Path(path).stem, path=str(path), reference=reference, target=target,
                  pending=["trace", "passes", "numeric", "kernels"])


def explore_file(path: str, passes: list[Any] | None = None, *, native: bool = True,
                 deferred: bool = False, drawing: str = "auto", target: str = "cpu",
                 report: Report | None = None, loaded: tuple[Any, Any] | None = None) -> Report:
    """Explore a model file (``model()``, ``example_inputs()``) or a text IR file (``.mcir``).

    ``passes``: pass objects (None: the target's default pipeline); ``native``: compile (and, for
    the CPU, time) the kernels; ``drawing``: "auto", "dot" or "builtin"
    (:func:`minicomp.explore.graphsvg.graph_svgs`); ``target``: "cpu" or "triton" (the passes run
    with that target's context options, the kernels are LLVM or Triton). ``report``: a
    :func:`new_report` to fill (pass by pass, under its lock) instead of a fresh one; ``loaded``:
    the model file's ``(model(), example_inputs())`` when the caller already made them.
    """
    from minicomp.explore.subject import subject_of_ir_file, subject_of_model_file
    report = report if report is not None else new_report(path, target)
    start = time.perf_counter()
    subject = subject_of_ir_file(path) if path.endswith(".mcir") else subject_of_model_file(path, loaded)
    with report.lock:
        report.reference = subject.reference_name
        report.pending.remove("trace")
        report.timings["trace_s"] = time.perf_counter() - start
    run_pipeline(report, subject.graph, passes, report.target)
    report.timings["passes_s"] = time.perf_counter() - start - report.timings["trace_s"]
    mark = time.perf_counter()
    draw(report, drawing)
    sources = source_lines(report, Path(path))
    with report.lock:
        report.sources = sources
        report.timings["draw_s"] = time.perf_counter() - mark
        report.pending.remove("passes")

    def finish() -> None:
        _finish(report, subject, native)
    if deferred:
        report.worker = threading.Thread(target=finish, name="minicomp-explore", daemon=True)
        report.worker.start()
    else:
        finish()
    return report


def _finish(report: Report, subject: _Subject, native: bool) -> None:
    """The slow parts: numeric check of every pass, then the compiled kernels."""
    from minicomp.explore.numeric import check_passes
    start = time.perf_counter()
    try:
        check_passes(report, subject)
    except Exception as exc:  # noqa: BLE001 - shown on the page, never swallowed
        _note(report, f"numeric check failed: {type(exc).__name__}: {exc}", traceback.format_exc())
    with report.lock:
        report.pending.remove("numeric")
        report.timings["numeric_s"] = time.perf_counter() - start
    if not native:
        with report.lock:
            report.kernels = {"error": "kernels not compiled (--no-native)", "kernels": []}
            report.pending.remove("kernels")
        return
    start = time.perf_counter()
    try:
        from minicomp.explore.kernels import kernel_report
        final = report.passes[-1]
        kernels = kernel_report(final.graph, subject.tensors, report.target) if final.error is None else \
            {"error": f"the pipeline stopped at pass {final.name!r}: no kernels", "kernels": []}
    except Exception as exc:  # noqa: BLE001
        kernels = {"error": f"{type(exc).__name__}: {exc}", "kernels": []}
    with report.lock:
        report.kernels = kernels
        report.pending.remove("kernels")
        report.timings["kernels_s"] = time.perf_counter() - start


def _note(report: Report, line: str, detail: str = "") -> None:
    with report.lock:
        report.notes.append(line)
    if detail:
        print(detail, file=sys.stderr)


def run_pipeline(report: Report, graph: Graph, passes: list[Any] | None, target: str = "cpu") -> None:
    """Run ``passes`` (None: the target's default pipeline) one at a time, recording each; a pass that
    raises (or leaves an invalid graph) is recorded with its error and ends the pipeline."""
    from minicomp.explore.rewrites import RewriteRecorder
    from minicomp.passes.manager import default_pipeline
    first = _record(0, "input", graph, 0.0, [], [], None)
    with report.lock:
        report.passes.append(first)
    pipeline = default_pipeline("gpu" if target == "triton" else "cpu", {}) if passes is None else list(passes)
    _preload(target)
    recorder = RewriteRecorder()
    with _progress(len(pipeline)) as bar:
        for i, p in enumerate(pipeline, start=1):
            bar.set_description(p.name)
            rec = _run_one(i, p, graph, report.passes[-1], recorder, target)
            with report.lock:
                report.passes.append(rec)
            bar.update(1)
            if rec.error is not None:
                break
            graph = rec.graph


def _preload(target: str) -> None:
    """Import what the first passes would import on first use (the backend's layout and attention
    predicates, networkx for topological sorts), so that the per-pass times are the passes' own."""
    import networkx  # noqa: F401
    if target == "triton":
        import minicomp.codegen.triton  # noqa: F401
    else:
        import minicomp.codegen.llvm  # noqa: F401


def _run_one(index: int, p, graph: Graph, prev: PassRecord, recorder, target: str) -> PassRecord:
    """Run pass ``p`` on (a copy of) ``graph`` as the compile driver does for ``target``, and record it."""
    from minicomp.driver import run_passes
    work = graph.copy()
    recorder.start(work)
    start = time.perf_counter()
    try:
        out, ctx = run_passes(work, target, [p], {"verify": True}, listener=recorder)
    except Exception as exc:  # noqa: BLE001 - a user's pass may raise anything; the page shows it
        rec = _record(index, p.name, work, time.perf_counter() - start, [], recorder.take(), prev)
        rec.error = f"{type(exc).__name__}: {exc}"
        return rec
    seconds = time.perf_counter() - start
    decisions = [f"{d.kind}: {d.subject} -- {d.why}" for d in ctx.decisions]
    return _record(index, p.name, out, seconds, decisions, recorder.take(), prev)


def _record(index: int, name: str, graph: Graph, seconds: float, decisions: list[str], rewrites: list[Any],
            prev: PassRecord | None) -> PassRecord:
    from minicomp.passes.manager import bytes_moved, kernel_count
    text = print_graph(graph, elide_constants=True)
    fp = (text, _array_ids(graph))
    if prev is not None and prev.fingerprint == fp:  # unchanged: share the snapshot and the drawing
        return PassRecord(index, name, seconds, prev.nodes, prev.kernels, prev.bytes_moved, text,
                          [(" ", ln) for ln in text.splitlines()], decisions, rewrites, prev.graph, fp)
    diff = line_diff(prev.text if prev is not None else "", text) if prev is not None else \
        [(" ", ln) for ln in text.splitlines()]
    return PassRecord(index, name, seconds, len(graph.nodes), kernel_count(graph), bytes_moved(graph), text, diff,
                      decisions, rewrites, graph, fp)


def draw(report: Report, drawing: str = "auto") -> None:
    """Draw every distinct graph of the record once (see :func:`minicomp.explore.graphsvg.graph_svgs`)."""
    from minicomp.explore.graphsvg import graph_svgs
    distinct: dict[int, Graph] = {}
    for rec in report.passes:
        distinct.setdefault(id(rec.graph), rec.graph)
    svgs, note = graph_svgs(list(distinct.values()), drawing)
    by_id = dict(zip(distinct, svgs))
    with report.lock:
        for rec in report.passes:
            rec.svg = by_id[id(rec.graph)]
        if note:
            report.notes.append(note)


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Every line of ``before`` and ``after`` tagged " " (kept), "-" (removed) or "+" (added)."""
    a, b = before.splitlines(), after.splitlines()
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [(" ", ln) for ln in a[i1:i2]]
            continue
        out += [("-", ln) for ln in a[i1:i2]]
        out += [("+", ln) for ln in b[j1:j2]]
    return out


def _array_ids(graph: Graph) -> tuple[int, ...]:
    """Identity of every array attribute, nested bodies included (arrays are never mutated)."""
    ids = []
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, Graph):
                ids += _array_ids(value)
            elif hasattr(value, "__array_interface__"):
                ids.append(id(value))
    return tuple(ids)


def _rewrite_data(step) -> dict[str, Any]:
    d = step.data()
    d["diff"] = line_diff(step.before, step.after) if step.before is not None and step.after is not None else None
    return d


def source_lines(report: Report, path: Path, context: int = 2) -> dict[str, dict[str, Any]]:
    """``loc`` -> the user's source lines around it, for every ``file.py:N`` location in the record."""
    locs: set[str] = set()
    for rec in report.passes:
        _collect_locs(rec.graph, locs)
        locs.update(r.loc for r in rec.rewrites if r.loc)
    out: dict[str, dict[str, Any]] = {}
    cache: dict[str, list[str] | None] = {}
    for loc in sorted(locs):
        name, _, line = loc.rpartition(":")
        if not line.isdigit():
            continue
        file = path if path.name == name else path.parent / name
        if name not in cache:
            cache[name] = file.read_text(encoding="utf-8", errors="replace").splitlines() if file.is_file() else None
        lines = cache[name]
        if lines is None:
            continue
        n = int(line)
        lo, hi = max(1, n - context), min(len(lines), n + context)
        out[loc] = {"file": str(file), "line": n, "first": lo, "lines": lines[lo - 1:hi]}
    return out


def _collect_locs(graph: Graph, locs: set[str]) -> None:
    for node in graph.nodes:
        if node.loc:
            locs.add(node.loc)
        body = node.attrs.get("body")
        if isinstance(body, Graph):
            _collect_locs(body, locs)


def _progress(total: int):
    """A tqdm bar on stderr, quiet when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(total=total, desc="passes", unit="pass", leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty())
