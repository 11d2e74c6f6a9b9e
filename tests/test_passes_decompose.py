"""decompose: each composite op, switched on alone, keeps its values (up to rounding)."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from minicomp.ir import interpret, parse, verify
from minicomp.passes import PassContext, PassManager, get_pass

CASES = {
    "softmax": ("%y = softmax %x {dim=1} : f32[3,5]", []),
    "log_softmax": ("%y = log_softmax %x {dim=0} : f32[3,5]", []),
    "layer_norm": ("%y = layer_norm %x, %w, %b {normalized_ndim=1, eps=1e-5} : f32[3,5]", ["w:5", "b:5"]),
    "gelu": ("%y = gelu %x : f32[3,5]", []),
    "gelu_tanh": ('%y = gelu %x {approximate="tanh"} : f32[3,5]', []),
    "silu": ("%y = silu %x : f32[3,5]", []),
    "var": ("%y = var %x {dims=[1], correction=1.0} : f32[3]", []),
    "mean": ("%y = mean %x {dims=[0], keepdim=true} : f32[1,5]", []),
    "addmm": ("%y = addmm %b, %x, %w {beta=0.5, alpha=2.0} : f32[3,4]", ["w:5,4", "b:4"]),
    "linear": ("%y = linear %x, %w, %b : f32[3,4]", ["w:4,5", "b:4"]),
}


def _graph(line: str, extra: list[str]) -> str:
    args = ", ".join(["%x: f32[3,5]"] + [f"%{e.split(':')[0]}: f32[{e.split(':')[1]}]" for e in extra])
    return textwrap.dedent(f"""
        graph @g({args}) {{
          {line}
          return %y
        }}""")


@pytest.mark.parametrize("case", sorted(CASES))
def test_decomposition_keeps_values(case):
    op = case.split("_tanh")[0]
    g = parse(_graph(*CASES[case]))
    ctx = PassContext(options={"decompose": {op: True}})
    out = PassManager([get_pass("decompose")]).run(g.copy(), ctx)
    verify(out)
    assert op not in [n.op for n in out.nodes]
    assert any(d.kind == "decompose" for d in ctx.decisions)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    want, got = interpret(g, *xs)[0], interpret(out, *xs)[0]
    np.testing.assert_allclose(got, want, rtol=1.3e-6, atol=1e-5)


def test_batch_norm_decomposed_by_default_and_fused_into_conv():
    g = parse(textwrap.dedent("""
        graph @g(%x: f32[1,2,5,5], %w: f32[3,2,3,3], %m: f32[3], %v: f32[3], %s: f32[3], %b: f32[3]) {
          %c = conv2d %x, %w : f32[1,3,3,3]
          %y = batch_norm %c, %m, %v, %s, %b {eps=1e-5} : f32[1,3,3,3]
          %r = relu %y : f32[1,3,3,3]
          return %r
        }"""))
    from minicomp.passes import default_pipeline, kernel_count
    out = PassManager(default_pipeline()).run(g.copy(), PassContext())
    assert "batch_norm" not in str(out)
    kinds = [n.attrs["kind"] for n in out.nodes if n.op == "fused"]
    assert "conv" in kinds
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    xs[2] = np.abs(xs[2])  # variance >= 0
    xs[3] = np.abs(xs[3])
    np.testing.assert_allclose(interpret(out, *xs)[0], interpret(g, *xs)[0], rtol=1.3e-6, atol=1e-5)


def test_softmax_kept_whole_by_default():
    g = parse(_graph(*CASES["softmax"]))
    out = PassManager([get_pass("decompose")]).run(g.copy(), PassContext())
    assert "softmax" in str(out)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_low_precision_composites_compute_in_f32(dtype):
    g = parse(_graph(*CASES["softmax"]).replace("f32", dtype))
    out = PassManager([get_pass("decompose")]).run(g.copy(), PassContext(options={"decompose": {"softmax": True}}))
    assert "cast" in str(out)
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(g.inputs[0].type.dtype.np)
    want, got = interpret(g, x)[0], interpret(out, x)[0]
    tol = {"f16": (1e-3, 1e-5), "bf16": (1.6e-2, 1e-5)}[dtype]
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol[0], atol=tol[1])
