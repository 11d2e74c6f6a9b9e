"""Fusion: kernel-count targets on the example models, body shapes, values, explanations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from minicomp.ir import DType, Graph, TensorType, constant, interpret, parse, verify
from minicomp.passes import PassContext, PassManager, default_pipeline, explain, get_pass, kernel_count
from minicomp.ir.lowering import lower_graph
from minicomp.ir.ops import Role

F32 = DType.f32


def _is_view(node) -> bool:
    return node.opdef.role is Role.VIEW


def assert_supported_bodies(g: Graph) -> None:
    """Every fused node has one of the body shapes the lowering supports (see passes/fusion.py)."""
    for n in g.nodes:
        if n.op != "fused":
            continue
        body, kind = n.attrs["body"], n.attrs["kind"]
        assert [v.type for v in body.inputs] == [o.type for o in n.operands]
        assert all(o.producer is None or not _is_view(o.producer) for o in n.operands), "view operand"
        roles = [(b.op, b.opdef.role) for b in body.nodes if not _is_view(b)]
        reds = [op for op, r in roles if r is Role.REDUCTION]
        cons = [op for op, r in roles if r is Role.CONTRACTION]
        others = [op for op, r in roles if r not in (Role.ELEMENTWISE, Role.REDUCTION, Role.CONTRACTION)]
        if kind == "pointwise":
            assert not reds and not cons and not others, roles
            assert len({o.type.shape for o in body.outputs}) == 1
        elif kind == "reduction":
            assert len(reds) == 1 and not cons and not others, roles
        elif kind in ("matmul", "conv", "pool"):
            assert len(cons) == 1 and not reds and not others, roles
            root = next(b for b in body.nodes if b.opdef.role is Role.CONTRACTION)
            assert root.opdef.kernel_kind == kind
            for o in root.operands:  # contraction operands: body inputs, maybe through views
                while o.producer is not None and _is_view(o.producer):
                    o = o.producer.operands[0]
                assert o.producer is None
            assert all(b.results[0].type.shape == root.results[0].type.shape for b in body.nodes
                       if b.opdef.role is Role.ELEMENTWISE and _after(body, root, b))
        elif kind == "copy":
            assert [b.op for b in body.nodes if not _is_view(b)] == ["copy"]
        else:
            raise AssertionError(f"unknown kind {kind}")


def _after(body: Graph, root, node) -> bool:
    """Does ``node`` depend on ``root``?"""
    seen = {id(r) for r in root.results}
    for b in body.nodes:
        if any(id(o) in seen for o in b.operands):
            seen.update(id(r) for r in b.results)
        if b is node:
            return any(id(r) in seen for r in b.results)
    return False


def _w(g: Graph, rng, *shape) -> object:
    return constant(g, (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(np.float32))


def mlp() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input(TensorType(F32, (8, 256)), "x")
    h = g.add("linear", [x, _w(g, rng, 1024, 256), _w(g, rng, 1024)]).result
    h = g.add("gelu", [h]).result
    g.set_outputs([g.add("linear", [h, _w(g, rng, 256, 1024), _w(g, rng, 256)]).result])
    return g


def lenet() -> Graph:
    rng = np.random.default_rng(1)
    g = Graph("lenet")
    x = g.add_input(TensorType(F32, (2, 1, 32, 32)), "x")
    h = g.add("relu", [g.add("conv2d", [x, _w(g, rng, 6, 1, 5, 5), _w(g, rng, 6)]).result]).result
    h = g.add("max_pool2d", [h], {"kernel": (2, 2), "stride": (2, 2)}).result
    h = g.add("relu", [g.add("conv2d", [h, _w(g, rng, 16, 6, 5, 5), _w(g, rng, 16)]).result]).result
    h = g.add("max_pool2d", [h], {"kernel": (2, 2), "stride": (2, 2)}).result
    h = g.add("reshape", [h], {"shape": (2, 400)}).result
    h = g.add("relu", [g.add("linear", [h, _w(g, rng, 120, 400), _w(g, rng, 120)]).result]).result
    h = g.add("relu", [g.add("linear", [h, _w(g, rng, 84, 120), _w(g, rng, 84)]).result]).result
    g.set_outputs([g.add("linear", [h, _w(g, rng, 10, 84), _w(g, rng, 10)]).result])
    return g


def transformer_block(B=2, T=16, d=128, heads=4, hidden=512) -> Graph:
    rng = np.random.default_rng(2)
    g = Graph("block")
    x = g.add_input(TensorType(F32, (B, T, d)), "x")
    dh = d // heads

    def ln(v):
        ones, zeros = constant(g, np.ones(d, np.float32)), constant(g, np.zeros(d, np.float32))
        return g.add("layer_norm", [v, ones, zeros], {"normalized_ndim": 1}).result

    def lin(v, o, i):
        return g.add("linear", [v, _w(g, rng, o, i), _w(g, rng, o)]).result

    def heads_of(v):
        v = g.add("reshape", [v], {"shape": (B, T, heads, dh)}).result
        return g.add("permute", [v], {"dims": (0, 2, 1, 3)}).result

    qkv = lin(ln(x), 3 * d, d)
    q, k, v = g.add("split", [qkv], {"dim": 2, "sizes": (d, d, d)}).results
    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    kt = g.add("permute", [k], {"dims": (0, 1, 3, 2)}).result
    s = g.add("mul", [g.add("matmul", [q, kt]).result, constant(g, np.array(1 / math.sqrt(dh), np.float32))]).result
    p = g.add("softmax", [s], {"dim": 3}).result
    o = g.add("matmul", [p, v]).result
    o = g.add("reshape", [g.add("permute", [o], {"dims": (0, 2, 1, 3)}).result], {"shape": (B, T, d)}).result
    x2 = g.add("add", [x, lin(o, d, d)]).result
    m = g.add("gelu", [lin(ln(x2), hidden, d)]).result
    g.set_outputs([g.add("add", [x2, lin(m, d, hidden)]).result])
    return g


def optimize(g: Graph, **options) -> tuple[Graph, PassContext]:
    ctx = PassContext(options=options)
    return PassManager(default_pipeline(options=options)).run(g.copy(), ctx), ctx


def _same_values(a: Graph, b: Graph, seed=0) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in a.inputs]
    for w, o in zip(interpret(a, *xs), interpret(b, *xs)):
        np.testing.assert_array_equal(o, w)


@pytest.mark.parametrize("build,limit", [(mlp, 2), (lenet, 7), (transformer_block, 9)])
def test_kernel_targets(build, limit):
    g = build()
    out, ctx = optimize(g)
    verify(out)
    assert kernel_count(out) <= limit, explain(ctx)
    assert_supported_bodies(out)
    _same_values(g, out)


def test_mlp_puts_gelu_in_first_matmul_epilogue():
    out, _ = optimize(mlp())
    kinds = [(n.attrs["kind"], [b.op for b in n.attrs["body"].nodes]) for n in out.nodes if n.op == "fused"]
    assert kinds == [("matmul", ["linear", "gelu"]), ("matmul", ["linear"])]


def test_explain_says_why_matmul_and_softmax_stay_apart():
    _, ctx = optimize(transformer_block())
    text = explain(ctx)
    assert "contraction cannot be the producer of a reduction" in text
    assert any(d.kind == "unfused" for d in ctx.decisions)


def test_decomposed_linear_keeps_bias_in_matmul_epilogue():
    out, _ = optimize(mlp(), decompose={"linear": True})
    assert kernel_count(out) <= 2
    first = next(n for n in out.nodes if n.op == "fused")
    assert [b.op for b in first.attrs["body"].nodes] == ["permute", "matmul", "add", "gelu"]


def test_shared_cheap_producer_is_recomputed_not_materialized():
    g = parse("""graph @g(%x: f32[4,8], %y: f32[4,8]) {
      %a = add %x, %y : f32[4,8]
      %b = sum %a {dims=[1], keepdim=true} : f32[4,1]
      %c = amax %a {dims=[1], keepdim=true} : f32[4,1]
      return %b, %c
    }""")
    out = PassManager([get_pass("fuse")]).run(g.copy(), PassContext())
    assert kernel_count(out) == 2
    assert all(n.attrs["kind"] == "reduction" and len(n.attrs["body"].nodes) == 2 for n in out.nodes)
    _same_values(g, out)


def test_view_output_gets_a_copy_kernel():
    g = parse("""graph @g(%x: f32[4,8]) {
      %a = relu %x : f32[4,8]
      %b = permute %a {dims=[1,0]} : f32[8,4]
      return %b
    }""")
    out = PassManager([get_pass("fuse")]).run(g.copy(), PassContext())
    assert [n.attrs["kind"] for n in out.nodes] == ["pointwise", "copy"]
    assert_supported_bodies(out)
    _same_values(g, out)


def test_no_cycle_through_outside_consumer():
    # %c would fuse %a and %d, but %b (a reduction) sits between them
    g = parse("""graph @g(%x: f32[4,8]) {
      %a = exp %x : f32[4,8]
      %b = sum %a {dims=[1], keepdim=true} : f32[4,1]
      %c = matmul %a, %x2 : f32[4,4]
      %d = add %a, %b : f32[4,8]
      return %d, %c
    }""".replace("%x2", "%t").replace("%c = matmul", "%t = permute %x {dims=[1,0]} : f32[8,4]\n      %c = matmul"))
    out = PassManager([get_pass("fuse")]).run(g.copy(), PassContext())
    verify(out)
    assert_supported_bodies(out)
    _same_values(g, out)


def test_fuse_twice_is_stable():
    out, _ = optimize(lenet())
    again = PassManager([get_pass("fuse")]).run(out.copy(), PassContext())
    assert kernel_count(again) == kernel_count(out)


@pytest.mark.parametrize("name,limit", [("mlp", 2), ("lenet", 7), ("transformer_block", 9)])
def test_traced_examples_meet_kernel_targets(name, limit):
    import importlib.util
    import pathlib

    import minicomp
    path = pathlib.Path(__file__).parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    inputs = mod.example_inputs()
    g = minicomp.trace(mod.model(), inputs)
    out, ctx = optimize(g)
    assert kernel_count(out) <= limit, explain(ctx)
    assert_supported_bodies(out)
    _lowering_agrees(out)
    xs = [t.numpy() for t in inputs]
    for w, o in zip(interpret(g, *xs), interpret(out, *xs)):
        np.testing.assert_array_equal(o, w)


def test_sibling_pointwise_kernels_share_one_pass():
    g = parse("""graph @g(%x: f32[4,8], %w: f32[8,8]) {
      %a = exp %x : f32[4,8]
      %b = neg %x : f32[4,8]
      %c = matmul %a, %w : f32[4,8]
      %d = matmul %b, %w : f32[4,8]
      return %c, %d
    }""")
    ctx = PassContext()
    out = PassManager([get_pass("fuse")]).run(g.copy(), ctx)
    kinds = sorted(n.attrs["kind"] for n in out.nodes)
    assert kinds == ["matmul", "matmul", "pointwise"]
    (pw,) = [n for n in out.nodes if n.attrs["kind"] == "pointwise"]
    assert len(pw.results) == 2 and len(pw.operands) == 1
    assert any("sibling" in d.why for d in ctx.decisions)
    assert_supported_bodies(out)
    _same_values(g, out)


def _lowering_agrees(g: Graph) -> None:
    """The lowering makes exactly the kernels fusion and kernel_count say: it splits no fused node."""
    notes: list[str] = []
    program = lower_graph(g, notes=notes)
    assert not [n for n in notes if "split" in n], notes
    assert len(program.kernels) == kernel_count(g), notes


def test_upsample_is_a_view_for_fusion_lowering_and_kernel_count():
    """One registry answer (role VIEW) for every layer: the upsample folds into its consumer's kernel."""
    g = parse("""graph @g(%x: f32[1,2,3,3]) {
      %u = upsample_nearest2d %x {size=[6,6]} : f32[1,2,6,6]
      %r = relu %u : f32[1,2,6,6]
      return %r
    }""")
    assert kernel_count(g) == 1
    out, _ = optimize(g)
    assert kernel_count(out) == 1
    _lowering_agrees(out)
    _same_values(g, out)


def test_fusion_leaves_apart_what_the_lowering_cannot_make_one_kernel():
    """A group whose body fits no kernel template (an integer division, whose run-time check cannot run
    in a matmul epilogue) is not formed, and the reason recorded, instead of being split by the lowering."""
    g = parse("""graph @g(%x: i64[4,8], %w: i64[8,4], %d: i64[4,4]) {
      %m = matmul %x, %w : i64[4,4]
      %q = div %m, %d {rounding_mode="floor"} : i64[4,4]
      return %q
    }""")
    out, ctx = optimize(g)
    assert [n.op for n in out.nodes] == ["matmul", "div"]
    assert any(d.kind == "unfused" and "cannot make one kernel" in d.why and "run-time check" in d.why
               for d in ctx.decisions), explain(ctx)
    _lowering_agrees(out)
