"""The verifier: accepts well-formed graphs, rejects each kind of malformed IR with a clear message."""
from __future__ import annotations

import re
import time
from unittest import mock

import numpy as np
import pytest

from minicomp.ir import DType, Graph, Node, TensorType, VerifyError, constant, parse, verify
from minicomp.ir.dtypes import promote
from minicomp.ir.ops import _REGISTRY, Attr, Category, OpDef
from minicomp.ir.types import broadcast_shapes


def _binary(ts, attrs):
    return [TensorType(promote(ts[0].dtype, ts[1].dtype), broadcast_shapes(ts[0].shape, ts[1].shape))]


def _split(ts, attrs):
    d, shape = attrs["dim"], ts[0].shape
    return [TensorType(ts[0].dtype, shape[:d] + (s,) + shape[d + 1:]) for s in attrs["sizes"]]


#: Follow docs/ops.md; used only for op names the real registry lacks (it is filled in parallel).
STAND_INS = {
    "constant": OpDef("constant", Category.OPAQUE, 0, lambda ts, a: [TensorType(a["dtype"], a["value"].shape)],
                      None, {"value": Attr("array"), "dtype": Attr("dtype")}),
    "add": OpDef("add", Category.ELEMENTWISE, 2, _binary, None),
    "relu": OpDef("relu", Category.ELEMENTWISE, 1, lambda ts, a: [ts[0].with_order(None)], None),
    "split": OpDef("split", Category.MOVEMENT, 1, _split, None, {"dim": Attr("int"), "sizes": Attr("ints")},
                   num_results=None),
    "fused": OpDef("fused", Category.OPAQUE, None, lambda ts, a: [v.type for v in a["body"].outputs], None,
                   {"kind": Attr("str"), "body": Attr("any")}),
}


@pytest.fixture(scope="module", autouse=True)
def stand_in_ops():
    missing = {k: v for k, v in STAND_INS.items() if k not in _REGISTRY}
    with mock.patch.dict(_REGISTRY, missing):
        yield


GOOD = """graph @g(%x: f32[2,4], %y: f32[4]) {
  %w = constant {dtype=f32, value=dense<[1.0,2.0,3.0,4.0] : f32[4]>} : f32[4]
  %0 = add %x, %y : f32[2,4]
  %1 = add %0, %w : f32[2,4] loc("model.py:7")
  %2, %3 = split %1 {dim=1, sizes=[1,3]} : f32[2,1], f32[2,3]
  %4 = fused %1, %y {body=graph @k0(%a: f32[2,4], %b: f32[4]) {
    %0 = add %a, %b : f32[2,4]
    %1 = relu %0 : f32[2,4]
    return %1
  }, kind="pointwise"} : f32[2,4]
  return %2, %3, %4
}"""


def good() -> Graph:
    return parse(GOOD)


def node(g: Graph, result: str) -> Node:
    return next(n for n in g.nodes if any(r.name == result for r in n.results))


def rejects(g: Graph, *fragments: str) -> VerifyError:
    with pytest.raises(VerifyError) as info:
        verify(g)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return info.value


def test_well_formed_graphs_pass():
    verify(good())
    verify(good().copy())
    g = Graph("layouts")
    x = g.add_input(TensorType(DType.f32, (1, 3, 2, 2), (0, 2, 3, 1)), "x")
    y = g.add("relu", [x]).result
    y.type = y.type.with_order((0, 2, 3, 1))  # layouts are a storage choice, not inference's
    g.set_outputs([y])
    verify(g)


# -- malformed IR, one kind per test ----------------------------------------------------------
def test_use_before_definition():
    g = good()
    g.nodes[1], g.nodes[2] = g.nodes[2], g.nodes[1]
    err = rejects(g, "graph @g: node '%1 = add %0, %w : f32[2,4] loc(\"model.py:7\")'",
                  "operand %0 is used before its definition")
    assert err.node is g.nodes[1]


def test_operand_from_another_graph():
    g, other = good(), good()
    node(g, "1").operands[1] = other.inputs[1]
    rejects(g, "node '%1 = add %0, %y", "operand %y is not defined in this graph")


def test_value_defined_twice():
    g = good()
    g.nodes.insert(3, node(g, "1"))
    rejects(g, "node '%1 = add %0, %w", "value %1 is defined twice")


def test_duplicate_value_names():
    g = good()
    node(g, "1").results[0].name = "0"
    rejects(g, "duplicate value name %0")


def test_cycle_is_named():
    g = good()
    a, b = node(g, "0"), node(g, "1")
    a.operands[1] = b.result  # %0 = add %x, %1 and %1 = add %0, %w
    rejects(g, "nodes form a cycle: %0 -> %1 -> %0")


def test_output_not_defined():
    g = good()
    g.set_outputs([good().nodes[1].result])
    rejects(g, "graph @g: output %0 is not defined in this graph")


def test_no_outputs():
    g = good()
    g.set_outputs([])
    err = rejects(g, "graph @g: graph has no outputs")
    assert err.node is None


def test_result_type_differs_from_inference():
    g = parse(GOOD.replace("%0 = add %x, %y : f32[2,4]", "%0 = add %x, %y : f64[2,4]"))
    rejects(g, "node '%0 = add %x, %y : f64[2,4]'", "result types f64[2,4] differ from the inferred f32[2,4]")
    g = parse(GOOD.replace(": f32[2,1], f32[2,3]", ": f32[2,1], f32[2,2]"))
    rejects(g, "differ from the inferred f32[2,1], f32[2,3]")


def test_wrong_number_of_operands():
    g = parse(GOOD.replace("%0 = add %x, %y", "%0 = add %x"))
    rejects(g, "node '%0 = add %x : f32[2,4]'", "type inference failed", "takes 2 operands, got 1")


def test_unknown_op():
    g = good()
    node(g, "0").op = "frobnicate"
    rejects(g, "node '%0 = frobnicate %x, %y", "unknown op 'frobnicate'")


def test_unknown_missing_and_mistyped_attributes():
    g = good()
    node(g, "2").attrs["axis"] = 1
    rejects(g, "node '%2, %3 = split %1 {axis=1, dim=1, sizes=[1,3]}", "unknown attribute 'axis'")
    g = good()
    del node(g, "2").attrs["sizes"]
    rejects(g, "missing attribute 'sizes'")
    g = good()
    node(g, "2").attrs["dim"] = 1.0
    rejects(g, "attribute 'dim' should be of kind int, got 1.0")
    g = good()
    node(g, "w").attrs["dtype"] = "f32"
    rejects(g, "attribute 'dtype' should be of kind dtype, got 'f32'")


def test_results_must_point_back_to_their_node():
    g = good()
    node(g, "1").results[0].producer = node(g, "0")
    rejects(g, "result %1 does not point back to this node as result 0")


def test_fused_body_is_verified_recursively():
    g = good()
    body = node(g, "4").attrs["body"]
    body.nodes.reverse()
    rejects(g, "graph @g: in attribute 'body' of node '%4 = fused %1, %y {body=graph @k0(...) {...}, "
               "kind=\"pointwise\"} : f32[2,4]': graph @k0: node '%1 = relu %0 : f32[2,4]'",
            "operand %0 is used before its definition")


def test_fused_body_types_match_the_node():
    g = parse(GOOD.replace("%b: f32[4]", "%b: f32[1,4]"))
    rejects(g, "node '%4 = fused", "body inputs (f32[2,4], f32[1,4]) do not match the operand types "
                                  "(f32[2,4], f32[4])")
    g = parse(GOOD.replace('  }, kind="pointwise"} : f32[2,4]', '  }, kind="pointwise"} : f64[2,4]'))
    rejects(g, "node '%4 = fused", "body outputs (f32[2,4]) do not match the result types (f64[2,4])")


def test_error_for_large_constant_is_short():
    g = Graph("big")
    c = constant(g, np.zeros((64, 64), np.float32), name="w")
    c.type = TensorType(DType.f32, (64, 63))
    g.set_outputs([c])
    err = rejects(g, "node '%w = constant {dtype=f32, value=dense<...>} : f32[64,63]'",
                  "differ from the inferred f32[64,64]")
    assert len(str(err)) < 300


def test_verify_is_linear_time():
    def chain(n: int) -> Graph:
        g = Graph("chain")
        v = g.add_input(TensorType(DType.f32, (4,)), "x")
        for _ in range(n):
            v = g.add("relu", [v]).result
        g.set_outputs([v])
        return g

    small, large = chain(2_000), chain(20_000)
    start = time.perf_counter()
    verify(small)
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    verify(large)
    t_large = time.perf_counter() - start
    # 10x the nodes: a linear verifier takes about 10x the time; a quadratic one 100x.
    assert t_large < max(40 * t_small, 0.5), (t_small, t_large)


def test_verify_error_is_a_value_error():
    g = good()
    g.set_outputs([])
    with pytest.raises(ValueError, match=re.escape("has no outputs")):
        verify(g)
