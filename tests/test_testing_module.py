"""Tests of minicomp.testing itself: strategies, random graphs, the torch oracle, and that
check_compile catches (and explains) broken passes and backends."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.graph import Graph, constant
from minicomp.ir.types import TensorType, broadcast_shapes
from minicomp.testing import (Case, MismatchError, broadcastable, check_compile, default_ops, graphs,
                              tensor_types, tensor_values)
from minicomp.testing import check as check_mod
from minicomp.testing.opgen import GENERATORS
from minicomp.testing.torch_ref import RULES

SMALL = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ------------------------------------------------------------------------------
@SMALL
@given(tensor_types(max_rank=5, allow_empty=False))
def test_tensor_types_respect_bounds(t: TensorType) -> None:
    assert t.rank <= 5 and 0 not in t.shape and t.numel <= 256 and t.dtype in DType


@SMALL
@given(st.data())
def test_tensor_values_match_type_and_ranges(data) -> None:
    t = data.draw(tensor_types())
    a = data.draw(tensor_values(t))
    assert a.shape == t.shape and a.dtype == t.dtype.np and a.flags.c_contiguous
    if t.dtype.is_float:
        assert np.all(np.isfinite(a)) and np.all(np.abs(a) <= 4.0)
        np.testing.assert_array_equal(round_to_dtype(a, t.dtype), a)  # bf16 values are bf16-exact
    elif t.dtype.is_int:
        assert np.all(np.abs(a) <= 20)


def test_special_values_appear() -> None:
    t = TensorType(DType.f32, (8,))
    s = settings(max_examples=500, database=None)
    for pred in (lambda a: np.isnan(a).any(), lambda a: np.isposinf(a).any(), lambda a: np.isneginf(a).any(),
                 lambda a: ((a == 0) & np.signbit(a)).any()):
        find(tensor_values(t, special=True), pred, settings=s)


@SMALL
@given(st.data())
def test_broadcastable_shapes_broadcast(data) -> None:
    a = data.draw(tensor_types(max_rank=4))
    b = data.draw(broadcastable(a))
    broadcast_shapes(a.shape, b.shape)
    assert b.dtype == a.dtype


# -- random graphs -----------------------------------------------------------------------
def test_every_op_has_a_generator_and_a_torch_rule() -> None:
    from minicomp.ir.ops import all_ops
    ops = set(all_ops()) - {"constant", "fused", "external"}  # external: only made by the frontend
    assert ops - set(GENERATORS) == set(), "ops random graphs cannot generate"
    assert ops - set(RULES) == set(), "ops without a PyTorch rule in torch_ref"


@pytest.mark.parametrize("op", default_ops())
def test_each_op_is_generated(op: str) -> None:
    """Every op's generator really produces nodes of it (its attrs pass type inference), in graphs
    drawn with ``ops=[op]`` (one draw over all ops would leave rare ops to chance)."""
    seen: set[str] = set()

    @settings(max_examples=25, database=None, deadline=None)
    @given(graphs(ops=[op], max_nodes=3, dtypes=(DType.f32, DType.i64, DType.bool)))
    def collect(case: Case) -> None:
        seen.update(n.op for n in case.graph.nodes)

    collect()
    assert op in seen, f"no {op!r} node in 25 random graphs drawn with ops=[{op!r}]"


@SMALL
@given(graphs(max_nodes=6, dtypes=tuple(DType)))
def test_random_graphs_are_valid_for_minicomp_and_pytorch(case: Case) -> None:
    from minicomp.ir import parse, verify
    verify(case.graph)
    assert len(case.inputs) == len(case.graph.inputs) and case.graph.outputs
    for a, v in zip(case.inputs, case.graph.inputs):
        assert a.shape == v.type.shape and a.dtype == v.type.dtype.np
    assert str(parse(str(case.graph))) == str(case.graph)
    outs = case.torch_fn()(*case.to_torch_inputs())
    assert len(outs) == len(case.graph.outputs)


# -- check_compile catches bugs ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AddBecomesSub:
    """A deliberately broken pass: rewrites every ``add`` into ``sub``."""

    name: str = "broken-add-to-sub"

    def run(self, graph: Graph, ctx) -> None:
        for node in list(graph.nodes):
            if node.op == "add":
                new = graph.add("sub", node.operands, {}, before=node)
                graph.replace_uses(node.result, new.result)
                graph.remove(node)


def _add_case() -> Case:
    g = Graph("f")
    x = g.add_input(TensorType(DType.f32, (2, 3)))
    y = g.add_input(TensorType(DType.f32, (3,)))
    s = g.add("add", [x, y]).result
    g.set_outputs([g.add("relu", [s]).result])
    return Case(g, [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.0, 2.0, 3.0], np.float32)])


def test_broken_pass_is_caught_and_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    case = _add_case()
    with pytest.raises(MismatchError) as info:
        check_compile(case, targets=("interpret",), passes=["dce", AddBecomesSub()])
    err = info.value
    assert err.layer == "pass broken-add-to-sub"
    msg = str(err)
    assert "add %" in msg and "f32[2,3]" in msg  # the graph as text IR
    assert "broken-add-to-sub" in msg and err.repro_path in msg
    assert os.path.dirname(err.repro_path) == str(tmp_path) and os.path.basename(err.repro_path).startswith("repro_")
    # The repro script rebuilds everything, the broken pass by reference to this module
    # (tests/test_toolkit_repro.py runs one in a fresh process).
    text = open(err.repro_path).read()
    assert "def torch_fn(a0, a1):" in text and "torch.add(a0, a1)" in text
    assert "'qualname': 'AddBecomesSub'" in text and "'module': 'test_testing_module'" in text


def test_backend_is_blamed_when_all_passes_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    real = check_mod.run_layer

    def off_by_one(graph, inputs, layer, passes=None, verify=True):
        outs = real(graph, inputs, "interpreter")
        return [o + 1 for o in outs] if layer == "cpu" else outs

    monkeypatch.setattr(check_mod, "run_layer", off_by_one)
    with pytest.raises(MismatchError) as info:
        check_compile(_add_case(), targets=("cpu",), passes=["dce"])
    assert info.value.layer == "backend cpu"
    assert "Mismatched elements" in info.value.detail


def test_repro_script_runs_and_reports(tmp_path, monkeypatch) -> None:
    """A repro for a real (interpreter-level) divergence: the script exits 1 and says where."""
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    case = _add_case()
    real_torch_fn = Case.torch_fn
    monkeypatch.setattr(Case, "torch_fn", lambda self: (lambda *a: tuple(t * 2 for t in real_torch_fn(self)(*a))))
    real_f64 = check_mod.torch_fn  # the float64 oracle's run is just as wrong, so it excuses nothing
    monkeypatch.setattr(check_mod, "torch_fn", lambda g, **kw: (lambda *a: tuple(t * 2 for t in real_f64(g, **kw)(*a))))
    with pytest.raises(MismatchError) as info:
        check_compile(case, targets=())
    assert info.value.layer == "interpreter"
    # The script embeds the *true* torch code, so with honest torch the interpreter agrees.
    run = subprocess.run([sys.executable, info.value.repro_path], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "interpreter: OK" in run.stdout


def drops_zero_signs(graph, passes):
    """A backend under test whose only bug is the sign of zero (every -0.0 comes out +0.0): module level,
    so a repro script can import it; registered by the test that uses it, not at import."""
    import minicomp

    def run(inputs):
        outs = [np.asarray(o) for o in minicomp.interpret(graph, *[t.numpy() for t in inputs])]
        return [np.where(o == 0, np.zeros_like(o), o) if o.dtype.kind == "f" else o for o in outs]
    return run


def test_repros_written_by_the_tests_reproduce_in_fresh_processes(tmp_path, monkeypatch) -> None:
    """The two kinds of repro these tests write for real bugs: a user's pass (carried by reference to this
    module) and a target registered by a test (re-registered by the script), here one that only flips the
    sign of zeros, which the differential oracle must see. Each runs in a fresh process and exits 1."""
    from minicomp.ir import parse
    from minicomp.testing import register_target
    from minicomp.testing.targets import unregister_target
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    with pytest.raises(MismatchError) as info:
        check_compile(_add_case(), targets=("interpret",), passes=["dce", AddBecomesSub()])
    paths = [info.value.repro_path]
    case = Case(parse("graph @g(%x: f32[3]) {\n  %y = neg %x : f32[3]\n  return %y\n}"),
                [np.array([0.0, 1.5, -0.0], np.float32)])
    register_target("drops-zero-signs", drops_zero_signs)
    try:
        with pytest.raises(MismatchError) as info:
            check_compile(case, targets=("drops-zero-signs",))
    finally:
        unregister_target("drops-zero-signs")
    assert info.value.layer == "backend drops-zero-signs" and "sign of zero" in info.value.detail
    paths.append(info.value.repro_path)
    for path in paths:
        run = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)
        assert run.returncode == 1 and "REPRODUCED" in run.stdout, (path, run.stdout + run.stderr)


@dataclasses.dataclass(frozen=True)
class SelfSubIsZero:
    """A deliberately broken pass: ``x - x -> 0`` on floats (wrong for NaN and infinities)."""

    name: str = "self-sub-is-zero"

    def run(self, graph: Graph, ctx) -> None:
        for node in list(graph.nodes):
            x = node.operands[0] if node.op == "sub" else None
            if x is not None and node.operands[1] is x and x.type.dtype.is_float:
                zero = graph.add("full", [], {"shape": x.type.shape, "value": 0.0, "dtype": x.type.dtype},
                                 before=node)
                graph.replace_uses(node.result, zero.result)
                graph.remove(node)


def test_shrinker_isolates_the_failing_node_of_a_large_graph() -> None:
    """A 30-node random graph with one wrong rewrite site deep inside shrinks to at most 3 op nodes (the
    isolate step: one node alone, its operands as inputs holding their values)."""
    from hypothesis import Phase, seed

    from minicomp.testing import find_failure, shrink_case
    drawn = []

    @seed(21)
    @settings(max_examples=1, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(graphs(min_nodes=30, max_nodes=30, special_values=True))
    def draw(c: Case) -> None:
        drawn.append(c)

    draw()
    case = drawn[0]
    g = case.graph
    x = next(v for v in g.inputs if v.type.dtype is DType.f32)
    y = g.add("sub", [g.add("exp", [x]).result] * 2).result
    g.set_outputs(list(g.outputs) + [g.add("add", [y, x]).result])
    case.inputs[g.inputs.index(x)] = np.full(x.type.shape, np.inf, np.float32)
    failure = find_failure(case, targets=(), passes=[SelfSubIsZero()])
    assert failure is not None and failure.layer == "pass self-sub-is-zero"
    small, again = shrink_case(case, failure, (), [SelfSubIsZero()], budget_s=30)
    assert again.key == failure.key
    assert sum(n.op != "constant" for n in small.graph.nodes) <= 3, small.ir()
    assert "sub" in [n.op for n in small.graph.nodes]


def test_type_disagreement_is_reported() -> None:
    g = Graph("f")
    x = g.add_input(TensorType(DType.f32, (2,)))
    g.set_outputs([x])
    case = Case(g, [np.zeros(2, np.float32)])
    expected = [torch.zeros(2, dtype=torch.float64)]
    assert "type inference disagrees" in check_mod.compare_outputs(expected, [case.inputs[0]], g)


def test_matching_outputs_pass_including_nan_and_negative_zero() -> None:
    g = Graph("f")
    x = g.add_input(TensorType(DType.f32, (3,)))
    g.set_outputs([g.add("neg", [x]).result])
    case = Case(g, [np.array([np.nan, 0.0, np.inf], np.float32)])
    check_compile(case, targets=())


def test_constants_travel_into_torch_code() -> None:
    g = Graph("f")
    x = g.add_input(TensorType(DType.bf16, (2,)))
    c = constant(g, np.array([1.5, -2.0], np.float32), DType.bf16)
    g.set_outputs([g.add("mul", [x, c]).result])
    out = Case(g, [np.array([2.0, 3.0], np.float32)]).torch_fn()(torch.tensor([2.0, 3.0], dtype=torch.bfloat16))
    assert out[0].dtype == torch.bfloat16 and out[0].tolist() == [3.0, -6.0]
