"""Layout assignment: sink and cancel transposes, keep transposed matmul operands as views.

What it does (all exact rewrites):

* ``reshape(linear(reshape(x)))`` -> ``linear(reshape(x))`` and likewise for batched
  matmuls, when the outer reshape only splits batch dims (what frontends emit
  around every linear/bmm), so epilogues follow contractions directly.
* A matmul result read only through ``permute`` + merging ``reshape`` (attention's
  "merge heads") is stored in the permuted order (``TensorType.order``), so that
  view is contiguous and its consumer reads it with no copy kernel. Unflattening
  first (``[B*H, S, D]`` -> ``[B, H, S, D]``) is what makes this possible at batch > 1:
  an order is a permutation of whole dims and cannot interleave a merged dim.

* ``u(permute(x))`` for unary elementwise ``u`` becomes ``permute(u(x))``; a binary
  elementwise op of two permutes with the same dims becomes one permute of the op.
  Sinking moves transposes toward their consumers, where ``permute(permute(x))``
  composes and identity permutes disappear.
* A permute feeding a contraction is left as a view: fusion copies it into the
  kernel body, where it becomes the operand's access strides (never a copy).
* Constant linear weights ``W [n, k]`` are stored transposed (a constant ``W^T [k, n]`` read
  through ``permute``, which folds into the kernel's strides) where the backend says a
  product reads B faster along n (option ``kn_weight``, a predicate the driver takes from
  the CPU backend; without it, as for the GPU and ``minicomp opt``, weights keep their layout).
* Convolutions and pools: channels-last (NHWC, ``TensorType.order`` (0, 2, 3, 1))
  is assigned by option ``channels_last`` (True, False or "auto", the default).
  It is given to the results of conv/pool ops and propagated through elementwise
  ops, to every rank-4 value whose users are all convs/pools (as their input) or
  elementwise ops whose result is channels-last too, and that is not a graph
  output. Graph inputs, outputs and values read by views keep their layout, so no
  transposing copy appears: kernels read and write any layout through strides, a
  conv's epilogue stores its tile in the order assigned. "auto" keeps NCHW on both
  targets (the reason is recorded): the CPU conv is an implicit GEMM over a padded
  NCHW copy of its input that vectorizes along output width, measured no faster
  with NHWC activations (see :data:`CPU_REASON`).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import Role
from minicomp.passes.canonicalize import ComposeViews, NoOpView
from minicomp.passes.manager import Pass, PassContext, register_pass
from minicomp.passes.rewrite import RewritePattern, Rewriter, apply_patterns, defining

# The layout rewrites are patterns over specific ops (the permute/reshape algebra, the products'
# operand forms), so they name the ops they match (``ops``, ``defining``); whether an op is
# elementwise, a contraction or a constant is asked of the registry.
_PRODUCTS = ("matmul", "linear")  # the products whose operands and results the layout rewrites
_MATMUL_KERNEL = "matmul"  # the kernel_kind of contractions whose operands fold transposes into strides


def _elementwise(node: Node) -> bool:
    """One result computed by a scalar formula of its operands at the same index: a permute of
    every operand commutes with it (ops with an ``element`` rule, e.g. cat, index otherwise)."""
    return node.opdef.role is Role.ELEMENTWISE and node.opdef.scalar is not None and len(node.results) == 1


class SinkPermute(RewritePattern):
    """Move a permute below an elementwise op (unary, or binary with equally permuted operands)."""

    def __init__(self, ctx: PassContext | None = None):
        self.ctx = ctx

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if not _elementwise(node) or not node.operands:
            return False
        perms = [defining(o, "permute") for o in node.operands]
        if any(p is None for p in perms):
            return False
        dims = tuple(perms[0].attrs["dims"])
        if any(tuple(p.attrs["dims"]) != dims for p in perms):
            return False
        srcs = [p.operands[0] for p in perms]
        if len({s.type.shape for s in srcs}) != 1 or any(len(rw.graph.uses(p.result)) != 1 for p in perms):
            return False
        inner = rw.add(node.op, srcs, dict(node.attrs))
        rw.replace(node, [rw.add("permute", [inner.result], {"dims": dims}).result])
        if self.ctx is not None:
            self.ctx.record("layout", f"permute{list(dims)} sunk below {node.op}", "lets transposes meet and cancel")
        return True


def _refines(fine: tuple, coarse: tuple) -> bool:
    """Whether ``fine`` splits each dim of ``coarse`` into consecutive dims (a row-major split)."""
    i = 0
    for size in coarse:
        prod = 1
        while prod < size or (size == 1 and prod == 1 and i < len(fine) and fine[i] == 1):
            if i == len(fine):
                return False
            prod, i = prod * fine[i], i + 1
        if prod != size:
            return False
    return all(s == 1 for s in fine[i:])


class UnflattenContraction(RewritePattern):
    """``reshape(linear(x))`` -> ``linear(reshape(x))`` (same for batched matmul) when the outer
    reshape only splits the batch dims (M for linear), so the contraction produces its
    consumer's shape with no view in between.

    Frontends flatten ``[B, T, K]`` to ``[B*T, K]`` around every linear and
    ``[B, H, S, D]`` to ``[B*H, S, D]`` around every bmm; the batched op computes
    each output element with the same dot product. Each operand is re-split the same
    way (a reshape of the frontend's flattening reshape composes with it into one
    view of its source). Splitting dims of a view is a view, so no copy appears; the
    merge-heads permute that often follows a bmm can then be stored permuted.
    """

    def __init__(self, ctx: PassContext | None = None):
        self.ctx = ctx

    ops = ("reshape",)

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        c = node.operands[0].producer
        if c is None or c.op not in _PRODUCTS or len(rw.graph.uses(c.result)) != 1 \
                or any(o is c.result for o in rw.graph.outputs):
            return False
        out, old = tuple(node.result.type.shape), tuple(c.result.type.shape)
        shapes = self._operand_shapes(c, out, old)
        if shapes is None:
            return False
        new_ops = []
        for v, shape in zip(c.operands, shapes):
            if shape is not None and tuple(v.type.shape) != shape:
                if defining(v, "reshape") is not None:
                    v = v.producer.operands[0]
                if tuple(v.type.shape) != shape:
                    v = rw.add("reshape", [v], {"shape": shape}).result
            new_ops.append(v)
        res = rw.add(c.op, new_ops, dict(c.attrs)).result
        res.name = rw.graph.fresh_name(c.results[0].name)  # keeps the frontend's name readable in explain
        rw.replace(node, [res])
        if self.ctx is not None:
            self.ctx.record("layout", f"{c.op} %{c.results[0].name} unflattened to {list(out)} as %{res.name}",
                            "removes the reshapes between the contraction and its epilogue")
        return True

    @staticmethod
    def _operand_shapes(c: Node, out: tuple, old: tuple) -> list | None:
        """The new shape of each operand (None: kept as is), or None when the pattern does not apply."""
        a = c.operands[0]
        if c.operands[1].type.rank == 2:  # linear (its weight is always 2-d) or a matmul by a 2-d matrix
            if a.type.rank != 2 or len(old) != 2 or len(out) <= 2 or out[-1:] != old[-1:] \
                    or not _refines(out[:-1], old[:-1]):
                return None
            return [out[:-1] + tuple(a.type.shape[-1:])] + [None] * (len(c.operands) - 1)
        b = c.operands[1]
        if len(old) < 3 or len(out) <= len(old) or old[-2:] != out[-2:] or not _refines(out[:-2], old[:-2]) \
                or tuple(a.type.shape[:-2]) != old[:-2] or tuple(b.type.shape[:-2]) != old[:-2]:
            return None
        return [out[:-2] + tuple(a.type.shape[-2:]), out[:-2] + tuple(b.type.shape[-2:])]


def _user_is(u: Node | None, op: str) -> bool:
    return u is not None and u.op == op


def _single_user(graph: Graph, v) -> Node | None:
    users = graph.uses(v)
    if len(users) != 1 or any(o is v for o in graph.outputs):
        return None
    return users[0]


def _store_permuted(graph: Graph, node: Node, ctx: PassContext) -> None:
    """Give a matmul result the storage order that makes ``reshape(permute(.))`` of it contiguous.

    Pattern (multi-head attention's "merge heads"): ``y = matmul(..)``, optionally a
    reshape that only adds or drops size-1 dims, ``permute``, then a ``reshape`` that
    merges dims. Stored row-major, the merged dims would not be one stride apart and
    the consumer would need a copy; stored in the permuted order (``TensorType.order``)
    the kernel writes each element where the consumer reads it as a plain view.
    """
    v = node.results[0]
    u = _single_user(graph, v)
    dim_of = list(range(v.type.rank))  # current dim -> dim of v (None: a size-1 dim added by a reshape)
    if _user_is(u, "reshape"):
        src = [d for d in range(v.type.rank) if v.type.shape[d] != 1]
        out = u.result.type.shape
        if [v.type.shape[d] for d in src] != [s for s in out if s != 1]:
            return
        it = iter(src)
        dim_of = [next(it) if s != 1 else None for s in out]
        u = _single_user(graph, u.result)
    if not _user_is(u, "permute"):
        return
    if not _user_is(_single_user(graph, u.result), "reshape"):
        return
    dims = [dim_of[d] for d in u.attrs["dims"] if dim_of[d] is not None]
    order = [d for d in range(v.type.rank) if d not in dims and v.type.shape[d] == 1] + dims
    if sorted(order) != list(range(v.type.rank)) or order == list(range(v.type.rank)):
        return
    v.type = v.type.with_order(tuple(order))
    ctx.record("layout", f"%{v.name} stored in order {order}",
               "the permute+reshape that follows becomes a contiguous view (no copy before its consumer)")


def _store_weights_kn(graph: Graph, ctx: PassContext) -> None:
    """Give constant linear weights the [k, n] layout where ``ctx.option("kn_weight")`` asks for it.

    ``kn_weight(rows, m, n, k, dtype) -> bool`` is the backend's answer for a linear of
    ``rows`` output rows (``m`` in its last batch dim) reading ``W [n, k]``. The rewrite is
    ``linear(x, W, b)`` -> ``linear(x, permute(Wt, [1, 0]), b)`` with ``Wt = W^T`` a new
    constant (made once per weight): the same values, read as a view.
    """
    wants = ctx.option("kn_weight")
    if wants is None:
        return
    made: dict[int, Value] = {}
    for node in list(graph.nodes):
        if node.op != "linear":  # a rewrite of linear's own weight form ([n, k] -> [k, n] view)
            continue
        x, w = node.operands[0], node.operands[1]
        wp = w.producer
        if wp is None or wp.opdef.role is not Role.CONSTANT or w.type.rank != 2:
            continue
        n, k = w.type.shape
        shape = x.type.shape
        rows, m = prod(shape[:-1]), (shape[-2] if len(shape) >= 2 else 1)
        if not wants(rows, m, n, k, w.type.dtype):
            continue
        if id(w) not in made:  # before its first user: the graph stays topologically ordered
            value = np.ascontiguousarray(np.asarray(wp.attrs["value"]).T)
            value.setflags(write=False)
            wt = graph.add("constant", [], {"value": value, "dtype": wp.attrs["dtype"]}, names=[f"{w.name}_kn"],
                           before=node).result
            made[id(w)] = graph.add("permute", [wt], {"dims": [1, 0]}, before=node).result
        view = made[id(w)]
        node.operands = [x, view] + list(node.operands[2:])
        ctx.record("layout", f"weight %{w.name} of linear %{node.results[0].name} stored [k, n] as "
                   f"%{view.producer.operands[0].name}",
                   f"the backend reads B along n faster for this product ({rows} rows, n={n}, k={k})")


#: The NHWC dim order of a rank-4 NCHW tensor.
CHANNELS_LAST = (0, 2, 3, 1)
_SPATIAL = ("conv2d", "max_pool2d", "avg_pool2d")
CPU_REASON = ("the CPU conv reads its input into a padded NCHW copy and vectorizes along output width; "
              "NHWC activations make that copy and the epilogue stores strided (measured slower: a batch-2 "
              "conv-pool chain took 1.79 ms NHWC vs 1.60 ms NCHW); option channels_last=True forces NHWC")
GPU_REASON = "the Triton conv template addresses any layout by strides; NHWC is not tuned for it yet"


def _channels_last_values(graph: Graph) -> list:
    """The values that may be stored channels-last with no transposing copy (see the module doc)."""
    outputs = {id(v) for v in graph.outputs}
    cand = {}
    for n in graph.nodes:
        if (n.op in _SPATIAL or _elementwise(n)) and len(n.results) == 1:
            v = n.results[0]
            if v.type.rank == 4 and id(v) not in outputs and v.type.order is None:
                cand[id(v)] = v
    seeded = {id(n.results[0]) for n in graph.nodes if n.op in _SPATIAL and id(n.results[0]) in cand}
    for n in graph.nodes:  # elementwise values count only when they take a channels-last operand
        if _elementwise(n) and id(n.results[0]) in cand and any(id(o) in seeded for o in n.operands):
            seeded.add(id(n.results[0]))
    cand = {k: v for k, v in cand.items() if k in seeded}
    changed = True
    while changed:
        changed = False
        for key, v in list(cand.items()):
            for u in graph.uses(v):
                ok = (u.op in _SPATIAL and u.operands[0] is v and all(o is not v for o in u.operands[1:])) or \
                    (_elementwise(u) and id(u.results[0]) in cand)
                if not ok:
                    del cand[key]
                    changed = True
                    break
    return list(cand.values())


def _assign_channels_last(graph: Graph, ctx: PassContext) -> None:
    """Assign NHWC by the ``channels_last`` option and record the decision of every conv/pool."""
    spatial = [n for n in graph.nodes if n.op in _SPATIAL]
    if not spatial:
        return
    mode = ctx.option("channels_last", "auto")
    if mode not in (True, False, "auto"):
        raise ValueError(f"option channels_last must be True, False or 'auto', not {mode!r}")
    if mode is not True:
        why = "option channels_last=False" if mode is False else \
            GPU_REASON if ctx.option("target", "cpu") == "gpu" else CPU_REASON
        for n in spatial:
            ctx.record("layout", f"kept NCHW for {n.op} %{n.results[0].name}", why)
        return
    chosen = _channels_last_values(graph)
    for v in chosen:
        v.type = v.type.with_order(CHANNELS_LAST)
    ids = {id(v) for v in chosen}
    for n in spatial:
        v = n.results[0]
        if id(v) in ids:
            ctx.record("layout", f"channels-last (NHWC) for {n.op} %{v.name}",
                       "option channels_last=True; its users read NHWC through strides (no copy)")
        else:
            ctx.record("layout", f"kept NCHW for {n.op} %{v.name}",
                       "a graph output or read by a non-elementwise op / view: NHWC would need a copy")
    for v in chosen:
        p = v.producer
        if p is not None and p.op not in _SPATIAL:
            ctx.record("layout", f"channels-last propagated through {p.op} %{v.name}",
                       "elementwise between channels-last producers and consumers")


@register_pass("layout")
@dataclass(frozen=True)
class Layout(Pass):
    """Sinks and cancels transposes; records layout decisions for contractions.

    Guarantees: bit-identical outputs; no permute is turned into a copy.
    """

    name: str = "layout"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        apply_patterns(graph, [UnflattenContraction(ctx), SinkPermute(ctx), ComposeViews(), NoOpView()],
                       listener=ctx.listener)
        _store_weights_kn(graph, ctx)
        for n in graph.nodes:
            if n.op in _PRODUCTS:
                _store_permuted(graph, n, ctx)
        for n in graph.nodes:
            if n.opdef.kernel_kind == _MATMUL_KERNEL:  # matmul, linear, addmm
                for o in n.operands:
                    if defining(o, "permute") is not None:
                        ctx.record("layout", f"permute %{o.name} -> {n.op} %{n.results[0].name}",
                                   "transposed operand folded into the matmul's strides (a view, no copy)")
        _assign_channels_last(graph, ctx)
