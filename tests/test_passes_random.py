"""Property tests: every pass keeps the interpreter's results (bit-exact where promised) on random graphs.

The random-graph generator below builds chains of elementwise ops (with the
special constants 0.0, -0.0, 1.0 that canonicalization looks for), reductions,
matmuls and views; inputs contain NaN, infinities and -0.0.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicomp.ir import DType, Graph, TensorType, constant, interpret, verify
from minicomp.passes import PassContext, PassManager, default_pipeline, get_pass

#: Per-test example count (the session's profile from conftest.py stays in charge of everything else).
EXAMPLES = settings(max_examples=15 if os.environ.get("CI") else 40, deadline=None)

UNARY = ["relu", "neg", "exp", "tanh", "abs", "sigmoid", "sqrt"]
BINARY = ["add", "mul", "sub", "maximum", "div"]
SPECIALS = [0.0, -0.0, 1.0, 2.0, np.nan, np.inf]


def random_graph(seed: int) -> Graph:
    """A random, valid f32 graph of 3..14 nodes over one or two 2-d inputs."""
    rng = np.random.default_rng(seed)
    g = Graph("rand")
    m, n = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    vals = [g.add_input(TensorType(DType.f32, (m, n)), "x")]
    if rng.random() < 0.5:
        vals.append(g.add_input(TensorType(DType.f32, (m, n)), "y"))
    for _ in range(int(rng.integers(3, 12))):
        x = vals[int(rng.integers(len(vals)))]
        r = rng.random()
        if r < 0.25:
            v = g.add(str(rng.choice(UNARY)), [x]).result
        elif r < 0.5:
            same = [v for v in vals if v.type.shape == x.type.shape]
            if rng.random() < 0.5:
                other = constant(g, np.array(rng.choice(SPECIALS), dtype=np.float32))
                ops = [x, other] if rng.random() < 0.7 else [other, x]
            else:
                ops = [x, same[int(rng.integers(len(same)))]]
            v = g.add(str(rng.choice(BINARY)), ops).result
        elif r < 0.6 and x.type.rank == 2:
            v = g.add("permute", [x], {"dims": (1, 0)}).result
        elif r < 0.67:
            v = g.add("reshape", [x], {"shape": (x.type.numel,)}).result
            v = g.add("reshape", [v], {"shape": x.type.shape}).result
        elif r < 0.75 and x.type.rank >= 1:
            op = str(rng.choice(["sum", "amax"]))
            v = g.add(op, [x], {"dims": (x.type.rank - 1,), "keepdim": True}).result
            v = g.add("expand", [v], {"shape": x.type.shape}).result
        elif r < 0.82 and x.type.rank >= 1:
            v = g.add("softmax", [x], {"dim": x.type.rank - 1}).result
        elif r < 0.9 and x.type.rank == 2:
            k = x.type.shape[1]
            w = constant(g, rng.standard_normal((k, k)).astype(np.float32))
            v = g.add("matmul", [x, w]).result
        elif r < 0.95:
            v = g.add("neg", [g.add("neg", [x]).result]).result
        else:
            v = g.add("cast", [x], {"dtype": DType.f32}).result
        vals.append(v)
    outs = [vals[-1]]
    if len(vals) > 3 and rng.random() < 0.5:
        outs.append(vals[int(rng.integers(1, len(vals) - 1))])
    g.set_outputs(outs)
    verify(g)
    return g


def random_inputs(g: Graph, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    arrays = []
    for v in g.inputs:
        a = rng.standard_normal(v.type.shape).astype(np.float32)
        flat = a.reshape(-1)
        for i in range(flat.size):
            if rng.random() < 0.2:
                flat[i] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 0.0])
        arrays.append(a)
    return arrays


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        # all NaNs compare equal (payloads are not part of any contract), everything else bitwise
        return np.where(np.isnan(a), np.nan, a).view(np.uint32 if a.itemsize == 4 else np.uint64)
    return a


def check(before: Graph, after: Graph, seed: int, exact: bool = True) -> None:
    verify(after)
    xs = random_inputs(before, seed)
    want, got = interpret(before, *xs), interpret(after, *xs)
    assert len(want) == len(got)
    for w, o in zip(want, got):
        assert w.shape == o.shape and w.dtype == o.dtype
        if exact:
            np.testing.assert_array_equal(bits(w), bits(o))
        else:
            np.testing.assert_allclose(o, w, rtol=1.3e-6, atol=1e-5, equal_nan=True)


EXACT_PASSES = ["dce", "cse", "canonicalize", "constant-fold", "layout", "fuse", "plan-memory"]


@pytest.mark.parametrize("name", EXACT_PASSES)
@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1))
def test_pass_keeps_values_bit_exact(name, seed):
    g = random_graph(seed)
    out = PassManager([get_pass(name)]).run(g.copy(), PassContext())
    check(g, out, seed)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1))
def test_decompose_everything_keeps_values(seed):
    g = random_graph(seed)
    ctx = PassContext(options={"decompose": {k: True for k in ["softmax", "log_softmax", "mean", "var"]}})
    out = PassManager([get_pass("decompose")]).run(g.copy(), ctx)
    check(g, out, seed, exact=False)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1))
def test_default_pipeline_keeps_values(seed):
    g = random_graph(seed)
    out = PassManager(default_pipeline()).run(g.copy(), PassContext())
    check(g, out, seed)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1))
def test_fused_bodies_have_supported_shapes(seed):
    from test_passes_fusion import assert_supported_bodies
    g = random_graph(seed)
    out = PassManager(default_pipeline()).run(g.copy(), PassContext())
    assert_supported_bodies(out)
