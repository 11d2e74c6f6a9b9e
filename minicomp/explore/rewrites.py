"""Watching the rewrite driver: one record per pattern that fired, with the graph before and after.

``passes/rewrite.py`` has no observer hook, so :class:`RewriteRecorder` wraps the
driver's one per-pattern entry point (``minicomp.passes.rewrite._try``, which runs one
pattern on one node and checks its contract) for as long as the ``with`` block lasts,
and puts it back after. Every call still goes through the original function; the
recorder only looks at the graph when a pattern reports a rewrite, so patterns that
decline cost one extra Python call each.

The graph text before a rewrite is the text after the previous one, unless the graph
changed in between outside the patterns (the driver removes dead nodes after each
sweep): then it is printed afresh. Past :data:`MAX_STEPS` rewrites in one pass the
texts are no longer kept (the pattern and node still are), to bound the page size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minicomp.ir.graph import Graph, Node
from minicomp.ir.printer import print_graph

#: Rewrites per pass whose before/after texts are kept.
MAX_STEPS = 200


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

    def data(self) -> dict[str, Any]:
        """The JSON-ready form (the texts go to the page as a diff, see :mod:`minicomp.explore.record`)."""
        return {"pattern": self.pattern, "node": self.node, "matched": self.matched, "added": self.added,
                "loc": self.loc}


@dataclass
class _Watch:
    """What the recorder knows about one graph being rewritten."""

    known: dict[int, Node] = field(default_factory=dict)  # id -> node (held, so ids are not reused)
    count: int = -1
    text: str | None = None


class RewriteRecorder:
    """Context manager recording every rewrite the greedy driver makes (see the module docstring)."""

    def __init__(self) -> None:
        self.steps: list[RewriteStep] = []
        self._watch: dict[int, tuple[Graph, _Watch]] = {}
        self._orig: Any = None
        #: Why individual rewrites cannot be watched (None when they can); shown on the page.
        self.unavailable: str | None = None

    def take(self) -> list[RewriteStep]:
        """The steps recorded since the last call (one pass's worth)."""
        steps, self.steps = self.steps, []
        self._watch.clear()
        return steps

    def __enter__(self) -> "RewriteRecorder":
        from minicomp.passes import rewrite
        self._orig = getattr(rewrite, "_try", None)
        if self._orig is None:
            self.unavailable = "minicomp.passes.rewrite has no _try to watch: rewrites are shown per pass only"
            return self
        rewrite._try = self._wrapped
        return self

    def __exit__(self, *exc: object) -> None:
        from minicomp.passes import rewrite
        if self._orig is not None:
            rewrite._try = self._orig
        self._watch.clear()

    def _wrapped(self, pattern, node: Node, rw) -> bool:
        graph = rw.graph
        entry = self._watch.get(id(graph))
        if entry is None or entry[0] is not graph:
            entry = (graph, _Watch())
            self._watch[id(graph)] = entry
        watch = entry[1]
        if watch.count != len(graph.nodes):  # changed outside the patterns (dead nodes removed): look again
            watch.known = {id(n): n for n in graph.nodes}
            watch.count = len(graph.nodes)
            watch.text = None
        keep_text = len(self.steps) < MAX_STEPS
        if keep_text and watch.text is None:
            watch.text = _text(graph)
        fired = self._orig(pattern, node, rw)
        if fired:
            self._record(pattern, node, graph, watch, keep_text)
        return fired

    def _record(self, pattern, node: Node, graph: Graph, watch: _Watch, keep_text: bool) -> None:
        from minicomp.passes.rewrite import pattern_name
        added = [n for n in graph.nodes if id(n) not in watch.known]
        after = _text(graph) if keep_text else None
        self.steps.append(RewriteStep(
            pattern=pattern_name(pattern), node=_describe(node),
            matched=[r.name for r in node.results], added=[r.name for n in added for r in n.results],
            loc=node.loc, before=watch.text if keep_text else None, after=after))
        watch.known.update((id(n), n) for n in added)
        watch.count = len(graph.nodes)
        watch.text = after


def _describe(node: Node) -> str:
    res = ", ".join(f"%{r.name}" for r in node.results)
    return f"{res} = {node.op} {', '.join('%' + o.name for o in node.operands)}".strip()


def _text(graph: Graph) -> str:
    return print_graph(graph, elide_constants=True)
