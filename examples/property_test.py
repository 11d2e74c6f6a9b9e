"""Property-testing your own pass with minicomp.testing.

The pass below removes multiplications by a constant one (``x * 1 -> x``). We test
it two ways over random valid graphs:

1. differential: the graph with the pass on vs off gives the same results, and both
   match PyTorch eager (``check_compile`` names the pass if it breaks something);
2. the pass really fires: graphs with ``x * 1`` appended lose those multiplications.

Run as a script (``python examples/property_test.py``) or with pytest
(``pytest examples/property_test.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Value, constant
from minicomp.testing import Case, check_compile, graphs


@dataclass(frozen=True)
class DropMulByOne:
    """Rewrite ``mul(x, 1)`` / ``mul(1, x)`` to ``x`` when that keeps the result type."""

    name: str = "drop-mul-by-one"

    def run(self, graph: Graph, ctx) -> None:
        for node in list(graph.nodes):
            if node.op != "mul":
                continue
            for i, other in enumerate(node.operands):
                x = node.operands[1 - i]
                if _is_one(other) and x.type == node.result.type:
                    graph.replace_uses(node.result, x)
                    graph.remove(node)
                    break


def _is_one(v: Value) -> bool:
    p = v.producer
    return p is not None and p.op == "constant" and bool(np.all(p.attrs["value"] == 1))


def with_mul_by_one(case: Case) -> Case:
    """``case`` with every output multiplied by a constant one of its own dtype."""
    g = case.graph.copy()
    outs = []
    for v in g.outputs:
        one = constant(g, np.ones((), dtype=v.type.dtype.np), v.type.dtype)
        outs.append(g.add("mul", [v, one]).result)
    g.set_outputs(outs)
    return Case(g, case.inputs)


@settings(max_examples=30, deadline=None)
@given(graphs(max_nodes=5, dtypes=(DType.f32, DType.i64)))
def test_pass_preserves_results(case: Case) -> None:
    case = with_mul_by_one(case)
    # Pass on (interpreter after our pass) vs PyTorch eager; check_compile also runs the
    # interpreter without passes, so "pass off" is checked against the same oracle.
    check_compile(case, targets=("interpret",), passes=[DropMulByOne()])


@settings(max_examples=30, deadline=None)
@given(graphs(max_nodes=5))
def test_pass_fires(case: Case) -> None:
    case = with_mul_by_one(case)
    before = sum(n.op == "mul" for n in case.graph.nodes)
    g = case.graph.copy()
    DropMulByOne().run(g, None)
    assert sum(n.op == "mul" for n in g.nodes) <= before - len(set(map(id, case.graph.outputs)))


if __name__ == "__main__":
    test_pass_preserves_results()
    test_pass_fires()
    print("drop-mul-by-one: all property tests passed")
