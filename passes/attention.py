"""Attention fusion: ``softmax(score(q @ k)) @ v`` as one ``fused`` node of kind ``attention``.

After ``fuse``, spelled-out attention is three kernels: the scores ``q @ k^T`` (a matmul
kernel), the score ops and the softmax (a reduction kernel), and ``@ v`` (a matmul kernel
with its epilogue). Each writes and reads a [batch, m, n] tensor that nothing else uses.
This pass merges such a chain into one node whose body holds all three bodies, so the
backend computes each block of rows of P in its own scratch memory and never stores it
(as FlashAttention does, here with the whole row of scores at once).

It applies where the backend has the kernel: option ``attention_kernel``, a predicate
``(m, n, d, e, dtype) -> bool`` (queries, keys, q/k dim, v dim) the driver takes from the
target's backend. Without it (``minicomp opt``, the interpreter target) the pass changes nothing.

Matched chain (every link the only use of the value it reads):

* a ``matmul`` fused node whose root is ``matmul`` (any epilogue), result [*B, m, n];
* a ``reduction`` fused node whose root is ``softmax`` along the last dim, reading that
  result (of the softmax's own shape: no broadcast) through pointwise ops (the score: scale,
  mask, even one computed by another product); output: the softmax only;
* a ``matmul`` fused node whose root ``matmul`` takes the softmax result itself as its
  left operand, right operand V [*B, n, e] (any epilogue).

Guarantees: the graph computes the same values (the bodies are copied unchanged, the
node's outputs are the last kernel's); each merge is recorded with its shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

from minicomp.ir.graph import Graph, Node, Value
from minicomp.passes.canonicalize import remove_dead
from minicomp.ir.lowering import body_problem
from minicomp.ir.ops import Role
from minicomp.passes.manager import Pass, PassContext, register_pass


def _root(node: Node, kind: str, op: str) -> Node | None:
    """The single ``op`` node of fused ``node``'s body when the node is of ``kind``.

    A pattern over specific ops (the attention template is matmul, softmax, matmul), so it
    names them; what an op *is* (view, elementwise) is asked of the registry."""
    if not node.opdef.has_body or node.attrs["kind"] != kind:
        return None
    found = [n for n in node.attrs["body"].nodes if n.op == op]
    return found[0] if len(found) == 1 else None


def _fused_producer(v: Value) -> Node | None:
    p = v.producer
    return p if p is not None and p.opdef.has_body and len(p.results) == 1 else None


def _body_input_index(body: Graph, v: Value) -> int | None:
    return next((i for i, x in enumerate(body.inputs) if x is v), None)


def _only_use(graph: Graph, v: Value, user: Node) -> bool:
    return all(n is user for n in graph.uses(v)) and all(o is not v for o in graph.outputs)


def _match(graph: Graph, f3: Node) -> tuple[Node, Node, Node, Node] | None:
    """(f1, f2, mm1, mm2) when fused node ``f3`` ends an attention chain (see the module docstring):
    the first two fused nodes of the chain and the two products in their bodies."""
    mm2 = _root(f3, "matmul", "matmul")
    if mm2 is None or mm2.operands[0].producer is not None:
        return None  # the left operand must be a body input itself (no view)
    i3 = _body_input_index(f3.attrs["body"], mm2.operands[0])
    f2 = _fused_producer(f3.operands[i3])
    sm = _root(f2, "reduction", "softmax") if f2 is not None else None
    if sm is None or f2.attrs["body"].outputs != [sm.results[0]] or not _only_use(graph, f2.results[0], f3):
        return None
    if sm.attrs["dim"] % sm.results[0].type.rank != sm.results[0].type.rank - 1:
        return None
    for n in f2.attrs["body"].nodes:  # the score: pointwise ops and views only
        if n is not sm and n.opdef.role not in (Role.VIEW, Role.ELEMENTWISE):
            return None
    scores = _ancestors(sm.operands[0])
    for inner, outer in zip(f2.attrs["body"].inputs, f2.operands):
        f1 = _fused_producer(outer)
        mm1 = _root(f1, "matmul", "matmul") if f1 is not None else None
        if (mm1 is not None and any(v is inner for v in scores)
                and outer.type.shape == sm.results[0].type.shape and _only_use(graph, outer, f2)):
            return f1, f2, mm1, mm2
    return None


def _ancestors(v: Value) -> list[Value]:
    """``v`` and every value it is computed from inside its graph."""
    out, todo, seen = [], [v], set()
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        out.append(x)
        if x.producer is not None:
            todo.extend(x.producer.operands)
    return out


def _sizes(mm1: Node, mm2: Node) -> tuple[int, int, int, int]:
    """(m, n, d, e): queries, keys, q/k columns, v columns."""
    q, kt = mm1.operands[0].type.shape, mm1.operands[1].type.shape
    return q[-2], kt[-1], q[-1], mm2.operands[1].type.shape[-1]


def _merged(f1: Node, f2: Node, f3: Node) -> tuple[Graph, list[Value]]:
    """One body computing f3's outputs from the three bodies, and the merged node's operands."""
    body = Graph(f"attention_{f3.results[0].name}")
    operands: list[Value] = []
    outer_to_inner: dict[int, Value] = {}
    produced = {id(f1.results[0]): None, id(f2.results[0]): None}

    def inline(node: Node) -> list[Value]:
        b: Graph = node.attrs["body"]
        local: dict[int, Value] = {}
        for inner, outer in zip(b.inputs, node.operands):
            if id(outer) in produced:
                local[id(inner)] = produced[id(outer)]
                continue
            if id(outer) not in outer_to_inner:
                outer_to_inner[id(outer)] = body.add_input(outer.type, inner.name)
                operands.append(outer)
            local[id(inner)] = outer_to_inner[id(outer)]
        for n in b.nodes:
            new = body.add(n.op, [local[id(o)] for o in n.operands], dict(n.attrs),
                           types=[r.type for r in n.results], names=[r.name for r in n.results], loc=n.loc)
            for r, nr in zip(n.results, new.results):
                local[id(r)] = nr
        return [local[id(o)] for o in b.outputs]

    produced[id(f1.results[0])] = inline(f1)[0]
    produced[id(f2.results[0])] = inline(f2)[0]
    body.set_outputs(inline(f3))
    return body, operands


@register_pass("fuse-attention")
@dataclass(frozen=True)
class FuseAttention(Pass):
    """Merge q @ k -> score + softmax -> @ v kernels into one ``attention`` node where the backend
    has the kernel (option ``attention_kernel``); see the module docstring."""

    name: str = "fuse-attention"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        fits = ctx.option("attention_kernel")
        if fits is None:
            return
        changed = False
        for f3 in list(graph.nodes):
            found = _match(graph, f3)
            if found is None:
                continue
            f1, f2, mm1, mm2 = found
            m, n, d, e = _sizes(mm1, mm2)
            dtype = mm2.results[0].type.dtype
            if any(v.type.dtype is not dtype for v in (*mm1.operands, mm1.results[0], mm2.operands[1])):
                continue
            if not fits(m, n, d, e, dtype):
                ctx.record("unfused", f"attention ending in %{f3.results[0].name}",
                           f"the backend has no attention kernel for m={m}, n={n}, d={d}, e={e}, {dtype.name}")
                continue
            body, operands = _merged(f1, f2, f3)
            why = body_problem(body)
            if why is not None:  # the lowering would split it into one kernel per op
                ctx.record("unfused", f"attention ending in %{f3.results[0].name}",
                           f"the attention template does not fit: {why}")
                continue
            names = [r.name.removesuffix("_f") + "_attn" for r in f3.results]
            node = graph.add("fused", operands, {"kind": "attention", "body": body},
                             types=[r.type for r in f3.results], names=names, before=f3, loc=f3.loc)
            for old, new in zip(f3.results, node.results):
                graph.replace_uses(old, new)
            ctx.record("fused", f"attention[%{node.results[0].name}: {m}x{n} scores, d={d}, e={e}]",
                       "q @ k, the score ops, softmax and @ v in one kernel: the scores and probabilities "
                       "stay in the kernel's scratch memory, never stored")
            changed = True
        if changed:
            graph.toposort()
            remove_dead(graph)
