"""Decomposition of composite ops into primitives, each switchable.

``options["decompose"]`` maps op names to booleans, overriding
:data:`CPU_DEFAULTS`. The default keeps softmax/log_softmax/layer_norm whole
(each is one reduction kernel; decomposed they would need two reductions, so two
kernels) and decomposes only what helps fusion: ``batch_norm`` (inference form,
purely per-channel elementwise, so it becomes a conv epilogue).

f16/bf16 composites compute in f32 and round once at the end, as their references
do; results equal the composite's within floating-point rounding (not bit-exact).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import Role
from minicomp.passes.manager import Pass, PassContext, register_pass
from minicomp.passes.rewrite import Rewriter

CPU_DEFAULTS: dict[str, bool] = {
    "softmax": False, "log_softmax": False, "layer_norm": False, "batch_norm": True, "gelu": False,
    "silu": False, "var": False, "mean": False, "addmm": False, "linear": False,
}


class _B:
    """Tiny builder over a Rewriter: ops inserted before the node being decomposed."""

    def __init__(self, rw: Rewriter, dtype: DType):
        self.rw = rw
        self.dt = dtype

    def op(self, name: str, *args: Value, **attrs) -> Value:
        return self.rw.add(name, list(args), attrs).result

    def c(self, x: float) -> Value:
        return self.rw.constant(np.array(x, dtype=self.dt.np), self.dt)

    def up(self, x: Value) -> Value:
        """Cast f16/bf16 to f32 (the compute type)."""
        return self.op("cast", x, dtype=x.type.dtype.compute) if x.type.dtype.compute != x.type.dtype else x

    def down(self, x: Value, dtype: DType) -> Value:
        return self.op("cast", x, dtype=dtype) if x.type.dtype != dtype else x


def _dims(node: Node, x: Value) -> tuple[int, ...]:
    dims = tuple(node.attrs["dims"])
    return dims if dims else tuple(range(x.type.rank))


def _softmax(node: Node, b: _B, log: bool) -> Value:
    x = b.up(node.operands[0])
    d = node.attrs["dim"] % max(x.type.rank, 1)
    m = b.op("amax", x, dims=(d,), keepdim=True)
    sh = b.op("sub", x, m)
    s = b.op("sum", b.op("exp", sh), dims=(d,), keepdim=True)
    y = b.op("sub", sh, b.op("log", s)) if log else b.op("div", b.op("exp", sh), s)
    return y


def _layer_norm(node: Node, b: _B) -> Value:
    x, w, bias = (b.up(v) for v in node.operands)
    k = node.attrs["normalized_ndim"]
    dims = tuple(range(x.type.rank - k, x.type.rank))
    mean = b.op("mean", x, dims=dims, keepdim=True)
    xc = b.op("sub", x, mean)
    var = b.op("mean", b.op("mul", xc, xc), dims=dims, keepdim=True)
    inv = b.op("rsqrt", b.op("add", var, b.c(node.attrs["eps"])))
    return b.op("add", b.op("mul", b.op("mul", xc, inv), w), bias)


def _batch_norm(node: Node, b: _B) -> Value:
    x, mean, var, w, bias = (b.up(v) for v in node.operands)
    shape = (1, x.type.shape[1]) + (1,) * (x.type.rank - 2)
    alpha = b.op("div", w, b.op("sqrt", b.op("add", var, b.c(node.attrs["eps"]))))
    beta = b.op("sub", bias, b.op("mul", mean, alpha))
    alpha, beta = (b.op("reshape", v, shape=shape) for v in (alpha, beta))
    return b.op("add", b.op("mul", x, alpha), beta)


def _gelu(node: Node, b: _B) -> Value:
    x = b.up(node.operands[0])
    if node.attrs["approximate"] == "tanh":
        inner = b.op("mul", b.c(math.sqrt(2 / math.pi)),
                     b.op("add", x, b.op("mul", b.c(0.044715), b.op("mul", x, b.op("mul", x, x)))))
        t = b.op("tanh", inner)
    else:
        t = b.op("erf", b.op("mul", x, b.c(1 / math.sqrt(2))))
    return b.op("mul", b.op("mul", b.c(0.5), x), b.op("add", b.c(1.0), t))


def _silu(node: Node, b: _B) -> Value:
    x = b.up(node.operands[0])
    return b.op("mul", x, b.op("sigmoid", x))


def _mean(node: Node, b: _B) -> Value:
    x = b.up(node.operands[0])
    dims = _dims(node, x)
    n = math.prod(x.type.shape[d] for d in dims)
    return b.op("div", b.op("sum", x, dims=dims, keepdim=node.attrs["keepdim"]), b.c(float(n)))


def _var(node: Node, b: _B) -> Value:
    x = b.up(node.operands[0])
    dims = _dims(node, x)
    n = math.prod(x.type.shape[d] for d in dims)
    xc = b.op("sub", x, b.op("mean", x, dims=dims, keepdim=True))
    ss = b.op("sum", b.op("mul", xc, xc), dims=dims, keepdim=node.attrs["keepdim"])
    return b.op("div", ss, b.c(max(0.0, n - node.attrs["correction"])))


def _addmm(node: Node, b: _B) -> Value:
    bias, x, y = node.operands
    mm = b.op("matmul", x, y)
    if node.attrs["alpha"] != 1.0:
        mm = b.op("mul", mm, b.c(node.attrs["alpha"]))
    if node.attrs["beta"] == 0.0:  # torch ignores the bias (even NaN) when beta is 0
        return b.op("expand", mm, shape=node.results[0].type.shape) if mm.type.shape != node.results[0].type.shape \
            else mm
    if node.attrs["beta"] != 1.0:
        bias = b.op("mul", bias, b.c(node.attrs["beta"]))
    return b.op("add", mm, bias)


def _linear(node: Node, b: _B) -> Value:
    x, w = node.operands[:2]
    wt = b.op("permute", w, dims=(1, 0)) if w.type.rank == 2 else w
    y = b.op("matmul", x, wt)
    return b.op("add", y, node.operands[2]) if len(node.operands) == 3 else y


RULES: dict[str, Callable[[Node, _B], Value]] = {
    "softmax": lambda n, b: _softmax(n, b, False), "log_softmax": lambda n, b: _softmax(n, b, True),
    "layer_norm": _layer_norm, "batch_norm": _batch_norm, "gelu": _gelu, "silu": _silu,
    "var": _var, "mean": _mean, "addmm": _addmm, "linear": _linear,
}


def _applicable(node: Node) -> bool:
    if node.opdef.role is Role.CONTRACTION:  # (addmm, linear) integer operands decompose too
        return node.results[0].type.dtype.is_float
    return all(o.type.dtype.is_float for o in node.operands) and node.results[0].type.dtype.is_float


@register_pass("decompose")
@dataclass(frozen=True)
class Decompose(Pass):
    """Rewrites enabled composite ops (see :data:`RULES`) into primitive ops.

    Guarantees: the same values up to floating-point rounding; result types unchanged.
    """

    name: str = "decompose"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        enabled = dict(CPU_DEFAULTS)
        enabled.update(ctx.option("decompose", {}) or {})
        rw = Rewriter(graph)
        count = 0
        for node in list(graph.nodes):
            if not enabled.get(node.op) or node.op not in RULES or not _applicable(node):
                continue
            rw.current = node
            dtype = node.results[0].type.dtype
            out = RULES[node.op](node, _B(rw, dtype.compute))
            out = _B(rw, dtype).down(out, dtype)
            rw.replace(node, [out])
            ctx.record("decompose", f"{node.op} %{node.results[0].name}", "enabled in options['decompose']")
            count += 1
        if count:
            from minicomp.passes.canonicalize import remove_dead
            remove_dead(graph)
