"""Decomposition of composite ops into primitives, each switchable.

Each op's rule is its OpDef's ``decompose`` (beside its definition in ``ir/ops/``); this
pass applies the enabled ones. ``options["decompose"]`` maps op names to booleans, overriding
:data:`CPU_DEFAULTS` (the OpDefs' ``decompose_by_default``). The default keeps softmax/log_softmax/layer_norm whole
(each is one reduction kernel; decomposed they would need two reductions, so two
kernels) and decomposes only what helps fusion: ``batch_norm`` (inference form,
purely per-channel elementwise, so it becomes a conv epilogue).

f16/bf16 composites compute in f32 and round once at the end, as their references
do; results equal the composite's within floating-point rounding (not bit-exact).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import Role, all_ops
from minicomp.passes.manager import Pass, PassContext, register_pass
from minicomp.passes.rewrite import Rewriter

#: Which ops decompose unless ``options["decompose"]`` says otherwise (each OpDef's ``decompose_by_default``).
CPU_DEFAULTS: dict[str, bool] = {n: o.decompose_by_default for n, o in all_ops().items() if o.decompose}


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


#: op name -> its OpDef's decomposition rule (rules live beside the op definitions in ir/ops/).
RULES: dict[str, Callable[[Node, _B], Value]] = {n: o.decompose for n, o in all_ops().items() if o.decompose}


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
            rule = node.opdef.decompose
            if rule is None or not enabled.get(node.op, node.opdef.decompose_by_default) or not _applicable(node):
                continue
            rw.current = node
            dtype = node.results[0].type.dtype
            out = rule(node, _B(rw, dtype.compute))
            out = _B(rw, dtype).down(out, dtype)
            rw.replace(node, [out])
            ctx.record("decompose", f"{node.op} %{node.results[0].name}", "enabled in options['decompose']")
            count += 1
        if count:
            from minicomp.passes.canonicalize import remove_dead
            remove_dead(graph)
