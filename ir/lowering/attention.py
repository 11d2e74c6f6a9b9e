"""The attention template: ``softmax(score(q @ k)) @ v`` as one :class:`AttentionKernel`.

A group lowers to it when it holds exactly two ``matmul`` nodes and one ``softmax``
(what the ``fuse-attention`` pass builds): the first product's result reaches the
softmax through pointwise ops only (the score: a scale, a mask), the softmax runs
along the last dim, and its result is the second product's left operand itself.
Q, K^T and V are read through their views' strides, as every contraction's
operands are; ops after the second product are its epilogue. Anything else raises
:class:`CannotFuse`, so the caller splits the group into one kernel per op.
"""
from __future__ import annotations

from collections.abc import Sequence

from minicomp.ir.graph import Node, Value
from minicomp.ir.kernel import AttentionKernel, Buffer, E, Ref, Store, Var
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.lowering.builder import CannotFuse
from minicomp.ir.lowering.contractions import acc_dtype, batched_accesses
from minicomp.ir.ops import Role, get_op


def matches(nodes: Sequence[Node]) -> bool:
    """The group has the attention template's ops: two matmuls and one softmax (other reductions: no).

    A template for one specific combination of ops, so it names them (by OpDef identity)."""
    matmul, softmax = get_op("matmul"), get_op("softmax")
    reds = [n for n in nodes if n.opdef.role is Role.REDUCTION]
    mms = [n for n in nodes if n.opdef.role is Role.CONTRACTION]
    return len(mms) == 2 and all(n.opdef is matmul for n in mms) and [n.opdef for n in reds] == [softmax]


def _reads(v: Value, target: Value, canon) -> bool:
    """``v`` is computed from ``target`` (searching producers through the group)."""
    seen, todo = set(), [canon(v)]
    while todo:
        x = todo.pop()
        if x is target:
            return True
        if id(x) in seen or x.producer is None:
            continue
        seen.add(id(x))
        todo.extend(canon(o) for o in x.producer.operands)
    return False


def attention_kernel(b, name: str, nodes: Sequence[Node], outputs: Sequence[Value],
                     out_bufs: tuple[Buffer, ...]) -> AttentionKernel:
    """The AttentionKernel of ``nodes`` (see the module docstring) built with builder ``b``."""
    mm1, mm2 = [n for n in nodes if n.opdef.role is Role.CONTRACTION]
    sm = next(n for n in nodes if n.opdef.role is Role.REDUCTION)
    s_val, p_val = mm1.results[0], sm.results[0]
    if b.canon(mm2.operands[0]) is not p_val:
        raise CannotFuse("attention: the softmax result is not the second product's left operand")
    if not _reads(sm.operands[0], s_val, b.canon):
        raise CannotFuse("attention: the softmax does not read the first product")
    q, kt, v = mm1.operands[0], mm1.operands[1], mm2.operands[1]
    if min(q.type.rank, kt.type.rank, v.type.rank) < 2:
        raise CannotFuse("attention: 1-d operands")
    *batch, m, d = q.type.shape
    n, e = kt.type.shape[-1], v.type.shape[-1]
    batch = tuple(batch)
    if (kt.type.shape != (*batch, d, n) or v.type.shape != (*batch, n, e)
            or s_val.type.shape != (*batch, m, n) or p_val.type.shape != (*batch, m, n)):
        raise CannotFuse("attention: operands of different batch shapes (broadcasting)")
    if sm.attrs["dim"] % len(p_val.type.shape) != len(p_val.type.shape) - 1:
        raise CannotFuse("attention: softmax along another dim than the last")
    out = mm2.results[0]
    if any(o.type.shape != out.type.shape for o in outputs):
        raise CannotFuse("attention: an output has another shape than the second product")
    acc = acc_dtype(out.type.dtype)
    pair = lambda nb: [Var(nb), Var(nb + 1)]  # noqa: E731 - (row, column) loops after the batch loops
    (aq, ak, av), bexpr, bext = batched_accesses(
        b, batch, [(q, batch, pair, (m, d)), (kt, batch, pair, (d, n)), (v, batch, pair, (n, e))])
    nb = len(bext)
    index = [*bexpr, Var(nb), Var(nb + 1)]

    def at_point(value: Value, space: tuple[int, ...]):
        def read(idx):
            for got, want in zip(idx, index):
                if ix.simplify(got, space) != ix.simplify(want, space):
                    raise CannotFuse(f"attention: %{value.name} is read at another point than its own")
            return Ref(0, acc)
        return read

    b.extents = (*bext, m, n)
    b.reduced[id(s_val)] = at_point(s_val, b.extents)
    score = E.cast(b.expr(sm.operands[0], index), acc)
    del b.reduced[id(s_val)]
    b.extents = (*bext, m, e)
    b.reduced[id(out)] = at_point(out, b.extents)
    stores = []
    for i, o in enumerate(outputs):
        flat = ix.simplify(ix.flat_index(index, o.type.strides, o.type.shape), b.extents)
        stores.append(Store(i, flat, E.cast(b.expr(o, index), o.type.dtype)))
    return AttentionKernel(name, b.input_buffers(), out_bufs, bext, m, n, d, e, aq, ak, av, score, acc,
                           tuple(stores))
