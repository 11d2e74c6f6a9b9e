"""One group of nodes -> one kernel description.

:func:`lower_group` picks the template by the group's contents: a contraction
(matmul/conv/pool kernel with the rest as its epilogue), attention (two products around
a softmax, :mod:`.attention`), reductions sharing one
loop space (a LoopKernel with Reduce stages), or only elementwise and movement
ops (a pointwise LoopKernel, kind "copy" when it only moves data).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from minicomp.ir.graph import Node, Value
from minicomp.ir.kernel import (Buffer, ConvKernel, E, Kernel, LoopKernel, MatmulKernel, PoolKernel, Store,
                                Var, kernel_checks)
from minicomp.ir.lowering import attention, contractions, reductions
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.lowering.builder import CannotFuse, KernelBuilder, is_view
from minicomp.ir.ops import Category, Role

#: The kernel class of each contraction template kind (``Template.cls``, the OpDef's ``kernel_kind``).
_TEMPLATE_KERNELS = {"matmul": MatmulKernel, "conv": ConvKernel, "pool": PoolKernel}


def _kernel_name(index: int, nodes: Sequence[Node]) -> str:
    ops = [n.op for n in nodes if not is_view(n)] or [n.op for n in nodes] or ["copy"]
    return f"k{index}_" + "_".join(dict.fromkeys(ops))[:48]


def _store(b: KernelBuilder, buf: int, v: Value, idx: list, inner: bool = False) -> Store:
    flat = ix.simplify(ix.flat_index(idx, v.type.strides, v.type.shape), b.extents)
    return Store(buf, flat, E.cast(b.expr(v, idx), v.type.dtype), inner)


def _is_reduction(n: Node) -> bool:
    return n.opdef.role is Role.REDUCTION


def lower_group(nodes: Sequence[Node], outputs: Sequence[Value], canon: Callable[[Value], Value],
                materialized: Callable[[Value], bool], index: int = 0) -> tuple[Kernel, list[Value]]:
    """Lower ``nodes`` (in topological order) computing ``outputs``; returns the kernel and
    the values its input buffers hold, in order."""
    out_ids = {id(v) for v in outputs}
    b = KernelBuilder(nodes, canon, lambda v: id(v) not in out_ids and materialized(v))
    name = _kernel_name(index, nodes)
    out_bufs = tuple(Buffer(f"out{i}_{v.name}", v.type) for i, v in enumerate(outputs))
    contr = [n for n in nodes if n.opdef.role is Role.CONTRACTION]
    reds = [n for n in nodes if _is_reduction(n)]
    if attention.matches(nodes):
        return _without_checks(attention.attention_kernel(b, name, nodes, outputs, out_bufs)), b.inputs
    if len(contr) > 1 or (contr and reds):
        raise CannotFuse("more than one contraction/reduction template in one kernel")
    if contr:
        return _without_checks(_contraction_kernel(b, name, contr[0], outputs, out_bufs)), b.inputs
    if reds:
        return _reduction_kernel(b, name, reds, outputs, out_bufs), b.inputs
    shape = outputs[0].type.shape
    if any(v.type.shape != shape for v in outputs):
        raise CannotFuse("pointwise outputs of different shapes")
    b.extents = tuple(shape)
    idx = [Var(d) for d in range(len(shape))]
    stores = tuple(_store(b, i, v, idx) for i, v in enumerate(outputs))
    moves_only = all(n.opdef.category is Category.MOVEMENT for n in nodes)  # views, copy, cat, embedding
    kind = "copy" if moves_only else "pointwise"
    return LoopKernel(name, kind, b.input_buffers(), out_bufs, tuple(shape), (), stores), b.inputs


def _without_checks(kernel: Kernel) -> Kernel:
    """``kernel``, unless an epilogue holds a run-time ``check`` (integer division, embedding id):
    only loop kernels report checks, so such a group is split and the check runs in a loop kernel."""
    if kernel_checks(kernel):
        raise CannotFuse("a run-time check (integer division or index) cannot run in a template's epilogue")
    return kernel


def _reduction_kernel(b, name, reds, outputs, out_bufs) -> LoopKernel:
    space = reductions.space_of(reds[0])
    if any(reductions.space_of(r) != space for r in reds[1:]):
        raise CannotFuse("reductions over different loop spaces")
    b.extents = space.outer + space.inner
    for r in reds:
        reductions.setup(b, r, space)
    stores = []
    for i, v in enumerate(outputs):
        where = reductions.result_store_index(space, v.type.shape)
        if where is None:
            raise CannotFuse(f"output %{v.name} of shape {v.type.shape} does not fit the reduction's loops")
        stores.append(_store(b, i, v, where[0], where[1]))
    # Outer-level stores first would read Refs before they exist only if ordered wrongly:
    # every Reduce stage is already appended, so stores go after them in output order.
    stages = tuple(b.stages) + tuple(stores)
    return LoopKernel(name, "reduction", b.input_buffers(), out_bufs, space.outer, space.inner, stages)


def _contraction_kernel(b, name, node, outputs, out_bufs) -> Kernel:
    t = contractions.template(b, node)
    b.extents = t.extents
    res = node.results[0]

    def read(idx):
        for e, want in zip(idx, t.out_index):
            if ix.simplify(e, b.extents) != ix.simplify(want, b.extents):
                raise CannotFuse("the contraction result is read at another point than its own")
        return t.result
    b.reduced[id(res)] = read
    stores = []
    for i, v in enumerate(outputs):
        if v.type.shape != res.type.shape:
            raise CannotFuse(f"epilogue output %{v.name} has another shape than the contraction")
        stores.append(_store(b, i, v, t.out_index))
    common = dict(name=name, inputs=b.input_buffers(), outputs=out_bufs, stores=tuple(stores), **t.fields)
    return _TEMPLATE_KERNELS[t.cls](**common)
