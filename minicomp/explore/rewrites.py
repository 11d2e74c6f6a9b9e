"""Watching the rewrite driver: one record per pattern that fired, with the graph before and after.

:class:`RewriteRecorder` is a :class:`~minicomp.passes.rewrite.RewriteListener`: the explorer
hands it to ``minicomp.driver.run_passes(..., listener=)``, which puts it in the pass context
(``ctx.listener``); the built-in pattern passes (canonicalize, layout) hand ``ctx.listener`` to
``apply_patterns``, which calls :meth:`RewriteRecorder.on_rewrite` right after each rewrite. A
user's pattern pass shows its individual rewrites when it does the same
(``apply_patterns(graph, patterns, listener=ctx.listener)``); one that leaves the listener out
is shown per pass only (its diff against the previous pass), with no rewrite list.

The listener is told *after* a rewrite, so the graph text before it is what the recorder
printed after the previous rewrite (or, for the first one, the pass's input graph, see
:meth:`RewriteRecorder.start`). Between two rewrites the driver may remove dead nodes (after
each sweep); the recorder sees which of the nodes it knew are gone and drops their lines from
that text, which is then exactly the graph the pattern saw. Any other change between two
rewrites (a pass editing the graph between two ``apply_patterns`` calls, or a pass rewriting a
graph of its own) cannot be seen from the listener: that rewrite is recorded without the
texts, and the page says "graph before not known". Past :data:`MAX_STEPS` rewrites in one
pass the texts are no longer kept (the pattern and node still are), to bound the page size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minicomp.ir.graph import Graph, Node
from minicomp.ir.printer import print_graph
from minicomp.passes.rewrite import RewriteListener, RewritePattern, pattern_name

#: Rewrites per pass whose before/after texts are kept.
MAX_STEPS = 200
NOT_KEPT = f"graph text not kept past the first {MAX_STEPS} rewrites of a pass"
NOT_KNOWN = "graph before not known: the pass changed it outside the rewrite driver"


@dataclass
class RewriteStep:
    """One rewrite: ``pattern`` fired on ``node`` (its result names), adding ``added`` nodes."""

    pattern: str
    node: str
    matched: list[str]
    added: list[str]
    loc: str | None
    before: str | None
    after: str | None
    #: Why the texts are missing (None when they are kept); shown on the page instead of the diff.
    missing: str | None = None

    def data(self) -> dict[str, Any]:
        """The JSON-ready form (the texts go to the page as a diff, see :mod:`minicomp.explore.record`)."""
        return {"pattern": self.pattern, "node": self.node, "matched": self.matched, "added": self.added,
                "loc": self.loc, "missing": self.missing}


@dataclass
class _Snapshot:
    """A graph as the recorder last printed it: its nodes (held, so ids are not reused), in order,
    and its text cut into the header, one chunk of lines per node, and the closing lines."""

    nodes: list[Node]
    head: str
    chunks: list[str] | None  # None: the text could not be cut per node (only exact reuse possible)
    tail: list[str]
    text: str


class RewriteRecorder(RewriteListener):
    """Records every rewrite the greedy driver reports (see the module docstring)."""

    def __init__(self) -> None:
        self.steps: list[RewriteStep] = []
        self._snap: dict[int, tuple[Graph, _Snapshot]] = {}

    def start(self, graph: Graph) -> None:
        """Remember ``graph`` as it is before a pass runs on it (the first rewrite's "before")."""
        self._snap = {id(graph): (graph, _snapshot(graph))}

    def take(self) -> list[RewriteStep]:
        """The steps recorded since the last call (one pass's worth)."""
        steps, self.steps = self.steps, []
        self._snap.clear()
        return steps

    def on_rewrite(self, pattern: RewritePattern, node: Node, added: list[Node], graph: Graph) -> None:
        """Record one rewrite: the graph before it (from the last snapshot) and after it (printed now)."""
        keep_text = len(self.steps) < MAX_STEPS
        before = self._before(graph, added) if keep_text else None
        after = None
        if keep_text:
            snap = _snapshot(graph)
            self._snap[id(graph)] = (graph, snap)
            after = snap.text
        else:
            self._snap.pop(id(graph), None)
        missing = None if before is not None else NOT_KEPT if not keep_text else NOT_KNOWN
        self.steps.append(RewriteStep(
            pattern=pattern_name(pattern), node=_describe(node), matched=[r.name for r in node.results],
            added=[r.name for n in added for r in n.results], loc=node.loc,
            before=before, after=after if before is not None else None, missing=missing))

    def _before(self, graph: Graph, added: list[Node]) -> str | None:
        """The text of ``graph`` just before the rewrite that added ``added``, or None if unknown."""
        entry = self._snap.get(id(graph))
        if entry is None or entry[0] is not graph:
            return None
        snap = entry[1]
        new = {id(n) for n in added}
        now = [id(n) for n in graph.nodes if id(n) not in new]
        known = [id(n) for n in snap.nodes]
        if now == known:
            return snap.text
        alive = set(now)
        kept = [i for i in known if i in alive]
        if kept != now or snap.chunks is None:  # not only removals: changed outside the driver's view
            return None
        lines = [snap.head] + [c for n, c in zip(snap.nodes, snap.chunks) if id(n) in alive] + snap.tail
        return "\n".join(lines)


def _snapshot(graph: Graph) -> _Snapshot:
    """Print ``graph`` and cut the text per node: a top-level node's line is indented by exactly two
    spaces; the lines of a nested body (deeper, or its closing ``  }``) belong to the node above."""
    text = _text(graph)
    lines = text.split("\n")
    head, body, tail = lines[0], lines[1:-2], lines[-2:]
    chunks: list[list[str]] = []
    for ln in body:
        if ln.startswith("  ") and ln[2:3] not in (" ", "}", ""):
            chunks.append([ln])
        elif chunks:
            chunks[-1].append(ln)
        else:
            chunks = []
            break
    ok = len(chunks) == len(graph.nodes)
    return _Snapshot(list(graph.nodes), head, ["\n".join(c) for c in chunks] if ok else None, tail, text)


def _describe(node: Node) -> str:
    res = ", ".join(f"%{r.name}" for r in node.results)
    return f"{res} = {node.op} {', '.join('%' + o.name for o in node.operands)}".strip()


def _text(graph: Graph) -> str:
    return print_graph(graph, elide_constants=True)
