"""The pass manager: a flat list of named graph-to-graph passes, run in order.

A :class:`Pass` is a small frozen dataclass with a ``name`` and
``run(graph, ctx)``. The :class:`PassManager` runs the list, verifies the graph
after every pass (``minicomp.ir.verifier.verify``), optionally dumps the IR of
each step into ``dump_dir/NN-passname.mcir``, and records per-pass statistics
(:class:`PassStats`). Decisions (what was fused, why something was not, which
buffer was reused) are recorded as data in the explicit :class:`PassContext`;
there is no global state besides the registry of pass *classes* filled at import.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from minicomp.ir.graph import Graph, Node
from minicomp.ir.ops import Role


@dataclass(frozen=True)
class Decision:
    """One recorded decision of a pass: ``what`` happened to ``subject`` and ``why``."""

    pass_name: str
    kind: str  # e.g. "fused", "unfused", "layout", "reuse", "inplace", "rewrite", "decompose"
    subject: str
    why: str

    def __str__(self) -> str:
        return f"[{self.pass_name}] {self.kind}: {self.subject} -- {self.why}"


@dataclass(frozen=True)
class PassStats:
    """What the graph looked like after one pass."""

    name: str
    seconds: float
    nodes: int
    kernels: int
    bytes_moved: int


@dataclass
class PassContext:
    """Options for the passes and the log of their decisions (passed explicitly, never global).

    ``options`` keys used by the built-in passes: ``target`` ("cpu"/"gpu"),
    ``decompose`` (dict op -> bool), ``fold_limit`` (max elements constant folding
    may create), ``fuse`` (bool), ``layout`` (bool), ``inplace`` (bool), ``channels_last``
    (True/False/"auto"), ``kn_weight`` (the backend's predicate for [k, n] linear weights,
    see :mod:`minicomp.passes.layout`).
    """

    options: dict[str, Any] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    stats: list[PassStats] = field(default_factory=list)
    current_pass: str = ""
    #: a :class:`~minicomp.passes.rewrite.RewriteListener` the built-in passes hand to
    #: ``apply_patterns``: told about every rewrite they make (None: nobody listens)
    listener: Any = None

    def record(self, kind: str, subject: str, why: str) -> None:
        """Log a decision of the running pass."""
        self.decisions.append(Decision(self.current_pass, kind, subject, why))

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class Pass:
    """A named graph transformation.

    ``run`` either mutates ``graph`` in place (through the Graph mutation API) and
    returns None, or returns a new graph. Guarantees every pass must keep: the
    result verifies, and it computes the same outputs as the input graph for every
    input (bit-exact unless the pass documents otherwise).
    """

    name: str = "pass"

    def run(self, graph: Graph, ctx: PassContext) -> Graph | None:  # pragma: no cover - abstract
        raise NotImplementedError


_PASSES: dict[str, Callable[[], Pass]] = {}


class UnknownPassError(KeyError, ValueError):
    """``get_pass`` of a name no pass is registered under (a KeyError and a ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_pass(name: str, factory: Callable[[], Pass] | None = None):
    """Register a pass factory by name (usable as a class decorator).

    Registering a different factory under a taken name is an error; re-running the
    same definition (same module and qualified name, e.g. a re-executed script) replaces it.
    """
    def deco(f):
        old = _PASSES.get(name)
        if old is not None and (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) != \
                (getattr(f, "__module__", None), getattr(f, "__qualname__", None)):
            raise ValueError(f"pass {name!r} registered twice")
        _PASSES[name] = f
        return f
    return deco(factory) if factory is not None else deco


def get_pass(name: str) -> Pass:
    """A fresh instance of the registered pass ``name``; clear error for unknown names."""
    _load_builtin()
    try:
        return _PASSES[name]()
    except KeyError:
        raise UnknownPassError(f"unknown pass {name!r}; known passes: {', '.join(sorted(_PASSES))}") from None


def pass_names() -> list[str]:
    _load_builtin()
    return sorted(_PASSES)


def _load_builtin() -> None:
    from minicomp.passes import attention, canonicalize, decompose, fusion, layout, memory  # noqa: F401


def default_pass_names(options: Mapping[str, Any] | None = None) -> list[str]:
    """The names of the standard pipeline's passes, in order (read the compiler's order here).

    ``options`` ``layout``, ``fuse`` and ``plan_memory`` (default True) leave out those passes."""
    options = options or {}
    names = ["dce", "cse", "canonicalize", "constant-fold", "decompose", "canonicalize", "cse", "dce"]
    if options.get("layout", True):
        names.append("layout")
    if options.get("fuse", True):
        names += ["fuse", "fuse-attention"]
    names.append("dce")
    if options.get("plan_memory", True):
        names.append("plan-memory")
    return names


def default_pipeline(target: str = "cpu", options: dict[str, Any] | None = None) -> list[Pass]:
    """The standard optimization pipeline, as a flat list of fresh pass objects."""
    return [get_pass(n) for n in default_pass_names(options)]


PassLike = Union[Pass, str]


@dataclass(frozen=True)
class Extend:
    """The default pipeline plus extra passes at named points: ``passes=Extend(after={"fuse": [MyPass()]})``.

    ``after[name]`` runs right after the *last* run of pass ``name`` in the default pipeline,
    ``before[name]`` right before its *first* run; ``at_end`` after every default pass. Each
    value is a list of pass names or Pass objects. Naming a pass the default pipeline does
    not run (with these options: ``fuse=False`` drops ``fuse``) is an error, never ignored.
    """

    after: Mapping[str, Sequence[PassLike]] = field(default_factory=dict)
    before: Mapping[str, Sequence[PassLike]] = field(default_factory=dict)
    at_end: Sequence[PassLike] = ()

    def resolve(self, options: Mapping[str, Any] | None = None) -> list[PassLike]:
        """The whole pass list: the default pipeline's names with the extra passes in place."""
        names = default_pass_names(options)
        for point in (*self.after, *self.before):
            if point not in names:
                raise UnknownPassError(f"Extend names pass {point!r}, which the default pipeline does not run "
                                       f"with these options; it runs: {', '.join(names)}")
        last = {n: i for i, n in enumerate(names)}
        out: list[PassLike] = []
        for i, n in enumerate(names):
            if names.index(n) == i:
                out.extend(self.before.get(n, ()))
            out.append(n)
            if last[n] == i:
                out.extend(self.after.get(n, ()))
        return out + list(self.at_end)


def build_pipeline(target: str, options: Mapping[str, Any] | None, passes: Any) -> list[Pass]:
    """The passes a compile runs: the default pipeline (``passes=None``), exactly the given list
    (a list of names and Pass objects replaces the pipeline), or an :class:`Extend` of the default."""
    if passes is None:
        return default_pipeline(target, dict(options or {}))
    if isinstance(passes, Extend):
        passes = passes.resolve(options)
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def verify_requested(option: bool | None = None) -> bool:
    """Whether to verify the IR after every pass: the ``verify`` option, or ``MINICOMP_VERIFY=1``
    in the environment (the test suite sets it). Another value of the variable is an error."""
    env = os.environ.get("MINICOMP_VERIFY", "")
    if env not in ("", "0", "1"):
        raise ValueError(f"MINICOMP_VERIFY={env!r}: expected 1 (verify after every pass) or 0")
    return bool(option) or env == "1"


# -- statistics ---------------------------------------------------------------------------
def is_view(node: Node) -> bool:
    """A view (the registry's role VIEW): no kernel, folded into its consumers' indexing."""
    return node.opdef.role is Role.VIEW


def is_kernel(node: Node) -> bool:
    """A node that becomes a kernel: a fused node or a non-view, non-constant compute node
    (the registry's ``Role.makes_kernel``, the rule the lowering follows too)."""
    return node.opdef.role.makes_kernel


def kernel_count(graph: Graph) -> int:
    return sum(1 for n in graph.nodes if is_kernel(n))


def bytes_moved(graph: Graph) -> int:
    """Estimated bytes a run moves: sum over kernels of operand bytes + result bytes."""
    return sum(sum(o.type.nbytes for o in n.operands) + sum(r.type.nbytes for r in n.results)
               for n in graph.nodes if is_kernel(n))


class PassManager:
    """Runs a flat list of passes, verifying, dumping and measuring after each."""

    def __init__(self, passes: Sequence[Pass | str], verify: bool = True, dump_dir: str | None = None,
                 print_after_all: bool = False, print_after: Iterable[str] = (), printer=print):
        self.passes = [get_pass(p) if isinstance(p, str) else p for p in passes]
        self.verify = verify
        self.dump_dir = dump_dir
        self.print_after_all = print_after_all
        self.print_after = set(print_after)
        self.printer = printer

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        """Run every pass on ``graph`` (mutated in place where passes allow) and return the result."""
        ctx = ctx if ctx is not None else PassContext()
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            self._dump(graph, 0, "input")
        for i, p in enumerate(self.passes, start=1):
            ctx.current_pass = p.name
            start = time.perf_counter()
            out = p.run(graph, ctx)
            graph = out if out is not None else graph
            elapsed = time.perf_counter() - start
            ctx.stats.append(PassStats(p.name, elapsed, len(graph.nodes), kernel_count(graph), bytes_moved(graph)))
            if self.verify:
                _verify(graph, p.name)
            if self.dump_dir:
                self._dump(graph, i, p.name)
            if self.print_after_all or p.name in self.print_after:
                self.printer(f"// ----- IR after {p.name} -----\n{_text(graph)}")
        ctx.current_pass = ""
        return graph

    def _dump(self, graph: Graph, index: int, name: str) -> None:
        path = os.path.join(self.dump_dir, f"{index:02d}-{name}.mcir")
        with open(path, "w") as f:
            f.write(_text(graph) + "\n")


def _text(graph: Graph) -> str:
    from minicomp.ir.printer import print_graph
    return print_graph(graph, elide_constants=True)


def _verify(graph: Graph, pass_name: str) -> None:
    from minicomp.ir.verifier import verify
    try:
        verify(graph)
    except Exception as e:
        raise type(e)(f"after pass '{pass_name}': {e}") if _reraisable(e) else e


def _reraisable(e: Exception) -> bool:
    try:
        type(e)("x")
        return True
    except Exception:
        return False


def stats_table(ctx: PassContext) -> str:
    """The per-pass statistics as an aligned text table."""
    rows = [f"{'pass':<16} {'ms':>8} {'nodes':>6} {'kernels':>7} {'bytes moved':>12}"]
    for s in ctx.stats:
        rows.append(f"{s.name:<16} {s.seconds * 1e3:8.2f} {s.nodes:6d} {s.kernels:7d} {s.bytes_moved:12d}")
    return "\n".join(rows)
