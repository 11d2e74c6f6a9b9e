"""Contraction templates: matmul/linear/addmm, conv2d and the 2-d poolings.

Each template reads its operands through :meth:`KernelBuilder.address`, so
views of a buffer (a transposed weight, permuted attention heads) fold into the
:class:`~minicomp.ir.kernel.Access` strides when they are affine; otherwise the
operand is materialized by its own kernel first (``NeedMaterialize``). The
template returns the kernel's fixed fields, the loop index of its result (for
the epilogue) and the expression of its own result in terms of ``Ref(0)``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Node
from minicomp.ir.kernel import Access, E, Expr, Ref, Var
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.lowering.builder import LoweringError, NeedMaterialize


@dataclass
class Template:
    """What a contraction contributes to its kernel."""

    cls: str                 # "matmul", "conv", "pool"
    fields: dict[str, Any]   # constructor fields except name/inputs/outputs/stores
    out_index: list[Expr]    # the result's index in the epilogue loop variables
    extents: tuple[int, ...]  # extents of the epilogue loop variables
    result: Expr             # the contraction's own result (uses Ref(0))


def _access(b, v, idx: Sequence[Expr], extents: Sequence[int]) -> Access:
    old = b.extents
    b.extents = tuple(extents)
    try:
        base, flat = b.address(v, idx)
    finally:
        b.extents = old
    form = ix.affine(flat, extents)
    if form is None:
        err = NeedMaterialize(v)
        err.index = (flat, tuple(extents))
        raise err
    terms, const = form
    return Access(b.buffer_of(base), tuple(terms.get(d, 0) for d in range(len(extents))), const)


def acc_dtype(dt: DType) -> DType:
    return dt.compute


def _matmul_core(b, a, w, transpose_b: bool, out_dt: DType):
    """C = a @ w (or a @ w.T for linear), torch.matmul shape rules incl. 1-d and batch broadcast."""
    sa, sw = a.type.shape, w.type.shape
    if transpose_b:  # linear: w is [n, k]
        n, k = sw[0], sw[1]
        batch_a = sa[:-2] if len(sa) >= 2 else ()
        m = sa[-2] if len(sa) >= 2 else 1
        batch = tuple(batch_a)
        batch_w: tuple[int, ...] = ()
    else:
        k = sa[-1]
        m = sa[-2] if len(sa) >= 2 else 1
        n = sw[-1] if len(sw) >= 2 else 1
        batch_a = sa[:-2] if len(sa) >= 2 else ()
        batch_w = sw[:-2] if len(sw) >= 2 else ()
        from minicomp.ir.types import broadcast_shapes
        batch = broadcast_shapes(tuple(batch_a), tuple(batch_w))
    tail_a = (lambda nb: [Var(nb), Var(nb + 1)]) if len(sa) >= 2 else (lambda nb: [Var(nb + 1)])
    if transpose_b:
        spec_w = (w, (), lambda nb: [Var(nb + 1), Var(nb)], (k, n))
    else:
        spec_w = (w, tuple(batch_w), (lambda nb: [Var(nb), Var(nb + 1)]) if len(sw) >= 2 else (lambda nb: [Var(nb)]),
                  (k, n))
    (acc_a, acc_b), bexpr, bext = batched_accesses(b, batch, [(a, tuple(batch_a), tail_a, (m, k)), spec_w])
    nb = len(bext)
    out_index = list(bexpr)
    if len(sa) >= 2:
        out_index.append(Var(nb))
    if transpose_b or len(sw) >= 2:
        out_index.append(Var(nb + 1))
    fields = dict(batch=bext, m=m, n=n, k=k, a=acc_a, b=acc_b, acc_dtype=acc_dtype(out_dt))
    return fields, out_index, (*bext, m, n)


#: An operand of a batched product: (value, its batch dims (a suffix of the product's, size-1
#: dims broadcast), its trailing index given the number of batch loops, its trailing extents).
OperandSpec = tuple[Any, tuple[int, ...], Callable[[int], list[Expr]], tuple[int, ...]]


def batched_accesses(b, batch: Sequence[int], operands: Sequence[OperandSpec]
                     ) -> tuple[list[Access], list[Expr], tuple[int, ...]]:
    """The accesses of a batched product's operands over loops (batch loops..., trailing loops),
    the batch index of each batch dim in those loops, and the batch loops' extents.

    Batch dims may be split into finer loops (dim = c*outer + inner) when that makes an
    operand's index affine: attention heads merged into one bmm batch dim are two strides
    in the buffer. ``bmap[d]`` is batch dim d as {loop: coefficient}.
    """
    batch = tuple(batch)
    bmap: list[dict[int, int]] = [{d: 1} for d in range(len(batch))]
    bext = list(batch)
    for _ in range(4):
        nb = len(bext)
        bexpr = [ix.from_affine((dict(t), 0)) for t in bmap]

        def bidx(sub_batch):
            lead = len(batch) - len(sub_batch)
            return [ix.c64(0) if s == 1 and batch[lead + d] != 1 else bexpr[lead + d] for d, s in enumerate(sub_batch)]

        try:
            accs = [_access(b, v, bidx(sub) + tail(nb), (*bext, *text)) for v, sub, tail, text in operands]
            return accs, bexpr, tuple(bext)
        except NeedMaterialize as e:
            split = _batch_split(b, e, bext)
            if split is None:
                raise
        loop, c = split
        bext[loop:loop + 1] = [bext[loop] // c, c]
        bmap = [_refine(t, loop, c) for t in bmap]
    raise NeedMaterialize(operands[0][0])


def _refine(terms: dict[int, int], loop: int, c: int) -> dict[int, int]:
    """Loop ``loop`` becomes loops (loop, loop+1) with old = c*loop + (loop+1)."""
    out: dict[int, int] = {}
    for v, coef in terms.items():
        if v < loop:
            out[v] = coef
        elif v == loop:
            out[v] = coef * c
            out[v + 1] = coef
        else:
            out[v + 1] = coef
    return out


def _batch_split(b, err: NeedMaterialize, bext: list[int]) -> tuple[int, int] | None:
    """A (batch loop, factor) whose split removes a floordiv/mod from the failing index."""
    index = getattr(err, "index", None)
    if index is None:
        return None
    form = ix.linear_form(index[0], index[1])
    if form is None:
        return None
    for key in form[0]:
        if isinstance(key, tuple) and isinstance(key[1], Var) and key[1].dim < len(bext):
            d, c = key[1].dim, key[2]
            if 1 < c < bext[d] and bext[d] % c == 0:
                return d, c
    return None


def template(b, node: Node) -> Template:
    """The contraction template of ``node``: its OpDef's ``template`` rule (one of the
    ``*_template`` functions below, named in :mod:`minicomp.ir.ops.contraction`)."""
    rule = node.opdef.template
    if rule is None:
        raise LoweringError(f"no contraction template for '{node.op}'")
    return rule(b, node)


def _product(b, node: Node, x, w, transposed: bool) -> tuple[dict[str, Any], list[Expr], tuple[int, ...], Ref]:
    out = node.results[0].type
    fields, out_index, ext = _matmul_core(b, x, w, transposed, out.dtype)
    b.extents = tuple(ext)  # bias indices are simplified over the epilogue loops
    return fields, out_index, ext, Ref(0, acc_dtype(out.dtype))


def matmul_template(b, node: Node) -> Template:
    """torch.matmul: one product, no epilogue of its own."""
    fields, out_index, ext, ref = _product(b, node, node.operands[0], node.operands[1], False)
    return Template("matmul", fields, out_index, ext, ref)


def linear_template(b, node: Node) -> Template:
    """x @ w.T (+ bias): the weight read transposed, the bias added to the accumulator."""
    fields, out_index, ext, ref = _product(b, node, node.operands[0], node.operands[1], True)
    result: Expr = ref
    if len(node.operands) > 2:
        result = E.add(ref, E.cast(b.expr(node.operands[2], out_index[-1:]), ref.dtype))
    return Template("matmul", fields, out_index, ext, result)


def addmm_template(b, node: Node) -> Template:
    """beta * bias + alpha * (x @ w), the bias broadcast over the product."""
    bias, x, w = node.operands
    a, out = node.attrs, node.results[0].type
    fields, out_index, ext, ref = _product(b, node, x, w, False)
    acc = ref.dtype
    result: Expr = ref if a["alpha"] == 1 else E.mul(E.const(a["alpha"], acc), ref)
    if a["beta"] != 0:
        lead = 2 - bias.type.rank
        bidx = [ix.c64(0) if s == 1 and out.shape[lead + d] != 1 else out_index[lead + d]
                for d, s in enumerate(bias.type.shape)]
        bv = E.cast(b.expr(bias, bidx), acc)
        result = E.add(result, bv if a["beta"] == 1 else E.mul(E.const(a["beta"], acc), bv))
    return Template("matmul", fields, out_index, ext, result)


def conv2d_template(b, node: Node) -> Template:
    """NCHW convolution (implicit GEMM in the backends), the bias added per output channel."""
    a, out = node.attrs, node.results[0].type
    acc = acc_dtype(out.dtype)
    x, w = node.operands[0], node.operands[1]
    n, cin, h, wd = x.type.shape
    cout, _, kh, kw = w.type.shape
    fields = dict(n=n, cin=cin, h=h, w=wd, cout=cout, kh=kh, kw=kw, oh=out.shape[2], ow=out.shape[3],
                  stride=tuple(a["stride"]), padding=tuple(a["padding"]), dilation=tuple(a["dilation"]),
                  groups=a["groups"], x=_access(b, x, [Var(i) for i in range(4)], x.type.shape),
                  weight=_access(b, w, [Var(i) for i in range(4)], w.type.shape), acc_dtype=acc)
    b.extents = tuple(out.shape)  # bias indices are simplified over the epilogue loops
    result: Expr = Ref(0, acc)
    if len(node.operands) > 2:
        result = E.add(result, E.cast(b.expr(node.operands[2], [Var(1)]), acc))
    return Template("conv", fields, [Var(i) for i in range(4)], tuple(out.shape), result)


def _pool(b, node: Node, op: str) -> Template:
    a, out = node.attrs, node.results[0].type
    acc = acc_dtype(out.dtype)
    x = node.operands[0]
    n, c, h, wd = x.type.shape
    divisor = a.get("divisor")
    fields = dict(op=op, n=n, c=c, h=h, w=wd, oh=out.shape[2],
                  ow=out.shape[3], kernel=tuple(a["kernel"]), stride=tuple(a["stride"]),
                  padding=tuple(a["padding"]), dilation=tuple(a.get("dilation", (1, 1))),
                  count_include_pad=bool(a.get("count_include_pad", True)),
                  divisor=int(divisor) if divisor else 0,
                  x=_access(b, x, [Var(i) for i in range(4)], x.type.shape), acc_dtype=acc)
    return Template("pool", fields, [Var(i) for i in range(4)], tuple(out.shape), Ref(0, acc))


def max_pool2d_template(b, node: Node) -> Template:
    """Window maximum (PoolKernel op "max")."""
    return _pool(b, node, "max")


def avg_pool2d_template(b, node: Node) -> Template:
    """Window mean (PoolKernel op "avg")."""
    return _pool(b, node, "avg")
