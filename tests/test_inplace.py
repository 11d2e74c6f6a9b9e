"""In-place updates: the plan (text IR in, plan out) for each legality rule, the lowering's
check on the kernel, and compiled programs with in-place calls agreeing with eager PyTorch."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import minicomp
from minicomp.ir import Graph, interpret, parse
from minicomp.ir.lowering import lower_graph
from minicomp.ir.lowering.inplace import call_aliases, inplace_problem
from minicomp.passes import PassContext, PassManager, default_pipeline, get_pass, plan_memory
from test_passes_memory import check_plan
from test_passes_random import random_graph


def plan_of(text: str, **kw) -> dict:
    g = parse(textwrap.dedent(text))
    plan = plan_memory(g, **kw)
    check_plan(g, plan)
    return plan


def refused(plan: dict, res: str) -> str:
    return " ".join(why for r, _, why in plan["inplace_refused"] if r == res)


# -- the plan: one test per legality rule ---------------------------------------------------------
def test_elementwise_result_overwrites_a_dying_operand():
    plan = plan_of("""
        graph @g(%x: f32[16]) {
          %a = exp %x : f32[16]
          %b = neg %a : f32[16]
          %c = mul %b, %b : f32[16]
          return %c
        }""")
    assert plan["inplace"] == {"b": "a"} and plan["offsets"]["b"] == plan["offsets"]["a"]
    assert plan_of("graph @g(%x: f32[16]) { %a = exp %x : f32[16]  %b = neg %a : f32[16]  "
                   "%c = mul %b, %b : f32[16]  return %c }", inplace=False)["inplace"] == {}


def test_operand_still_live_is_not_overwritten():
    plan = plan_of("""
        graph @g(%x: f32[16]) {
          %a = exp %x : f32[16]
          %b = neg %a : f32[16]
          %c = mul %b, %a : f32[16]
          %d = tanh %c : f32[16]
          return %d
        }""")
    assert "b" not in plan["inplace"]  # %a is read again by %c
    assert plan["inplace"] == {"c": "b"}  # both die at %c; %d is an output (the caller's buffer)


def test_broadcast_operand_is_not_overwritten():
    plan = plan_of("""
        graph @g(%x: f32[4,1], %y: f32[4,4]) {
          %a = exp %x : f32[4,1]
          %b = add %a, %y : f32[4,4]
          %c = neg %b : f32[4,4]
          return %c
        }""")
    assert "b" not in plan["inplace"] and "broadcast" in refused(plan, "b")


def test_different_element_size_is_refused_same_size_cast_is_not():
    plan = plan_of("""
        graph @g(%x: f32[8]) {
          %a = exp %x : f32[8]
          %b = cast %a {dtype=f64} : f64[8]
          %c = neg %b : f64[8]
          return %c
        }""")
    assert "b" not in plan["inplace"] and "element sizes" in refused(plan, "b")
    plan = plan_of("""
        graph @g(%x: f32[8]) {
          %a = exp %x : f32[8]
          %b = cast %a {dtype=i32} : i32[8]
          %c = neg %b : i32[8]
          return %c
        }""")
    assert plan["inplace"] == {"b": "a"}


def test_view_read_and_second_read_at_another_index_are_refused():
    plan = plan_of("""
        graph @g(%x: f32[4,4]) {
          %a = exp %x : f32[4,4]
          %t = permute %a {dims=[1,0]} : f32[4,4]
          %b = neg %t : f32[4,4]
          %c = mul %b, %b : f32[4,4]
          return %c
        }""")
    assert "b" not in plan["inplace"] and "view" in refused(plan, "b")
    plan = plan_of("""
        graph @g(%x: f32[4,4]) {
          %a = exp %x : f32[4,4]
          %t = permute %a {dims=[1,0]} : f32[4,4]
          %b = add %a, %t : f32[4,4]
          %c = neg %b : f32[4,4]
          return %c
        }""")
    assert "b" not in plan["inplace"] and "view" in refused(plan, "b")


def test_layouts_must_match():
    plan = plan_of("""
        graph @g(%x: f32[1,2,3,3]) {
          %a = exp %x : f32[1,2,3,3]{0,2,3,1}
          %b = neg %a : f32[1,2,3,3]
          %c = neg %b : f32[1,2,3,3]
          return %c
        }""")
    assert "b" not in plan["inplace"] and "another index" in refused(plan, "b")  # the layouts differ


def test_graph_inputs_outputs_and_constants_are_never_overwritten():
    plan = plan_of("""
        graph @g(%x: f32[8]) {
          %k = constant {dtype=f32, value=dense<[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0] : f32[8]>} : f32[8]
          %a = exp %x : f32[8]
          %b = add %a, %k : f32[8]
          %c = neg %b : f32[8]
          return %c, %a
        }""")
    # %x is an input, %k a constant, %a and %c outputs (the caller's buffers): only %b is arena.
    assert plan["inplace"] == {} and set(plan["offsets"]) == {"b"}


def _fused_plan(body_ops):
    """%a = exp(x) in the arena, then a fused pointwise node over (a, y) built by ``body_ops``."""
    from minicomp.ir import DType, TensorType
    g = Graph("g")
    x = g.add_input(TensorType(DType.f32, (4, 4)), "x")
    y = g.add_input(TensorType(DType.f32, (4, 4)), "y")
    a = g.add("exp", [x]).result
    body = Graph("body")
    ins = [body.add_input(a.type), body.add_input(y.type)]
    body.set_outputs([body_ops(body, ins)])
    f = g.add("fused", [a, y], {"kind": "pointwise", "body": body}).result
    g.set_outputs([g.add("neg", [f]).result])
    return plan_memory(g), f.name


def test_fused_body_reading_the_operand_elementwise_is_in_place():
    plan, f = _fused_plan(lambda b, i: b.add("mul", [b.add("tanh", [i[0]]).result, i[1]]).result)
    assert plan["inplace"].get(f) is not None


def test_fused_body_with_a_movement_op_on_the_operand_is_refused():
    def body(b, i):
        t = b.add("permute", [i[0]], {"dims": (1, 0)}).result
        return b.add("add", [t, i[1]]).result
    plan, f = _fused_plan(body)
    assert f not in plan["inplace"] and "another index" in refused(plan, f)
    # a movement op on the *other* operand does not matter
    plan, f = _fused_plan(lambda b, i: b.add("add", [i[0], b.add("permute", [i[1]], {"dims": (1, 0)}).result]).result)
    assert plan["inplace"].get(f) is not None


def test_inplace_decisions_are_recorded_for_explain():
    from minicomp.passes.explain import explain
    ctx = PassContext()
    PassManager([get_pass("plan-memory")]).run(parse(textwrap.dedent("""
        graph @g(%x: f32[4,1], %y: f32[4,4]) {
          %a = exp %y : f32[4,4]
          %b = neg %a : f32[4,4]
          %s = exp %x : f32[4,1]
          %c = add %s, %b : f32[4,4]
          %d = tanh %c : f32[4,4]
          return %d
        }""")), ctx)
    text = explain(ctx)
    assert "In-place updates:" in text and "%b overwrites %a" in text and "%c not written over %s" in text


# -- the lowering checks each pair on the lowered kernel ---------------------------------------------
CHAIN = """
    graph @g(%x: f32[8,8]) {
      %a = exp %x : f32[8,8]
      %b = neg %a : f32[8,8]
      %c = tanh %b : f32[8,8]
      return %c
    }"""


def test_lowering_keeps_a_legal_pair_and_backends_see_it():
    g = parse(textwrap.dedent(CHAIN))
    PassManager([get_pass("plan-memory")]).run(g, PassContext())
    p = lower_graph(g)
    arena = [s for s in p.slots if s.kind == "arena"]
    assert len(arena) == 2 and arena[0].index == arena[1].index and p.arena_bytes == 256
    assert [call_aliases(p, k) for k in range(len(p.kernels))] == [{}, {0: 0}, {}]


def test_lowering_refuses_an_illegal_pair_from_the_plan():
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[8,8]) {
          %a = exp %x : f32[8,8]
          %t = permute %a {dims=[1,0]} : f32[8,8]
          %b = neg %t : f32[8,8]
          %c = tanh %b : f32[8,8]
          return %c
        }"""))
    g.meta = {"memory_plan": {"offsets": {"a": 0, "b": 0}}}  # b over a although b reads a transposed
    notes: list[str] = []
    p = lower_graph(g, notes=notes)
    offs = [s.index for s in p.slots if s.kind == "arena"]
    assert offs[0] != offs[1] and any("another index" in n for n in notes)
    assert all(call_aliases(p, k) == {} for k in range(len(p.kernels)))
    k = p.kernels[p.calls[1].kernel]
    assert inplace_problem(k, 0, 0) == "the input is read at another index than the output is written"


def test_llvm_refuses_aliases_the_kernel_cannot_honour():
    from llvmlite import ir as llir
    from minicomp.codegen.llvm.loops import emit_loop_kernel
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[4,4]) {
          %t = permute %x {dims=[1,0]} : f32[4,4]
          %b = neg %t : f32[4,4]
          return %b
        }"""))
    k = lower_graph(g).kernels[0]
    with pytest.raises(ValueError, match="cannot overwrite input 0 in place"):
        emit_loop_kernel(llir.Module(), "k", k, True, 1, {0: 0})


def test_llvm_in_place_kernel_reads_through_the_output_pointer():
    from minicomp.codegen.llvm.entry import build_module
    g = parse(textwrap.dedent(CHAIN))
    PassManager([get_pass("plan-memory")]).run(g, PassContext())
    p = lower_graph(g)
    module, symbols = build_module(p, "main", 1)
    body = str(module.get_global(symbols[1] + ".body"))
    head, code = body.split("{", 1)
    assert 'ptr noalias %".1", ptr noalias %".2"' in head  # noalias holds: %.1 is never dereferenced
    assert '%".1"' not in code and code.count('ptr %".2"') == 2  # one load, one store, same pointer


# -- compiled models with in-place plans agree with eager ------------------------------------------------
def _special(shape, dtype):
    x = torch.randn(shape, dtype=torch.float64) * 3
    flat = x.view(-1)
    flat[: min(4, flat.numel())] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0])[: min(4, flat.numel())]
    return x.to(dtype)


def f_chain(x, y):
    a = torch.exp(x) * 0.5
    b = torch.tanh(a) - y
    c = torch.where(b > 0, b, -b) + 1
    return torch.sigmoid(c) * c


def f_cast(x, y):
    a = torch.abs(x) + y
    return (a.to(torch.int32) * 3).to(torch.float32) - a.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fuse", [False, True])
def test_compiled_in_place_matches_eager(dtype, fuse):
    x = _special((6, 5), dtype)
    y = _special((1, 5), dtype)  # size-1 broadcasting
    cm = minicomp.compile(f_chain, [x, y], target="cpu", cache=False, fuse=fuse)
    plan = cm.graph.meta["memory_plan"]
    if not fuse:
        assert plan["inplace"], plan
        p = cm.program
        assert any(call_aliases(p, k) for k in range(len(p.kernels)))
    torch.testing.assert_close(cm(x, y), f_chain(x, y), equal_nan=True)
    xt = _special((5, 6), dtype).t()  # non-contiguous input
    torch.testing.assert_close(cm(xt, y), f_chain(xt, y), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_compiled_in_place_matches_eager_ints(dtype):
    def f(x, y):
        a = x * 3 + y
        b = torch.abs(a) - 1
        return torch.maximum(b, y) * 2
    x = torch.randint(-100, 100, (7, 9), dtype=dtype)
    y = torch.randint(-100, 100, (1, 9), dtype=dtype)
    cm = minicomp.compile(f, [x, y], target="cpu", cache=False, fuse=False)
    assert cm.graph.meta["memory_plan"]["inplace"]
    torch.testing.assert_close(cm(x, y), f(x, y))


def test_compiled_bool_and_same_size_cast_in_place():
    x = _special((4, 3), torch.float32)
    y = torch.randn(4, 3)
    cm = minicomp.compile(f_cast, [x, y], target="cpu", cache=False, fuse=False)
    torch.testing.assert_close(cm(x, y), f_cast(x, y), equal_nan=True)

    def g(x):
        return torch.logical_not(x > 0) & (x < 5)
    cm = minicomp.compile(g, [x], target="cpu", cache=False, fuse=False)
    torch.testing.assert_close(cm(x), g(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_large_in_place_kernels_split_across_threads(threads):
    x = _special((512, 1024), torch.float32)
    y = torch.randn(1, 1024)
    cm = minicomp.compile(f_chain, [x, y], target="cpu", cache=False, fuse=False, threads=threads)
    assert any(call_aliases(cm.program, k) for k in range(len(cm.program.kernels)))
    torch.testing.assert_close(cm(x, y), f_chain(x, y), equal_nan=True)


# -- property: on random graphs, compiled programs with in-place plans keep the interpreter's values -------
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fuse=st.booleans())
def test_random_graphs_with_in_place_plans_compile_correctly(seed, fuse):
    g = random_graph(seed)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    for a in inputs:
        a.reshape(-1)[: 2] = [np.nan, -np.inf][: a.size]
    want = interpret(g, *inputs)
    opt = PassManager(default_pipeline("cpu", {"fuse": fuse})).run(g.copy(), PassContext(options={"fuse": fuse}))
    check_plan(opt, opt.meta["memory_plan"])
    cm = minicomp.compile(opt, [torch.from_numpy(a) for a in inputs], target="cpu", cache=False)
    got = cm(*[torch.from_numpy(a) for a in inputs])
    got = got if isinstance(got, (list, tuple)) else [got]
    for w, o in zip(want, got):
        torch.testing.assert_close(o, torch.from_numpy(np.asarray(w)), equal_nan=True)
