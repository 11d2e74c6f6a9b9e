"""Kernel fusion (XLA style): groups of nodes become one ``fused`` node each.

Decided on the graph and visible in the IR. A fused node has attributes
``kind`` (one of ``pointwise``, ``reduction``, ``matmul``, ``conv``, ``pool``,
``copy``) and ``body``, a :class:`~minicomp.ir.graph.Graph` whose inputs are the
node's operands (same order and types) and whose outputs are its results.

Body shapes (what ``minicomp.ir.lowering`` turns into one kernel):

* ``pointwise``: elementwise ops and view ops only; the outputs have one shape
  (the iteration space is the first output's shape).
* ``reduction``: exactly one reduction-category op (the *root*), elementwise/view
  producers on its input side, elementwise consumers (epilogue) whose shape is
  the root's result shape. Outputs: the last epilogue value and, when used
  outside, the root's result.
* ``matmul`` / ``conv`` / ``pool``: exactly one contraction root (an op of role
  CONTRACTION; the kind is its OpDef's ``kernel_kind``) whose operands are body inputs,
  possibly through view ops; elementwise epilogue ops of the root's result
  shape (bias, activation, scale, residual add); elementwise values the epilogue
  reads may be recomputed inside. Outputs: as for reductions.
* ``copy``: view ops then one ``copy`` op (only made when a graph output is a view).

Operands of fused nodes are never view results: view chains feeding a body are
copied into it (views are free, so a view may appear in several bodies). Every
fusible compute node ends up in exactly one fused node, or is recomputed inside
the bodies of all its consumers (cheap elementwise producers only) and dropped.
Legality: the group graph must stay a DAG (checked for every merge, by searching with
networkx for a path from the grown group back to itself).
What each op is for fusion is its registry entry's ``role`` (:class:`minicomp.ir.ops.Role`);
ops whose OpDef says ``fuses=False`` (cat, embedding, cumsum) stay plain nodes, as do
opaque ones. Before a group becomes a fused node, the lowering is asked whether its body
is one kernel (:func:`minicomp.ir.lowering.lower_node`); a group it would split is left
unfused, so the lowering never splits what fusion formed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from minicomp.ir.graph import Graph, Node, Value, view_source
from minicomp.ir.lowering import body_problem
from minicomp.ir.ops import Role
from minicomp.passes.canonicalize import remove_dead
from minicomp.passes.manager import Pass, PassContext, register_pass

#: The fused-node kind a group rooted at an op of each role makes (contractions: their OpDef's kernel_kind).
_GROUP_KIND = {Role.ELEMENTWISE: "pointwise", Role.REDUCTION: "reduction", Role.COPY: "copy"}
# Group verdicts and node states of the algorithm below.
OWN, DUP = "own", "dup"
PLAIN, DEAD = "plain", "dead"


def role(node: Node) -> Role:
    """How fusion sees ``node``: its registry role, OPAQUE for an op whose OpDef says it never fuses."""
    op = node.opdef
    return op.role if op.fuses else Role.OPAQUE


def _group_kind(node: Node) -> str:
    return _GROUP_KIND.get(role(node)) or node.opdef.kernel_kind


@dataclass(eq=False)
class Group:
    """A kernel being formed: ``owned`` nodes are computed here for everyone, ``dups`` privately."""

    anchor: Node
    kind: str
    root: Node | None = None
    owned: list[Node] = field(default_factory=list)
    dups: list[Node] = field(default_factory=list)
    members: set[int] = field(default_factory=set)  # ids of owned + dups; kept in sync by _Fuser

    def holds(self, node: Node) -> bool:
        return id(node) in self.members

    def sync(self) -> None:
        """Recompute ``members`` after ``owned``/``dups`` were replaced wholesale."""
        self.members = {id(n) for n in self.owned} | {id(n) for n in self.dups}

    def reads_outside(self, user: Node) -> bool:
        """True when ``user`` (a member) reads its operands from outside (a contraction or copy root)."""
        return user is self.root and user.opdef.role in (Role.CONTRACTION, Role.COPY)

    def describe(self) -> str:
        ops = [n.op for n in reversed(self.owned)] + [n.op for n in reversed(self.dups)]
        return f"{self.kind}[%{self.anchor.results[0].name}: {'+'.join(ops)}]"


class _Fuser:
    def __init__(self, graph: Graph, ctx: PassContext):
        self.graph = graph
        self.ctx = ctx
        self.state: dict[int, object] = {}  # id(node) -> Group | "plain" | "dead"
        self.holders: dict[int, list[Group]] = {}
        self.groups: list[Group] = []
        self.rejected: dict[tuple[int, int], str] = {}
        self.inputs_cache: dict[int, set[int]] = {}  # id(group) -> _external_inputs(group)
        outs = {id(v) for v in graph.outputs}
        self.users: dict[int, list[Node]] = {}
        self.is_output: dict[int, bool] = {}
        for n in graph.nodes:
            if not role(n).makes_kernel:
                continue
            for o in n.operands:
                src, _ = view_source(o)
                if src.producer is not None:
                    lst = self.users.setdefault(id(src.producer), [])
                    if not any(u is n for u in lst):
                        lst.append(n)
            self.is_output[id(n)] = any(id(r) in outs for r in n.results)
        self.compute = [n for n in graph.nodes if role(n).makes_kernel]
        self.srcs: dict[int, list[Node]] = {}
        for n in self.compute:
            srcs = [view_source(o)[0].producer for o in n.operands]
            self.srcs[id(n)] = [p for p in srcs if p is not None and role(p) is not Role.CONSTANT]

    # -- bookkeeping ---------------------------------------------------------------------
    def needed(self, p: Node, exclude: Group | None = None) -> bool:
        """Is the original ``p`` read by anything other than ``exclude``'s private use?"""
        if self.is_output.get(id(p)):
            return True
        for u in self.users.get(id(p), []):
            st = self.state.get(id(u))
            if st is None or st == PLAIN:
                return True
            if isinstance(st, Group) and st is not exclude and (not st.holds(p) or st.reads_outside(u)):
                return True
            for h in self.holders.get(id(u), []):
                if (h is not exclude or h.reads_outside(u)) and (not h.holds(p) or h.reads_outside(u)):
                    return True
        return False

    def _add(self, g: Group, p: Node, owned: bool) -> None:
        (g.owned if owned else g.dups).append(p)
        g.members.add(id(p))
        self.inputs_cache.pop(id(g), None)
        self.holders.setdefault(id(p), []).append(g)
        if owned:
            self.state[id(p)] = g

    def _undo(self, g: Group, p: Node, owned: bool) -> None:
        (g.owned if owned else g.dups).pop()
        g.members.discard(id(p))  # (a node is never both owned and a dup of one group)
        self.inputs_cache.pop(id(g), None)
        self.holders[id(p)].pop()
        if owned:
            del self.state[id(p)]

    def acyclic(self, changed: Group) -> bool:
        """Is the graph of groups (unassigned compute nodes as singletons) still a DAG?

        Called after ``changed`` grew (a node added, or another group merged into it)
        on a graph that was a DAG before. Every edge such a change adds touches
        ``changed``, so the graph is a DAG exactly when no path leads from
        ``changed`` back to itself: only the part of the graph reachable from
        ``changed`` is visited, with its edges computed on demand.
        """
        stack: list[object] = [changed]
        seen = {id(changed)}
        while stack:
            for v in self._successors(stack.pop()):
                if v is changed:
                    return False
                if id(v) not in seen:
                    seen.add(id(v))
                    stack.append(v)
        return True

    def _vertex(self, n: Node) -> object:
        st = self.state.get(id(n))
        return st if isinstance(st, Group) else n

    def _successors(self, u: object):
        """Vertices (groups, or nodes in none) that read a value computed by vertex ``u``.

        A group reads the operands of its members from memory, except operands it
        computes itself (owned or recomputed), unless the member reads its operands
        from memory anyway (a contraction or copy root).
        """
        for p in (u.owned if isinstance(u, Group) else (u,)):
            for n in self.users.get(id(p), ()):
                st = self.state.get(id(n))
                if st == DEAD:
                    continue
                if isinstance(st, Group):
                    if st is not u and (not st.holds(p) or st.reads_outside(n)):
                        yield st
                elif n is not u:
                    yield n
                for h in self.holders.get(id(n), ()):
                    if h is not st and h is not u and (not h.holds(p) or h.reads_outside(n)):
                        yield h

    # -- the algorithm --------------------------------------------------------------------
    def run(self) -> list[Group]:
        for n in reversed(self.graph.nodes):
            r = role(n)
            if not r.makes_kernel or id(n) in self.state:
                continue
            if r is Role.OPAQUE:
                self.state[id(n)] = PLAIN
                continue
            if not self.needed(n):
                self.state[id(n)] = DEAD
                self.ctx.record("fused", f"%{n.results[0].name} ({n.op})", "recomputed inside every consumer kernel")
                continue
            g = Group(anchor=n, kind=_group_kind(n), root=None if r is Role.ELEMENTWISE else n)
            self._add(g, n, owned=True)
            self.groups.append(g)
            if r is not Role.COPY:
                self._grow(g)
            else:
                src = view_source(n.operands[0])[0].producer
                if src is not None:
                    self.rejected[(id(src), id(g))] = ("a graph output that is a view of a kernel result is "
                                                       "materialized by its own copy kernel")
        self._merge_siblings()
        return self.groups

    def _external_inputs(self, g: Group) -> set[int]:
        cached = self.inputs_cache.get(id(g))
        if cached is not None:
            return cached
        ins = set()
        for m in g.owned + g.dups:
            for o in m.operands:
                src, _ = view_source(o)
                if src.producer is None or not g.holds(src.producer):
                    ins.add(id(src))
        self.inputs_cache[id(g)] = ins
        return ins

    def _merge_siblings(self) -> None:
        """Sibling fusion: pointwise kernels of one shape that read a common input become one
        multi-output kernel (one pass over the shared input instead of two)."""
        merged = True
        while merged:
            merged = False
            pw = [g for g in self.groups if g.root is None]  # pointwise: no reduction/contraction root
            for i, a in enumerate(pw):
                for b in pw[i + 1:]:
                    if a.anchor.results[0].type.shape != b.anchor.results[0].type.shape:
                        continue
                    shared = self._external_inputs(a) & self._external_inputs(b)
                    if not shared or not self._try_merge(a, b):
                        continue
                    self.ctx.record("fused", f"{b.describe()} into {a.describe()}",
                                    "sibling kernels read the same input: one pass over it")
                    merged = True
                    break
                if merged:
                    break

    def _try_merge(self, a: Group, b: Group) -> bool:
        saved = (list(a.owned), list(a.dups), {k: list(v) for k, v in self.holders.items()}, dict(self.state),
                 set(a.members))
        for n in b.owned:
            a.owned.append(n)
            self.state[id(n)] = a
        a.sync()
        owned = {id(o) for o in a.owned}
        a.dups = [n for n in a.dups + [d for d in b.dups if not a.holds(d)] if id(n) not in owned]
        a.sync()
        self.inputs_cache.pop(id(a), None)
        for k, hs in self.holders.items():
            hs[:] = [a if h is b else h for h in hs]
            uniq = []
            for h in hs:
                if not any(u is h for u in uniq):
                    uniq.append(h)
            hs[:] = uniq
        self.groups.remove(b)
        if self.acyclic(a):
            self.inputs_cache.pop(id(b), None)
            return True
        a.owned, a.dups, self.holders, self.state, a.members = saved
        self.inputs_cache.pop(id(a), None)
        self.groups.append(b)
        return False

    def _grow(self, g: Group) -> None:
        work = [g.anchor]
        while work:
            m = work.pop()
            if g.reads_outside(m):
                for o in m.operands:
                    p = view_source(o)[0].producer
                    if p is not None and role(p) is not Role.CONSTANT:
                        self.rejected[(id(p), id(g))] = (
                            f"{p.op} -> {m.op}: a {g.kind} kernel reads its operands from memory "
                            f"(only views fold into its inputs)")
                continue
            for o in m.operands:
                src, chain = view_source(o)
                p = src.producer
                if p is None or role(p) is Role.CONSTANT or g.holds(p):
                    continue
                verdict = self._try(g, p, chain)
                if verdict == OWN:
                    work.append(p)
                elif verdict == DUP:
                    pass  # a recomputed producer reads its own operands from memory (no cascade)
                else:
                    self.rejected[(id(p), id(g))] = verdict

    def _cheap_to_recompute(self, p: Node) -> bool:
        """Cost model: one elementwise op whose operands are stored anyway (graph inputs, constants,
        results of reductions/contractions/opaque ops), with a bounded number of consumers."""
        if len(self.users.get(id(p), [])) > 8:
            return False
        for o in p.operands:
            q = view_source(o)[0].producer
            if q is not None and role(q) is Role.ELEMENTWISE:
                return False
        return True

    def _try(self, g: Group, p: Node, chain: list[Node]) -> str:
        r = role(p)
        st = self.state.get(id(p))
        if r in (Role.OPAQUE, Role.COPY):
            return f"{p.op} is not fusible"
        if isinstance(st, Group) and st is not g and r is not Role.ELEMENTWISE:
            return f"{p.op} already belongs to another kernel"
        if r is Role.ELEMENTWISE:
            if not self.needed(p, exclude=g) and st is None:
                mode = OWN
            elif not self._cheap_to_recompute(p):
                return (f"{p.op} has other consumers, and recomputing it here would need its elementwise "
                        f"operands in memory (or it has too many consumers)")
            else:
                mode = DUP  # cheap elementwise: recompute from operands that are in memory anyway
        else:
            what = r.value  # reduction or contraction
            if g.root is not None:
                root_role = g.root.opdef.role
                if root_role is Role.REDUCTION and r is Role.CONTRACTION:
                    return f"{p.op} -> {g.root.op}: a contraction cannot be the producer of a reduction"
                if r is Role.REDUCTION and root_role is Role.CONTRACTION:
                    return f"{p.op} -> {g.root.op}: a reduction cannot be an input of a contraction kernel"
                return f"{p.op} -> {g.root.op}: a kernel holds at most one reduction or contraction"
            if chain:
                return f"{p.op} -> {'/'.join(v.op for v in chain)}: a view between a {what} and its epilogue"
            shape = p.results[0].type.shape
            bad = [n for n in g.owned + g.dups if n.results[0].type.shape != shape]
            if bad:
                return (f"{p.op} -> {bad[0].op}: epilogue shape {list(bad[0].results[0].type.shape)} differs "
                        f"from the {what} result {list(shape)}")
            if st is not None:
                return f"{p.op} already belongs to another kernel"
            mode = OWN
        owned = mode == OWN
        self._add(g, p, owned)
        if r is not Role.ELEMENTWISE:
            g.root, g.kind = p, _group_kind(p)
        if (owned and r is Role.ELEMENTWISE) or self.acyclic(g):
            # (an elementwise producer all of whose readers are in g adds no path out of g: no cycle)
            return mode
        self._undo(g, p, owned)
        if r is not Role.ELEMENTWISE:
            g.root, g.kind = None, _GROUP_KIND[Role.ELEMENTWISE]
        return f"fusing {p.op} into {g.describe()} would create a cycle between kernels"


def _build_body(graph: Graph, g: Group, needed) -> tuple[Graph, list[Value], list[Value]]:
    """The body graph of ``g``, the fused node's operands, and the original values it outputs."""
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    members = sorted(g.owned + g.dups, key=lambda n: pos[id(n)])
    body = Graph(f"{g.kind}_{g.anchor.results[0].name}")
    operands: list[Value] = []
    cache: dict[tuple[int, bool], Value] = {}
    local: dict[int, Value] = {}

    def get(value: Value, external: bool) -> Value:
        key = (id(value), external)
        if key in cache:
            return cache[key]
        p = value.producer
        if p is not None and p.opdef.role is Role.VIEW:
            src = get(p.operands[0], external)
            nv = body.add(p.op, [src], dict(p.attrs), types=[r.type for r in p.results],
                          names=[r.name for r in p.results])
            for r, b in zip(p.results, nv.results):
                cache[(id(r), external)] = b
            return cache[key]
        if not external and id(value) in local:
            return local[id(value)]
        out = body.add_input(value.type, value.name)
        operands.append(value)
        cache[key] = out
        return out

    for m in members:
        ext = g.reads_outside(m)
        ins = [get(o, ext) for o in m.operands]
        nn = body.add(m.op, ins, dict(m.attrs), types=[r.type for r in m.results],
                      names=[r.name for r in m.results], loc=m.loc)
        for r, b in zip(m.results, nn.results):
            local[id(r)] = b
    outs: list[Value] = []
    order = [g.anchor] + [n for n in g.owned if n is not g.anchor]
    for m in order:
        if m is g.anchor or needed(m):
            outs.extend(m.results)
    body.set_outputs([local[id(v)] for v in outs])
    return body, operands, outs


@register_pass("fuse")
@dataclass(frozen=True)
class Fuse(Pass):
    """Rewrites the graph into fused kernel nodes (see the module docstring for body shapes).

    Post-conditions: every remaining non-view, non-constant node is a ``fused`` node
    or an op fusion never handles; the graph computes the same values; decisions
    (fused groups, and why each pair of adjacent kernels stayed apart) are in ``ctx``.
    """

    name: str = "fuse"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        _materialize_view_outputs(graph)
        fuser = _Fuser(graph, ctx)
        groups = fuser.run()
        built = []
        for g in groups:
            body, operands, outs = _build_body(graph, g, lambda n, g=g: fuser.needed(n, exclude=None) and
                                               fuser.state.get(id(n)) is g)
            why = body_problem(body)
            if why is not None:  # the lowering would split it: its ops stay separate kernels
                ctx.record("unfused", g.describe(), f"the lowering cannot make one kernel of it: {why}")
                continue
            node = graph.add("fused", operands, {"kind": g.kind, "body": body}, types=[v.type for v in outs],
                             names=[v.name + "_f" for v in outs], loc=g.anchor.loc)
            built.append((g, node, outs, operands))
            ctx.record("fused", g.describe(), _why(g))
        for g, node, outs, _ in built:
            for old, new in zip(outs, node.results):
                graph.replace_uses(old, new)
        _explain_edges(fuser, built, ctx)
        graph.toposort()
        remove_dead(graph)


def _why(g: Group) -> str:
    epi = [n.op for n in g.owned + g.dups if n is not g.root and g.root is not None]
    if g.root is None:
        return f"{len(g.owned) + len(g.dups)} elementwise ops in one pass over memory"
    text = f"root {g.root.op}"
    if epi:
        text += f" with {'+'.join(epi)} fused in"
    if g.dups:
        text += f" ({len(g.dups)} cheap ops recomputed)"
    return text


def _explain_edges(fuser: _Fuser, built, ctx: PassContext) -> None:
    """Record, for each pair of adjacent kernels left apart, why they were not fused."""
    by_value = {}
    for g, node, outs, _ in built:
        for v in outs:
            by_value[id(v)] = g
    for g, node, outs, operands in built:
        for v in operands:
            pg = by_value.get(id(v))
            if pg is None or pg is g:
                continue
            reason = fuser.rejected.get((id(v.producer), id(g)))
            if reason is None:
                reason = f"{v.producer.op} is computed once by {pg.describe()} for several consumers"
            ctx.record("unfused", f"{pg.describe()} -> {g.describe()}", reason)


def _materialize_view_outputs(graph: Graph) -> None:
    """A graph output that is a view result gets an explicit ``copy`` (a "copy" kernel)."""
    outs = []
    for v in graph.outputs:
        if v.producer is not None and v.producer.opdef.role is Role.VIEW:
            v = graph.add("copy", [v]).result
        outs.append(v)
    graph.set_outputs(outs)
