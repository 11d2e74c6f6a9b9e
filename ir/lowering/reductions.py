"""Reduction templates: each reduction op as stages of a :class:`LoopKernel`.

A reduction over dims ``rd`` of an input of shape ``S`` iterates the kept dims
in the ``outer`` loops (Var(0..)) and the reduced dims in the ``inner`` loops.
``setup(builder, node)`` appends the op's Reduce stages and registers how its
result reads at an index (checked to be the current outer point).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Node
from minicomp.ir.kernel import E, Expr, Var
from minicomp.ir.lowering import indexing as ix
from minicomp.ir.lowering.builder import CannotFuse, LoweringError


@dataclass(frozen=True)
class Space:
    """The loop space of a reduction: input shape, and which input dims are reduced."""

    shape: tuple[int, ...]
    rdims: tuple[int, ...]
    cumulative: int | None = None  # cumsum: the scanned dim (outer covers all of shape)

    @property
    def outer(self) -> tuple[int, ...]:
        if self.cumulative is not None:
            return self.shape
        return tuple(s for d, s in enumerate(self.shape) if d not in self.rdims)

    @property
    def inner(self) -> tuple[int, ...]:
        if self.cumulative is not None:
            return (self.shape[self.cumulative],)
        return tuple(self.shape[d] for d in self.rdims)

    def full_index(self) -> list[Expr]:
        """Input index at the current (outer, inner) point."""
        if self.cumulative is not None:
            idx: list[Expr] = [Var(d) for d in range(len(self.shape))]
            idx[self.cumulative] = Var(len(self.shape))
            return idx
        no, out, k_o, k_i = len(self.outer), [], 0, 0
        for d in range(len(self.shape)):
            if d in self.rdims:
                out.append(Var(no + k_i))
                k_i += 1
            else:
                out.append(Var(k_o))
                k_o += 1
        return out

    def outer_dims(self) -> list[int]:
        if self.cumulative is not None:
            return list(range(len(self.shape)))
        return [d for d in range(len(self.shape)) if d not in self.rdims]


def _norm_dims(dims, rank: int) -> tuple[int, ...]:
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        return tuple(range(rank))
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(sorted(d % rank if rank else 0 for d in dims))


def space_of(node: Node) -> Space:
    """The loop space a reduction node needs."""
    x = node.operands[0].type
    r, a = x.rank, node.attrs
    if node.op in ("sum", "mean", "amax", "amin", "var"):
        return Space(x.shape, _norm_dims(a["dims"], r))
    if node.op in ("argmax", "argmin"):
        return Space(x.shape, _norm_dims(a["dim"], r))
    if node.op in ("softmax", "log_softmax"):
        return Space(x.shape, _norm_dims(a["dim"], r) if r else ())
    if node.op == "layer_norm":
        return Space(x.shape, tuple(range(r - a["normalized_ndim"], r)))
    if node.op == "cumsum":  # a 0-d input has nothing to scan: its running sum is itself
        return Space(x.shape, (), cumulative=a["dim"] % r) if r else Space(x.shape, ())
    raise LoweringError(f"no reduction template for '{node.op}'")


def _check_outer(idx: Sequence[Expr], space: Space, dims_of_idx: Sequence[int | None], extents) -> None:
    """``idx`` (an index of a reduction result) must address the current outer point."""
    outer_dims = space.outer_dims()
    for e, d in zip(idx, dims_of_idx):
        if d is None or space.shape[d] == 1 or d not in outer_dims:
            continue
        want = Var(outer_dims.index(d))
        if ix.simplify(e, extents) != want:
            raise CannotFuse("a reduction result is read at another point than its own")


def setup(b, node: Node, space: Space) -> None:
    """Append ``node``'s stages to builder ``b`` and register its result reader."""
    op, a, x = node.op, node.attrs, node.operands[0]
    v = node.results[0]
    out_dt = v.type.dtype
    acc = out_dt.compute
    full = space.full_index()
    n_inner = prod(space.inner)
    keep = a.get("keepdim", False)
    # Which input dim each result dim stands for (None: a kept size-1 dim).
    if op in ("softmax", "log_softmax", "layer_norm", "cumsum"):
        res_dims: list[int | None] = list(range(len(space.shape)))
    elif keep:
        res_dims = [None if d in space.rdims else d for d in range(len(space.shape))]
    else:
        res_dims = space.outer_dims()

    def xval(dt: DType, idx=None) -> Expr:
        return E.cast(b.expr(x, full if idx is None else idx), dt)

    def reader(result_fn):
        def read(idx):
            _check_outer(idx, space, res_dims, b.extents)
            return result_fn(idx)
        b.reduced[id(v)] = read

    if op in ("sum", "amax", "amin"):
        ref = b.reduce({"sum": "sum", "amax": "max", "amin": "min"}[op], xval(acc), acc)
        reader(lambda idx: ref)
    elif op == "mean":
        ref = b.reduce("sum", xval(acc), acc)
        reader(lambda idx: E.div(ref, E.const(n_inner, acc)))
    elif op in ("argmax", "argmin"):
        ref = b.reduce(op, xval(x.type.dtype.compute), DType.i64)
        reader(lambda idx: ref)
    elif op == "var":
        n = E.const(n_inner, acc)
        rough = E.div(b.reduce("sum", xval(acc), acc), n)
        # one correction pass makes the mean exact to rounding (a constant row normalizes
        # to exactly 0, as in PyTorch) at the cost of one more sweep over a cached row
        mean = E.add(rough, E.div(b.reduce("sum", E.sub(xval(acc), rough), acc), n))
        diff = E.sub(xval(acc), mean)
        ss = b.reduce("sum", E.mul(diff, diff), acc)
        denom = E.const(max(n_inner - a["correction"], 0), acc)
        reader(lambda idx: E.div(ss, denom))
    elif op in ("softmax", "log_softmax"):
        m = b.reduce("max", xval(acc), acc)
        s = b.reduce("sum", E.exp(E.sub(xval(acc), m)), acc)
        if op == "softmax":
            reader(lambda idx: E.div(E.exp(E.sub(xval(acc, idx), m)), s))
        else:
            log_s = E.log(s)
            if out_dt in (DType.f16, DType.bf16) and x.type.rank and a["dim"] == x.type.rank - 1:
                # as PyTorch's last-dim kernel (and the interpreter): sum(exp) and its log are
                # rounded to the input dtype before x - max - log_sum is formed in f32
                rounded_s = E.cast(E.cast(s, out_dt), acc)
                log_s = E.cast(E.cast(E.log(rounded_s), out_dt), acc)
            reader(lambda idx: E.sub(E.sub(xval(acc, idx), m), log_s))
    elif op == "layer_norm":
        w, bias = node.operands[1], node.operands[2]
        k = a["normalized_ndim"]
        n = E.const(n_inner, acc)
        rough = E.div(b.reduce("sum", xval(acc), acc), n)
        # one correction pass makes the mean exact to rounding (a constant row normalizes
        # to exactly 0, as in PyTorch) at the cost of one more sweep over a cached row
        mean = E.add(rough, E.div(b.reduce("sum", E.sub(xval(acc), rough), acc), n))
        diff = E.sub(xval(acc), mean)
        var = E.div(b.reduce("sum", E.mul(diff, diff), acc), E.const(n_inner, acc))
        rstd = E.div(E.const(1, acc), E.sqrt(E.add(var, E.const(a["eps"], acc))))

        def ln(idx):
            tail = list(idx[len(idx) - k:])
            y = E.mul(E.sub(xval(acc, idx), mean), rstd)
            return E.add(E.mul(y, E.cast(b.expr(w, tail), acc)), E.cast(b.expr(bias, tail), acc))
        reader(ln)
    elif op == "cumsum":  # a 0-d input (no scanned dim) sums over no dims: the value itself
        d, j = space.cumulative, Var(len(space.shape))
        val = xval(acc) if d is None else E.where(E.le(j, Var(d)), xval(acc), E.const(0, acc))
        ref = b.reduce("sum", val, acc)
        reader(lambda idx: ref)
    else:
        raise LoweringError(f"no reduction template for '{op}'")


def result_store_index(space: Space, shape: Sequence[int]) -> tuple[list[Expr], bool] | None:
    """Index (and inner flag) at which a kernel stores an output of ``shape``, or None."""
    shape = tuple(shape)
    if shape == space.outer:
        return [Var(d) for d in range(len(shape))], False
    if space.cumulative is None:
        keep = tuple(1 if d in space.rdims else s for d, s in enumerate(space.shape))
        if shape == keep and len(shape) == len(space.shape):
            outer_dims = space.outer_dims()
            return [ix.c64(0) if d in space.rdims else Var(outer_dims.index(d)) for d in range(len(shape))], False
        if shape == space.shape:
            return space.full_index(), True
    return None
