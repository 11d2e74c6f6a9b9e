"""Lowering: graphs -> kernel Programs, checked against the reference interpreter.

Every test lowers a graph, runs the Program with the numpy kernel evaluator
(``tests/kernel_eval.py``, which places intermediates at their planned arena
offsets) and compares with ``minicomp.ir.interpreter.interpret``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernel_eval
from minicomp.ir import DType, Graph, TensorType
from minicomp.ir.graph import constant
from minicomp.ir.interpreter import interpret
from minicomp.ir.kernel import REDUCE_KINDS, ConvKernel, LoopKernel, MatmulKernel, Op, PoolKernel
from minicomp.ir.lowering import first_fit_arena, lower_graph, lower_node
from minicomp.ir.ops import Category, ops_in

RNG = np.random.default_rng(0)
TORCH = {DType.f32: torch.float32, DType.f64: torch.float64, DType.f16: torch.float16, DType.bf16: torch.bfloat16,
         DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}


def data(shape, dt: DType, special: bool = True) -> np.ndarray:
    if dt is DType.bool:
        return RNG.random(shape) < 0.5
    if dt.is_int:
        return RNG.integers(-5, 6, size=shape).astype(dt.np)
    x = RNG.standard_normal(shape).astype(np.float32) * 2
    if special and x.size >= 4:
        flat = x.reshape(-1)
        flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    return x.astype(dt.np)


def as_torch(a: np.ndarray, dt: DType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(TORCH[dt])


def check(g: Graph, inputs: list[np.ndarray]):
    """Lower ``g``, run it, compare each output with the interpreter; returns the Program."""
    ref = interpret(g, *inputs)
    p = lower_graph(g)
    got = kernel_eval.run_program(p, inputs)
    assert len(got) == len(ref)
    for r, o, v in zip(ref, got, g.outputs):
        assert o.shape == r.shape
        torch.testing.assert_close(as_torch(o, v.type.dtype), as_torch(r, v.type.dtype), equal_nan=True)
    return p


def graph(*types):
    g = Graph()
    return g, [g.add_input(TensorType(dt, shape)) for dt, shape in types]


def nodes_of(expr, kind):
    if isinstance(expr, kind):
        yield expr
    for f in ("args", "arg", "index", "value"):
        sub = getattr(expr, f, None)
        if isinstance(sub, tuple):
            for s in sub:
                yield from nodes_of(s, kind)
        elif sub is not None and not isinstance(sub, (int, float, bool, str, DType)):
            yield from nodes_of(sub, kind)


# -- elementwise ----------------------------------------------------------------------------------
UNARY = [o.name for o in ops_in(Category.ELEMENTWISE) if o.arity == 1 and o.scalar is not None]
BINARY = [o.name for o in ops_in(Category.ELEMENTWISE) if o.arity == 2 and o.scalar is not None]


@pytest.mark.parametrize("op", UNARY)
@pytest.mark.parametrize("dt", [DType.f32, DType.f16, DType.bf16, DType.f64, DType.i32])
def test_unary_ops(op, dt):
    if op in ("logical_not",) or (dt.is_int and op in ("floor",)):
        dt = DType.bool if op == "logical_not" else dt
    attrs = {"cast": {"dtype": DType.f64}, "clamp": {"min": -0.5, "max": 0.5}}.get(op, {})
    g, (x,) = graph((dt, (3, 5)))
    try:
        g.set_outputs([g.add(op, [x], attrs).result])
    except Exception as e:  # the op rejects this dtype: then it must say so clearly
        pytest.skip(f"{op} does not take {dt}: {e}")
    check(g, [data((3, 5), dt)])


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("dts", [(DType.f32, DType.f32), (DType.f16, DType.f32), (DType.bf16, DType.bf16),
                                 (DType.i32, DType.i64), (DType.i64, DType.f32)])
def test_binary_ops_broadcast(op, dts):
    if op.startswith("logical_"):
        dts = (DType.bool, DType.bool)
    g, (a, b) = graph((dts[0], (4, 1, 3)), (dts[1], (5, 1)))
    try:
        g.set_outputs([g.add(op, [a, b]).result])
    except Exception as e:
        pytest.skip(f"{op} does not take {dts}: {e}")
    ins = [data((4, 1, 3), dts[0]), data((5, 1), dts[1])]
    if op in ("div", "pow") and dts[1].is_int:
        ins[1] = np.where(ins[1] == 0, 1, np.abs(ins[1])).astype(ins[1].dtype)
    if op in ("remainder", "fmod") and dts[1].is_int:  # integer modulo by zero raises; keep the signs
        ins[1] = np.where(ins[1] == 0, -3, ins[1]).astype(ins[1].dtype)
    check(g, ins)


def test_where_and_scalar_constants_inline():
    g, (c, x) = graph((DType.bool, (2, 3)), (DType.f32, (2, 3)))
    y = g.add("mul", [x, constant(g, np.array(2.0, np.float32))]).result
    g.set_outputs([g.add("where", [c, y, constant(g, np.array(-1.0, np.float32))]).result])
    p = check(g, [data((2, 3), DType.bool), data((2, 3), DType.f32)])
    assert not any(s.kind == "const" for s in p.slots)  # numel-1 constants became Consts


def test_generators_and_size_zero_and_0d():
    g, (x, z) = graph((DType.f32, ()), (DType.f32, (0, 3)))
    f = g.add("full", [], {"shape": (2, 3), "value": 1.5, "dtype": DType.f32}).result
    r = g.add("arange", [], {"start": 1.0, "end": 7.0, "step": 2.0, "dtype": DType.i64}).result
    g.set_outputs([g.add("add", [f, x]).result, r, g.add("exp", [z]).result, g.add("neg", [x]).result])
    check(g, [np.array(0.25, np.float32), np.zeros((0, 3), np.float32)])


# -- views -------------------------------------------------------------------------------------
def test_views_fold_into_one_kernel_and_reshape_is_affine():
    g, (x,) = graph((DType.f32, (2, 3, 4)))
    r = g.add("reshape", [x], {"shape": (6, 4)}).result
    e = g.add("exp", [r]).result
    g.set_outputs([e])
    p = check(g, [data((2, 3, 4), DType.f32)])
    assert len(p.kernels) == 1
    assert not [o for o in nodes_of(p.kernels[0].stages[0], Op) if o.op in ("floordiv", "mod")]


def test_noncontiguous_reshape_chain():
    g, (x,) = graph((DType.f32, (2, 3, 4)))
    t = g.add("permute", [x], {"dims": (2, 0, 1)}).result        # 4,2,3
    r = g.add("reshape", [t], {"shape": (8, 3)}).result
    s = g.add("slice", [r], {"dim": 0, "start": 1, "end": 8, "step": 3}).result
    ex = g.add("expand", [g.add("reshape", [s], {"shape": (1, 3, 3)}).result], {"shape": (2, 3, 3)}).result
    g.set_outputs([g.add("relu", [ex]).result, t])
    p = check(g, [data((2, 3, 4), DType.f32)])
    assert [k.kind for k in p.kernels] == ["pointwise", "copy"]


def test_split_cat_embedding_upsample():
    g, (x, w, ids, im) = graph((DType.f32, (4, 6)), (DType.f32, (10, 3)), (DType.i64, (2, 5)), (DType.f16, (1, 2, 3, 3)))
    parts = g.add("split", [x], {"dim": 1, "sizes": (2, 4)}).results
    c = g.add("cat", [parts[1], g.add("neg", [parts[0]]).result, x], {"dim": 1}).result
    e = g.add("embedding", [w, ids]).result
    u = g.add("upsample_nearest2d", [im], {"size": (5, 7)}).result
    g.set_outputs([c, e, g.add("abs", [u]).result, parts[0]])
    idv = RNG.integers(0, 10, size=(2, 5)).astype(np.int64)
    check(g, [data((4, 6), DType.f32), data((10, 3), DType.f32), idv, data((1, 2, 3, 3), DType.f16)])


def test_outputs_alias_inputs_constants_and_each_other():
    g, (x,) = graph((DType.f32, (3,)))
    c = constant(g, np.arange(3, dtype=np.float32))
    y = g.add("add", [x, c]).result
    g.set_outputs([x, c, y, y])
    p = check(g, [data((3,), DType.f32)])
    assert dict(p.aliases).keys() == {0, 1, 3}
    assert p.slots[dict(p.aliases)[0]].kind == "input" and p.slots[dict(p.aliases)[1]].kind == "const"


# -- reductions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [
    ("sum", {"dims": (1,)}), ("sum", {"dims": (), "keepdim": True}), ("mean", {"dims": (0, 2), "keepdim": True}),
    ("amax", {"dims": (2,)}), ("amin", {"dims": (0,)}), ("argmax", {"dim": 1}), ("argmin", {"dim": None}),
    ("var", {"dims": (1, 2)}), ("var", {"dims": (2,), "correction": 0.0}), ("softmax", {"dim": 2}),
    ("log_softmax", {"dim": 0}), ("cumsum", {"dim": 1}),
])
@pytest.mark.parametrize("dt", [DType.f32, DType.bf16])
def test_reductions(op, attrs, dt):
    g, (x,) = graph((dt, (3, 4, 5)))
    g.set_outputs([g.add(op, [x], attrs).result])
    check(g, [data((3, 4, 5), dt, special=False)])


def test_int_sum_and_layer_norm_batch_norm():
    g, (x, i, w, b, y) = graph((DType.f32, (2, 3, 8)), (DType.i32, (4, 5)), (DType.f32, (8,)), (DType.f32, (8,)),
                               (DType.f16, (2, 3, 4, 4)))
    ln = g.add("layer_norm", [x, w, b], {"normalized_ndim": 1}).result
    s = g.add("sum", [i], {"dims": (1,)}).result
    stats = [constant(g, np.abs(data((3,), DType.f32, special=False)) + k) for k in range(4)]
    bn = g.add("batch_norm", [y, *stats]).result
    g.set_outputs([ln, s, bn])
    check(g, [data(s_, d, special=False) for d, s_ in [(DType.f32, (2, 3, 8)), (DType.i32, (4, 5)), (DType.f32, (8,)),
                                                      (DType.f32, (8,)), (DType.f16, (2, 3, 4, 4))]])


# -- contractions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 1, 3, 4), (5, 4, 6)), ((2, 3, 0), (0, 2)), ((1, 4), (4, 1))])
@pytest.mark.parametrize("dt", [DType.f32, DType.f16, DType.i64])
def test_matmul_shapes(sa, sb, dt):
    g, (a, b) = graph((dt, sa), (dt, sb))
    g.set_outputs([g.add("matmul", [a, b]).result])
    p = check(g, [data(sa, dt, special=False), data(sb, dt, special=False)])
    assert any(isinstance(k, MatmulKernel) for k in p.kernels)


def test_linear_addmm_fold_transposed_views():
    g, (x, w, bias, q) = graph((DType.f32, (2, 3, 8)), (DType.f32, (8, 6)), (DType.f32, (6,)), (DType.f32, (2, 4, 3, 5)))
    wt = g.add("permute", [w], {"dims": (1, 0)}).result          # [6, 8]: linear weight as a view
    y = g.add("linear", [x, wt, bias]).result
    qt = g.add("permute", [q], {"dims": (0, 2, 1, 3)}).result     # heads: [2, 3, 4, 5]
    kt = g.add("permute", [q], {"dims": (0, 2, 3, 1)}).result     # [2, 3, 5, 4]
    att = g.add("matmul", [qt, kt]).result
    a2 = g.add("reshape", [x], {"shape": (6, 8)}).result
    mm = g.add("addmm", [bias, a2, w], {"beta": 0.5, "alpha": 2.0}).result
    g.set_outputs([y, att, mm])
    p = check(g, [data(s, DType.f32, special=False) for s in [(2, 3, 8), (8, 6), (6,), (2, 4, 3, 5)]])
    assert [type(k) for k in p.kernels] == [MatmulKernel] * 3  # no copy kernels: views are Access strides


def test_conv_and_pools():
    g, (x, w, b) = graph((DType.f32, (2, 4, 9, 9)), (DType.f32, (6, 2, 3, 3)), (DType.f32, (6,)))
    c = g.add("conv2d", [x, w, b], {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}).result
    mp = g.add("max_pool2d", [x], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True}).result
    ap = g.add("avg_pool2d", [x], {"kernel": (2, 3), "stride": (2, 2), "padding": (1, 1),
                                   "count_include_pad": False}).result
    g.set_outputs([c, mp, ap])
    p = check(g, [data(s, DType.f32, special=False) for s in [(2, 4, 9, 9), (6, 2, 3, 3), (6,)]])
    assert [type(k) for k in p.kernels] == [ConvKernel, PoolKernel, PoolKernel]


# -- fused nodes ------------------------------------------------------------------------------------
def fused(g: Graph, kind: str, operands, build):
    body = Graph("body")
    ins = [body.add_input(o.type) for o in operands]
    body.set_outputs(build(body, ins))
    return g.add("fused", list(operands), {"kind": kind, "body": body})


def test_fused_pointwise_reduction_contraction_each_one_kernel():
    g, (x, w, r) = graph((DType.f32, (4, 8)), (DType.f32, (8, 8)), (DType.f32, (4, 8)))
    n1 = fused(g, "matmul", [x, w, r], lambda b, i: [b.add("add", [b.add("relu", [
        b.add("matmul", [i[0], b.add("permute", [i[1]], {"dims": (1, 0)}).result]).result]).result, i[2]]).result])
    n2 = fused(g, "reduction", [n1.result], lambda b, i: [b.add("mul", [b.add("softmax", [
        b.add("mul", [i[0], constant(b, np.array(0.5, np.float32))]).result], {"dim": 1}).result, i[0]]).result])
    n3 = fused(g, "pointwise", [n2.result, x], lambda b, i: [b.add("tanh", [i[0]]).result,
                                                            b.add("sub", [i[0], i[1]]).result])
    n4 = fused(g, "reduction", [x], lambda b, i: [b.add("sum", [b.add("exp", [i[0]]).result], {"dims": (1,)}).result])
    g.set_outputs([*n3.results, n4.result])
    p = check(g, [data(s, DType.f32, special=False) for s in [(4, 8), (8, 8), (4, 8)]])
    assert [k.kind for k in p.kernels] == ["matmul", "reduction", "pointwise", "reduction"]
    assert isinstance(lower_node(n2), LoopKernel)


def test_fused_body_without_template_is_split_not_wrong():
    g, (x,) = graph((DType.f32, (3, 4)))
    n = fused(g, "reduction", [x], lambda b, i: [b.add("amax", [i[0]], {"dims": (0,)}).result,
                                                 b.add("sum", [i[0]], {"dims": (1,)}).result])
    m = fused(g, "matmul", [x], lambda b, i: [b.add("matmul", [b.add("exp", [i[0]]).result,
                                                               b.add("permute", [i[0]], {"dims": (1, 0)}).result]).result])
    g.set_outputs([*n.results, m.result])
    p = check(g, [data((3, 4), DType.f32, special=False)])
    assert len(p.kernels) == 4


# -- arena planning ----------------------------------------------------------------------------------
@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 4), st.integers(0, 500)), min_size=1, max_size=12))
def test_first_fit_never_overlaps_live_buffers(spec):
    intervals = [(s, s + d, n) for s, d, n in spec]
    offsets, total = first_fit_arena(intervals)
    for i, (a0, a1, an) in enumerate(intervals):
        assert offsets[i] % 64 == 0 and offsets[i] + an <= total
        for j in range(i):
            b0, b1, bn = intervals[j]
            if a0 <= b1 and b0 <= a1 and an and bn:
                assert offsets[i] + an <= offsets[j] or offsets[j] + bn <= offsets[i]


def test_arena_reuses_dead_buffers():
    g, (x,) = graph((DType.f32, (64,)))
    v = x
    for _ in range(6):
        v = g.add("exp", [g.add("neg", [v]).result]).result
    g.set_outputs([v])
    p = check(g, [data((64,), DType.f32)])
    assert p.arena_bytes <= 2 * 256


def test_merged_head_batch_is_split_into_strided_loops():
    g, (q,) = graph((DType.f32, (2, 6, 4, 5)))                      # B, S, H, D
    qh = g.add("reshape", [g.add("permute", [q], {"dims": (0, 2, 1, 3)}).result], {"shape": (8, 6, 5)}).result
    kh = g.add("reshape", [g.add("permute", [q], {"dims": (0, 2, 3, 1)}).result], {"shape": (8, 5, 6)}).result
    g.set_outputs([g.add("relu", [g.add("matmul", [qh, kh]).result]).result])
    p = check(g, [data((2, 6, 4, 5), DType.f32, special=False)])
    mm = [k for k in p.kernels if isinstance(k, MatmulKernel)]
    assert len(mm) == 1 and mm[0].batch == (2, 4) and not [k for k in p.kernels if k.kind == "copy"]


def test_output_with_channels_last_layout_is_stored_row_major():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 2, 3, 3)))
    y = g.add("relu", [x], types=[TensorType(DType.f32, (1, 2, 3, 3), (0, 2, 3, 1))]).result
    g.set_outputs([g.add("neg", [y], types=[TensorType(DType.f32, (1, 2, 3, 3), (0, 2, 3, 1))]).result])
    p = check(g, [data((1, 2, 3, 3), DType.f32)])
    assert p.kernels[-1].kind == "copy" and p.slots[p.calls[-1].args[-1]].type.order is None


def test_memory_plan_from_meta_is_used_only_when_safe():
    def build():
        g, (x,) = graph((DType.f32, (16,)))
        a = g.add("neg", [x]).result
        b = g.add("exp", [a]).result
        g.set_outputs([g.add("add", [a, b]).result])
        return g, a, b
    g, a, b = build()
    g.meta = {"memory_plan": {"offsets": {a.name: 128, b.name: 0}}}
    p = check(g, [data((16,), DType.f32)])
    assert sorted(s.index for s in p.slots if s.kind == "arena") == [0, 128]
    g, a, b = build()
    g.meta = {"memory_plan": {"offsets": {a.name: 0, b.name: 0}}}  # both live at the add: refused
    p = check(g, [data((16,), DType.f32)])
    offs = sorted(s.index for s in p.slots if s.kind == "arena")
    assert offs[0] + 64 <= offs[1]


# -- random graphs: lowering (unfused and after the pass pipeline) agrees with the interpreter ----------
def _random_case_check(case, run_passes: bool):
    g = case.graph
    if run_passes:
        from minicomp.passes.manager import PassContext, PassManager, default_pipeline
        ref = interpret(g, *case.inputs)
        g = PassManager(default_pipeline("cpu"), verify=False).run(g.copy(), PassContext())
    else:
        ref = interpret(g, *case.inputs)
    try:
        got = kernel_eval.run_program(lower_graph(g), case.inputs)
        for r, o, v in zip(ref, got, g.outputs):
            torch.testing.assert_close(as_torch(o, v.type.dtype), as_torch(r, v.type.dtype), equal_nan=True)
    except Exception as e:
        raise AssertionError(f"{e}\nlowered graph:\n{g}") from e


@settings(max_examples=40)
@given(st.data())
def test_random_graphs_lower_correctly(data_):
    from minicomp.testing.graphs import graphs
    case = data_.draw(graphs(max_nodes=6, dtypes=(DType.f32, DType.f16, DType.i32), special_values=True))
    _random_case_check(case, run_passes=False)


@settings(max_examples=40)
@given(st.data())
def test_random_graphs_lower_correctly_after_fusion(data_):
    from minicomp.testing.graphs import graphs
    case = data_.draw(graphs(max_nodes=8, dtypes=(DType.f32,)))
    _random_case_check(case, run_passes=True)


@pytest.mark.parametrize("kind", sorted(REDUCE_KINDS))
@pytest.mark.parametrize("dt", [DType.f32, DType.f64, DType.i32, DType.i64, DType.bool])
def test_reduce_identity_is_neutral(kind, dt):
    """Each Reduce kind's identity (ir/kernel.py, the one table) leaves every value unchanged when folded in."""
    k = REDUCE_KINDS[kind]
    ident = np.array(k.identity(dt), dt.np)
    info = np.finfo(dt.np) if dt.is_float else np.iinfo(dt.np) if dt.is_int else None
    xs = np.array([False, True] if dt is DType.bool else [info.min, -1, 0, 1, info.max], dt.np)
    fold = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum,
            "argmax": np.maximum, "argmin": np.minimum}[kind]
    if dt is DType.bool:
        fold = {"sum": np.logical_or, "prod": np.logical_and, "max": np.logical_or, "min": np.logical_and,
                "argmax": np.logical_or, "argmin": np.logical_and}[kind]
    np.testing.assert_array_equal(fold(xs, ident), xs)
    assert k.result_dtype(dt) is (DType.i64 if kind.startswith("arg") else dt)
