"""layout: transposes sink and cancel; permutes feeding matmuls stay views; conv decisions recorded."""
from __future__ import annotations

import textwrap

import numpy as np

from minicomp.ir import interpret, parse, verify
from minicomp.passes import PassContext, PassManager, default_pipeline, get_pass


def _run(text: str, seed: int = 0):
    g = parse(textwrap.dedent(text))
    ctx = PassContext()
    out = PassManager([get_pass("layout")]).run(g.copy(), ctx)
    verify(out)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    xs[0].reshape(-1)[:3] = [np.nan, -0.0, np.inf]
    for w, o in zip(interpret(g, *xs), interpret(out, *xs)):
        np.testing.assert_array_equal(o, w)
    return out, ctx


def test_transposes_sink_and_cancel():
    out, ctx = _run("""
        graph @g(%x: f32[3,4], %y: f32[3,4]) {
          %a = permute %x {dims=[1,0]} : f32[4,3]
          %b = permute %y {dims=[1,0]} : f32[4,3]
          %c = add %a, %b : f32[4,3]
          %d = exp %c : f32[4,3]
          %e = permute %d {dims=[1,0]} : f32[3,4]
          return %e
        }""")
    assert "permute" not in str(out)
    assert any(d.kind == "layout" and "sunk" in d.subject for d in ctx.decisions)


def test_matmul_transposed_operand_stays_a_view_in_the_kernel():
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[3,4], %w: f32[5,4]) {
          %t = permute %w {dims=[1,0]} : f32[4,5]
          %y = matmul %x, %t : f32[3,5]
          return %y
        }"""))
    ctx = PassContext()
    out = PassManager(default_pipeline()).run(g, ctx)
    (node,) = [n for n in out.nodes if n.op not in ("constant",)]
    assert node.op == "fused" and [b.op for b in node.attrs["body"].nodes] == ["permute", "matmul"]
    assert "copy" not in str(out)
    assert any("folded into the matmul" in d.why for d in ctx.decisions)


def test_conv_layout_decision_is_recorded():
    _, ctx = _run("""
        graph @g(%x: f32[1,2,5,5], %w: f32[3,2,3,3]) {
          %c = conv2d %x, %w : f32[1,3,3,3]
          return %c
        }""")
    assert any("kept NCHW" in d.subject for d in ctx.decisions)


def test_flattened_linear_is_unflattened_so_the_epilogue_fuses():
    text = """
        graph @g(%x: f32[2,3,4], %w: f32[5,4], %b: f32[5]) {
          %f = reshape %x {shape=[6,4]} : f32[6,4]
          %l = linear %f, %w, %b : f32[6,5]
          %u = reshape %l {shape=[2,3,5]} : f32[2,3,5]
          %r = relu %u : f32[2,3,5]
          return %r
        }"""
    out, ctx = _run(text)
    assert "reshape" not in str(out) and "linear %x, %w, %b : f32[2,3,5]" in str(out)
    fused = PassManager(default_pipeline()).run(parse(textwrap.dedent(text)), PassContext())
    (node,) = fused.nodes
    assert node.attrs["kind"] == "matmul" and [b.op for b in node.attrs["body"].nodes] == ["linear", "relu"]


def test_flattened_bmm_is_unflattened():
    out, _ = _run("""
        graph @g(%a: f32[2,3,4,5], %b: f32[2,3,5,6]) {
          %fa = reshape %a {shape=[6,4,5]} : f32[6,4,5]
          %fb = reshape %b {shape=[6,5,6]} : f32[6,5,6]
          %m = matmul %fa, %fb : f32[6,4,6]
          %u = reshape %m {shape=[2,3,4,6]} : f32[2,3,4,6]
          return %u
        }""")
    assert "reshape" not in str(out)


def test_merge_heads_result_is_stored_permuted():
    out, ctx = _run("""
        graph @g(%p: f32[4,8,8], %v: f32[4,8,2], %w: f32[5,8]) {
          %o = matmul %p, %v : f32[4,8,2]
          %o4 = reshape %o {shape=[1,4,8,2]} : f32[1,4,8,2]
          %t = permute %o4 {dims=[0,2,1,3]} : f32[1,8,4,2]
          %m = reshape %t {shape=[8,8]} : f32[8,8]
          %y = linear %m, %w : f32[8,5]
          return %y
        }""")
    (mm,) = [n for n in out.nodes if n.op == "matmul"]
    assert mm.result.type.order == (1, 0, 2) and mm.result.type.strides == (2, 8, 1)
    assert any("stored in order" in d.subject for d in ctx.decisions)


CONV_CHAIN = """
    graph @g(%x: f32[2,3,6,6], %w: f32[4,3,3,3], %w2: f32[4,4,3,3], %b: f32[4]) {
      %c = conv2d %x, %w, %b {padding=[1,1]} : f32[2,4,6,6]
      %r = relu %c : f32[2,4,6,6]
      %p = max_pool2d %r {kernel=[2,2], stride=[2,2]} : f32[2,4,3,3]
      %d = conv2d %p, %w2 {padding=[1,1]} : f32[2,4,3,3]
      %s = add %d, %p : f32[2,4,3,3]
      %t = relu %s : f32[2,4,3,3]
      %f = reshape %t {shape=[2,36]} : f32[2,36]
      return %f, %d
    }"""


def _run_with(text: str, **options):
    g = parse(textwrap.dedent(text))
    ctx = PassContext(options=options)
    out = PassManager([get_pass("layout")]).run(g.copy(), ctx)
    verify(out)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    xs[0].reshape(-1)[:3] = [np.nan, -0.0, np.inf]
    for w, o in zip(interpret(g, *xs), interpret(out, *xs)):
        np.testing.assert_array_equal(o, w)
    return out, ctx


def test_channels_last_assigned_and_propagated_through_elementwise():
    out, ctx = _run_with(CONV_CHAIN, channels_last=True)
    order = {n.results[0].name: n.results[0].type.order for n in out.nodes}
    # conv -> relu -> pool: NHWC; a graph output (%d), values read by a reshape (%t) or by
    # an elementwise op whose result is not NHWC (%s reads %p) keep NCHW.
    assert order["c"] == order["r"] == (0, 2, 3, 1)
    assert order["p"] is None and order["d"] is None and order["s"] is None and order["t"] is None
    assert [n.op for n in out.nodes if n.op in ("permute", "copy")] == []
    subjects = [d.subject for d in ctx.decisions if d.kind == "layout"]
    assert "channels-last (NHWC) for conv2d %c" in subjects and "kept NCHW for conv2d %d" in subjects
    assert "kept NCHW for max_pool2d %p" in subjects
    assert "channels-last propagated through relu %r" in subjects


def test_channels_last_default_keeps_nchw_with_a_reason():
    out, ctx = _run_with(CONV_CHAIN)
    assert all(n.results[0].type.order is None for n in out.nodes)
    why = [d.why for d in ctx.decisions if d.subject.startswith("kept NCHW")]
    assert len(why) == 3 and all("padded NCHW copy" in w for w in why)
    _, gctx = _run_with(CONV_CHAIN, target="gpu")
    assert any("Triton" in d.why for d in gctx.decisions if d.subject.startswith("kept NCHW"))


def test_channels_last_option_is_checked():
    import pytest
    with pytest.raises(ValueError, match="channels_last"):
        _run_with(CONV_CHAIN, channels_last="yes")
