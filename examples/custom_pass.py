"""Write a rewrite pattern, register it as a pass, run it in a pipeline, print the IR before and after.

Run: python examples/custom_pass.py
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minicomp.ir import Graph, interpret, parse
from minicomp.ir.graph import Node
from minicomp.passes import (Pass, PassContext, PassManager, RewritePattern, Rewriter, apply_patterns, explain,
                             register_pass)


class MulTwoToAdd(RewritePattern):
    """``mul(x, 2)`` -> ``add(x, x)``: exact in IEEE arithmetic (both round 2x once)."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if node.op != "mul" or not rw.is_scalar_const(node.operands[1], 2.0):
            return False
        x = node.operands[0]
        if x.type != node.result.type:  # no broadcasting or promotion hidden in the mul
            return False
        rw.replace(node, [rw.add("add", [x, x]).result])
        return True


class ReluOfRelu(RewritePattern):
    """``relu(relu(x))`` -> ``relu(x)``."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        inner = node.operands[0].producer if node.op == "relu" else None
        if inner is None or inner.op != "relu":
            return False
        rw.replace(node, [inner.result])
        return True


@register_pass("my-peephole")
@dataclass(frozen=True)
class MyPeephole(Pass):
    """Applies MulTwoToAdd and ReluOfRelu to a fixpoint. Exact: outputs are bit-identical."""

    name: str = "my-peephole"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        if apply_patterns(graph, [MulTwoToAdd(), ReluOfRelu()]):
            ctx.record("rewrite", "my-peephole", "mul by 2 became add; double relu removed")


TEXT = """graph @g(%x: f32[4]) {
  %two = constant {dtype=f32, value=dense<[2.0] : f32[]>} : f32[]
  %a = relu %x : f32[4]
  %b = relu %a : f32[4]
  %c = mul %b, %two : f32[4]
  return %c
}"""


def main() -> None:
    g = parse(TEXT)
    before = g.copy()
    print("before:\n" + str(g))
    ctx = PassContext()
    g = PassManager(["my-peephole", "dce", "fuse"]).run(g, ctx)
    print("after:\n" + str(g))
    print(explain(ctx, stats=False))
    x = np.array([-1.0, -0.0, 3.0, np.inf], np.float32)
    np.testing.assert_array_equal(interpret(g, x)[0], interpret(before, x)[0])


if __name__ == "__main__":
    main()
