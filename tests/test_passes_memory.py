"""Memory planning: live buffers never overlap, reuse and in-place updates happen, arena <= total."""
from __future__ import annotations

import textwrap

import pytest

from minicomp.ir import parse
from minicomp.passes import PassContext, PassManager, default_pipeline, plan_memory
from minicomp.passes.manager import is_kernel, is_view

CHAIN = textwrap.dedent("""
    graph @g(%x: f32[64,64], %w: f32[64,64]) {
      %a = matmul %x, %w : f32[64,64]
      %b = sum %a {dims=[1], keepdim=true} : f32[64,1]
      %c = matmul %a, %w : f32[64,64]
      %d = matmul %c, %w : f32[64,64]
      %e = matmul %d, %w : f32[64,64]
      %f = add %e, %b : f32[64,64]
      return %f
    }""")


def check_plan(g, plan):
    """No two intermediates whose live ranges overlap share bytes (except declared in-place pairs)."""
    kernels = [n for n in g.nodes if is_kernel(n)]
    outs = {id(v) for v in g.outputs}

    def root(v):
        while v.producer is not None and is_view(v.producer):
            v = v.producer.operands[0]
        return v

    spans = {}
    for i, n in enumerate(kernels):
        for r in n.results:
            if id(r) not in outs:
                spans[r.name] = [i, i, r.type.nbytes]
        for o in n.operands:
            if root(o).name in spans:
                spans[root(o).name][1] = i
    assert set(spans) == set(plan["offsets"])
    for a, (s1, e1, n1) in spans.items():
        assert plan["offsets"][a] % plan["alignment"] == 0
        assert plan["offsets"][a] + n1 <= plan["arena_bytes"]
        for b, (s2, e2, n2) in spans.items():
            if a >= b or plan["inplace"].get(a) == b or plan["inplace"].get(b) == a:
                continue
            if s1 <= e2 and s2 <= e1:
                oa, ob = plan["offsets"][a], plan["offsets"][b]
                assert oa + n1 <= ob or ob + n2 <= oa, (a, b)
    assert plan["arena_bytes"] <= plan["total_bytes"]


def test_buffers_are_reused():
    g = parse(CHAIN)
    plan = plan_memory(g)
    check_plan(g, plan)
    assert plan["total_bytes"] == 4 * 64 * 64 * 4 + 256
    assert plan["arena_bytes"] < plan["total_bytes"]


def test_inplace_elementwise():
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[16]) {
          %a = exp %x : f32[16]
          %b = neg %a : f32[16]
          %c = mul %b, %b : f32[16]
          return %c
        }"""))
    plan = plan_memory(g)
    check_plan(g, plan)
    assert plan["inplace"] == {"b": "a"} and plan["offsets"]["b"] == plan["offsets"]["a"]
    assert plan_memory(g, inplace=False)["inplace"] == {}


def test_no_inplace_through_a_view():
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[4,4]) {
          %a = exp %x : f32[4,4]
          %t = permute %a {dims=[1,0]} : f32[4,4]
          %b = neg %t : f32[4,4]
          %c = mul %b, %b : f32[4,4]
          return %c
        }"""))
    plan = plan_memory(g)
    check_plan(g, plan)
    assert "b" not in plan["inplace"]


def test_pass_stores_plan_in_graph_meta_and_explains():
    ctx = PassContext()
    g = PassManager(default_pipeline()).run(parse(CHAIN), ctx)
    plan = g.meta["memory_plan"]
    check_plan(g, plan)
    assert any(d.kind == "memory" for d in ctx.decisions)


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_have_valid_plans(seed):
    from test_passes_random import random_graph
    g = PassManager(default_pipeline()).run(random_graph(seed), PassContext())
    check_plan(g, g.meta["memory_plan"])
