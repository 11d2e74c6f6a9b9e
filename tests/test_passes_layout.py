"""layout: transposes sink and cancel; permutes feeding matmuls stay views; conv decisions recorded."""
from __future__ import annotations

import textwrap
from pathlib import Path

import kernel_eval
import numpy as np
import pytest
import torch

from minicomp.ir import interpret, parse, verify
from minicomp.ir.lowering import lower_graph
from minicomp.passes import PassContext, PassManager, default_pipeline, get_pass
from minicomp.passes.layout import _refines


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
    # the size-1 batch dim is split off first (unflattened), then stored as (s, h, d)
    assert mm.result.type.shape == (1, 4, 8, 2) and mm.result.type.order == (0, 2, 1, 3)
    assert mm.result.type.strides == (64, 2, 8, 1)
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


# -- issue #4: multi-head attention's merge-heads at batch > 1 needs no copy kernel ---------------
def _attention(b: int, h: int, s: int, d: int) -> str:
    """Attention as the frontend emits it: heads split from one qkv tensor by slices of a permute,
    bmm on flattened ``[b*h, ., .]`` operands, then heads merged for the output projection."""
    e = h * d
    split = "\n".join(f"""
          %s{i} = slice %p5 {{dim=0, end={i + 1}, start={i}, step=1}} : f32[1,{b},{h},{s},{d}]
          %h{i} = reshape %s{i} {{shape=[{b},{h},{s},{d}]}} : f32[{b},{h},{s},{d}]""" for i in range(3))
    return f"""
        graph @g(%x: f32[{b},{s},{e}], %qkv: f32[{b},{s},{3 * e}], %wo: f32[{e},{e}], %bo: f32[{e}]) {{
          %q5 = reshape %qkv {{shape=[{b},{s},3,{h},{d}]}} : f32[{b},{s},3,{h},{d}]
          %p5 = permute %q5 {{dims=[2,0,3,1,4]}} : f32[3,{b},{h},{s},{d}]{split}
          %qf = reshape %h0 {{shape=[{b * h},{s},{d}]}} : f32[{b * h},{s},{d}]
          %kt = permute %h1 {{dims=[0,1,3,2]}} : f32[{b},{h},{d},{s}]
          %kf = reshape %kt {{shape=[{b * h},{d},{s}]}} : f32[{b * h},{d},{s}]
          %sc = matmul %qf, %kf : f32[{b * h},{s},{s}]
          %s4 = reshape %sc {{shape=[{b},{h},{s},{s}]}} : f32[{b},{h},{s},{s}]
          %p = softmax %s4 {{dim=3}} : f32[{b},{h},{s},{s}]
          %pf = reshape %p {{shape=[{b * h},{s},{s}]}} : f32[{b * h},{s},{s}]
          %vf = reshape %h2 {{shape=[{b * h},{s},{d}]}} : f32[{b * h},{s},{d}]
          %o = matmul %pf, %vf : f32[{b * h},{s},{d}]
          %o4 = reshape %o {{shape=[{b},{h},{s},{d}]}} : f32[{b},{h},{s},{d}]
          %t = permute %o4 {{dims=[0,2,1,3]}} : f32[{b},{s},{h},{d}]
          %m = reshape %t {{shape=[{b * s},{e}]}} : f32[{b * s},{e}]
          %y = linear %m, %wo, %bo : f32[{b * s},{e}]
          %y3 = reshape %y {{shape=[{b},{s},{e}]}} : f32[{b},{s},{e}]
          %r = add %x, %y3 : f32[{b},{s},{e}]
          return %r
        }}"""


@pytest.mark.parametrize("b,h,s,d", [(1, 2, 4, 3), (2, 2, 4, 3), (3, 4, 5, 2), (8, 4, 16, 8), (4, 2, 1, 3)])
def test_merge_heads_at_any_batch_lowers_with_no_copy_kernel(b, h, s, d):
    text = _attention(b, h, s, d)
    g = PassManager([get_pass("canonicalize")]).run(parse(textwrap.dedent(text)), PassContext())
    text = str(g)  # composed views, as the layout pass sees them in the default pipeline
    out, ctx = _run(text)  # layout alone: bit-identical to the input graph
    subjects = [x.subject for x in ctx.decisions if x.kind == "layout"]
    assert any(x.startswith("matmul %o unflattened to") for x in subjects), subjects
    (mm,) = [n for n in out.nodes if n.op == "matmul" and n.result.type.order is not None]
    assert mm.result.type.shape == (b, h, s, d) and mm.result.type.order == (0, 2, 1, 3)
    assert any(f"%{mm.result.name} stored in order [0, 2, 1, 3]" in x for x in subjects), subjects

    g = parse(textwrap.dedent(text))
    ref = interpret(g, *_inputs(g))
    opt = PassManager(default_pipeline()).run(g, PassContext())
    notes: list[str] = []
    program = lower_graph(opt, notes=notes)
    kinds = [k.kind for k in program.kernels]
    assert kinds == ["matmul", "reduction", "matmul", "matmul"] and "copy" not in kinds, (kinds, notes)
    assert not any("copy kernel" in n for n in notes), notes
    got = kernel_eval.run_program(program, _inputs(g))
    torch.testing.assert_close(torch.from_numpy(got[0]), torch.from_numpy(ref[0]))


def _inputs(g):
    rng = np.random.default_rng(3)
    return [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]


def test_reshape_that_merges_batch_dims_is_not_unflattened():
    # [2,3,4,5] @ [2,3,5,6] -> reshape to [6,4,6] merges batch dims: pushing that merge into the
    # operands could turn a strided view into a copy, so the matmul keeps its shape.
    out, ctx = _run("""
        graph @g(%a: f32[2,3,4,5], %b: f32[3,2,5,6]) {
          %bt = permute %b {dims=[1,0,2,3]} : f32[2,3,5,6]
          %m = matmul %a, %bt : f32[2,3,4,6]
          %u = reshape %m {shape=[6,4,6]} : f32[6,4,6]
          return %u
        }""")
    assert "matmul %a, %bt : f32[2,3,4,6]" in str(out)
    assert not any("unflattened" in x.subject for x in ctx.decisions)


@pytest.mark.parametrize("fine,coarse,want", [
    ((2, 3), (6,), True), ((1, 4), (4,), True), ((4, 1), (4,), True), ((2, 2), (4, 1), True),
    ((1, 1, 6), (6,), True), ((6,), (2, 3), False), ((2, 3), (3, 2), False), ((4,), (2, 2), False)])
def test_refines(fine, coarse, want):
    assert _refines(fine, coarse) is want


def _block_example():
    from minicomp.cli import load_model_file
    return load_model_file(str(Path(__file__).resolve().parent.parent / "examples" / "transformer_block.py"))


def test_transformer_block_compiles_with_no_copy_at_several_batch_sizes():
    import minicomp
    ex = _block_example()
    model = ex.model()
    for shape in [(2, 16), (3, 50), (8, 32)]:
        (x,) = ex.example_inputs(*shape)
        cm = minicomp.compile(model, (x,), cache=False)
        kinds = [k.kind for k in cm.kernels]
        assert len(kinds) <= 9 and "copy" not in kinds, (shape, kinds, cm.explain())
        assert "stored in order [0, 2, 1, 3]" in cm.explain()
        with torch.no_grad():
            torch.testing.assert_close(cm(x), model(x))



def _linears(kn_weight):
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[8,4]) {
          %w = constant {dtype=f32, value=dense<[1.5,-2,0.25,3,0.5,1,-1,2,-0.0,4,1,1] : f32[3,4]>} : f32[3,4]
          %b = constant {dtype=f32, value=dense<[1,2,3] : f32[3]>} : f32[3]
          %w2 = constant {dtype=f32, value=dense<[1,0,2,0,1,0,3,0,1] : f32[3,3]>} : f32[3,3]
          %y = linear %x, %w, %b : f32[8,3]
          %z = linear %y, %w2 : f32[8,3]
          %u = linear %x, %w : f32[8,3]
          %r = add %z, %u : f32[8,3]
          return %r
        }"""))
    ctx = PassContext(options={} if kn_weight is None else {"kn_weight": kn_weight})
    out = PassManager([get_pass("layout")]).run(g.copy(), ctx)
    verify(out)
    return g, out, ctx


def test_constant_linear_weights_stored_kn_where_the_backend_asks():
    asked = []

    def kn_weight(rows, m, n, k, dtype):
        asked.append((rows, m, n, k, dtype.name))
        return k == 4  # %w (k = 4) yes, %w2 (k = 3) no
    g, out, ctx = _linears(kn_weight)
    assert asked == [(8, 8, 3, 4, "f32"), (8, 8, 3, 3, "f32"), (8, 8, 3, 4, "f32")]
    (wt,) = [n for n in out.nodes if n.op == "constant" and n.result.name == "w_kn"]
    np.testing.assert_array_equal(wt.attrs["value"], g.nodes[0].attrs["value"].T)
    assert wt.attrs["value"].flags.c_contiguous and not wt.attrs["value"].flags.writeable
    views = [n for n in out.nodes if n.op == "permute"]
    assert len(views) == 1 and views[0].operands[0] is wt.result  # one [k, n] copy serves both users
    users = [n for n in out.nodes if n.op == "linear"]
    assert [u.operands[1].producer.op for u in users] == ["permute", "constant", "permute"]
    assert sum("stored [k, n]" in d.subject for d in ctx.decisions) == 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    x[0, :2] = [np.nan, -0.0]
    np.testing.assert_array_equal(interpret(out, x)[0], interpret(g, x)[0])  # bit-identical


def test_weights_keep_their_layout_without_a_backend_preference():
    g, out, ctx = _linears(None)
    assert str(out) == str(g) and not any("stored [k, n]" in d.subject for d in ctx.decisions)


def test_cpu_block_reads_kn_weights_with_row_tiles():
    import minicomp
    ex = _block_example()
    model = ex.model()
    (x,) = ex.example_inputs(1, 64)
    cm = minicomp.compile(model, (x,), cache=False, freeze=True)  # constant weights: stored [k, n]
    explain = cm.explain()
    for w in ("qkv_weight", "proj_weight", "fc1_weight", "fc2_weight"):
        assert f"weight %{w} of linear" in explain, explain
    src = cm.source("llvm-unopt")
    assert src.count(".rtile\"(") >= 4 and ".dtile" not in src
    with torch.no_grad():
        torch.testing.assert_close(cm(x), model(x))
