"""The attention kernel: the ``fuse-attention`` pass, its lowering and the CPU code.

Every compiled result is compared with eager PyTorch at the default tolerances: shapes on
the register-tile edges (rows % RT_ROWS, keys and value columns % vector width), cross
attention (m != n, d != e), additive and boolean masks, NaN/inf scores, f64, non-contiguous
inputs. The lowering is checked apart from the backend with the numpy kernel evaluator.
"""
from __future__ import annotations

import math

import kernel_eval
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicomp
from minicomp.codegen.llvm import attention_fits
from minicomp.codegen.llvm.attention import RT_ROWS
from minicomp.ir import interpret, parse, print_graph, verify
from minicomp.ir.kernel import AttentionKernel
from minicomp.ir.kernel_io import program_from_json, program_to_json
from minicomp.ir.lowering import lower_graph
from minicomp.passes import PassContext, PassManager, default_pipeline


def sdpa(q, k, v):
    return torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1])), dim=-1) @ v


def _kinds(cm) -> list[str]:
    return [k.kind for k in cm.program.kernels]


def _check(fn, *inputs, kinds=("attention",)):
    cm = minicomp.compile(fn, inputs, cache=False)
    assert _kinds(cm) == list(kinds)
    torch.testing.assert_close(cm(*inputs), fn(*inputs), equal_nan=True)
    return cm


@pytest.mark.parametrize("b,h,m,n,d,e", [
    (1, 4, 64, 64, 32, 32),            # the transformer block's heads
    (2, 3, 37, 29, 16, 24),            # every dim off the tile and vector edges
    (1, 1, 1, 1, 1, 1),                # one query, one key
    (1, 2, RT_ROWS + 1, 17, 8, 33),    # one row past a tile, masked key and value tails
    (3, 1, 5, 130, 64, 8),             # more keys than a row of vectors, short values
    (1, 1, 200, 7, 3, 70),             # several items of rows, long values
    (1, 2, 40, 41, 20, 16),            # K^T copied by whole 16 x 16 blocks and by elements past them
])
def test_matches_eager(b, h, m, n, d, e):
    torch.manual_seed(0)
    q, k, v = torch.randn(b, h, m, d), torch.randn(b, h, n, d), torch.randn(b, h, n, e)
    _check(sdpa, q, k, v)


@pytest.mark.parametrize("threads", [2, 3])  # against one thread (threads=1 there could not fail)
def test_thread_count_gives_the_same_bits(threads):
    torch.manual_seed(1)
    q, k, v = torch.randn(4, 2, 150, 32), torch.randn(4, 2, 90, 32), torch.randn(4, 2, 90, 32)
    one = minicomp.compile(sdpa, (q, k, v), cache=False, threads=1)
    many = minicomp.compile(sdpa, (q, k, v), cache=False, threads=threads)
    assert torch.equal(one(q, k, v), many(q, k, v))


def test_rank3_and_rank2_operands():
    torch.manual_seed(2)
    _check(sdpa, torch.randn(3, 20, 8), torch.randn(3, 11, 8), torch.randn(3, 11, 5))
    _check(sdpa, torch.randn(20, 8), torch.randn(11, 8), torch.randn(11, 5))


def test_additive_and_boolean_masks():
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 2, 24, 16), torch.randn(2, 2, 24, 16), torch.randn(2, 2, 24, 16)
    bias = torch.randn(24, 24)
    causal = torch.ones(24, 24, dtype=torch.bool).tril()

    def additive(q, k, v, bias):
        return torch.softmax(q @ k.transpose(-2, -1) / 4.0 + bias, dim=-1) @ v

    def masked(q, k, v, keep):
        s = (q @ k.transpose(-2, -1)).masked_fill(~keep, float("-inf"))
        return torch.softmax(s, dim=-1) @ v
    _check(additive, q, k, v, bias)
    _check(masked, q, k, v, causal)


def test_edge_values_propagate_as_in_eager():
    torch.manual_seed(4)
    q, k, v = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    q[0, 0, 3, 2] = float("nan")   # one NaN row of scores
    q[0, 1, 5, :] = 1e4            # huge scores: the row maximum keeps exp finite
    k[0, 1, 7, 0] = float("inf")   # +inf and -inf scores in one column
    q[0, 1, 0, 0], q[0, 1, 1, 0] = 1.0, -1.0
    q[0, 0, 9] = -0.0
    _check(sdpa, q, k, v)

    def far_below_zero(q, k, v):  # exp(s - 0) would underflow to 0 for every key: the max must be the row's
        return torch.softmax((q @ k.transpose(-2, -1)) - 1e4, dim=-1) @ v
    _check(far_below_zero, q, k, v)

    def all_masked(q, k, v):
        return torch.softmax((q @ k.transpose(-2, -1)) + float("-inf"), dim=-1) @ v  # every row NaN
    _check(all_masked, q, k, v)


def test_float64():
    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 2, 19, 12, dtype=torch.float64) for _ in range(3))
    _check(sdpa, q, k, v)


def test_non_contiguous_inputs_and_strided_views():
    torch.manual_seed(6)
    qkv = torch.randn(2, 40, 3, 4, 16)

    def heads(qkv):
        t = qkv.permute(2, 0, 3, 1, 4)
        return sdpa(t[0], t[1], t[2]).transpose(1, 2).reshape(2, 40, 64)
    cm = minicomp.compile(heads, (qkv,), cache=False)
    assert "attention" in _kinds(cm)
    torch.testing.assert_close(cm(qkv), heads(qkv))
    q, k, v = (torch.randn(2, 2, 30, 8).transpose(2, 3) for _ in range(3))  # [.., 8, 30] views
    f = lambda q, k, v: sdpa(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))  # noqa: E731
    cm = minicomp.compile(f, (q, k, v), cache=False)
    assert "attention" in _kinds(cm)
    torch.testing.assert_close(cm(q, k, v), f(q, k, v))


def test_epilogue_after_the_second_product():
    torch.manual_seed(7)
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    r = torch.randn(1, 2, 16, 8)
    _check(lambda q, k, v, r: torch.relu(sdpa(q, k, v)) * 2 + r, q, k, v, r)


def test_not_fused_where_another_kernel_reads_the_probabilities():
    torch.manual_seed(8)
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)

    def both(q, k, v):
        p = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return p @ v, p
    cm = minicomp.compile(both, (q, k, v), cache=False)
    assert "attention" not in _kinds(cm)
    for got, want in zip(cm(q, k, v), both(q, k, v)):
        torch.testing.assert_close(got, want)


def test_rows_too_long_for_the_stack_blocks_keep_three_kernels():
    torch.manual_seed(11)
    q, k, v = torch.randn(1, 1, 8, 32), torch.randn(1, 1, 600, 32), torch.randn(1, 1, 600, 32)
    assert not attention_fits(8, 600, 32, 32, minicomp.ir.DType.f32)
    cm = minicomp.compile(sdpa, (q, k, v), cache=False)
    assert "attention" not in _kinds(cm)
    torch.testing.assert_close(cm(q, k, v), sdpa(q, k, v))


def test_half_precision_is_not_fused_and_stays_correct():
    torch.manual_seed(9)
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    cm = minicomp.compile(sdpa, (q, k, v), cache=False)
    assert "attention" not in _kinds(cm)
    torch.testing.assert_close(cm(q, k, v), sdpa(q, k, v))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 2), m=st.integers(1, 40), n=st.integers(1, 40), d=st.integers(1, 20), e=st.integers(1, 40),
       scale=st.sampled_from([0.125, 1.0, -3.0]))
def test_random_shapes_match_eager(b, m, n, d, e, scale):
    g = torch.Generator().manual_seed(m * 1000 + n)
    q, k, v = torch.randn(b, m, d, generator=g), torch.randn(b, n, d, generator=g), torch.randn(b, n, e, generator=g)
    _check(lambda q, k, v: torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v, q, k, v)


# -- the pass and the lowering, apart from the backend -----------------------------------------
def _optimized(fn, inputs, **options):
    graph = minicomp.trace(fn, inputs)
    ctx = PassContext(options={"target": "cpu", **options})
    return PassManager(default_pipeline("cpu")).run(graph, ctx), ctx


def _inputs():
    torch.manual_seed(10)
    return torch.randn(2, 3, 21, 8), torch.randn(2, 3, 13, 8), torch.randn(2, 3, 13, 6)


def test_pass_changes_nothing_without_the_backend_predicate():
    g, ctx = _optimized(sdpa, _inputs())
    assert not any(n.op == "fused" and n.attrs["kind"] == "attention" for n in g.nodes)
    assert not any(d.pass_name == "fuse-attention" for d in ctx.decisions)


def test_pass_records_a_declined_size():
    g, ctx = _optimized(sdpa, _inputs(), attention_kernel=lambda *sizes: False)
    assert not any(n.op == "fused" and n.attrs["kind"] == "attention" for n in g.nodes)
    (why,) = [d.why for d in ctx.decisions if d.pass_name == "fuse-attention"]
    assert "m=21, n=13, d=8, e=6" in why


def test_fused_graph_prints_parses_interprets_and_lowers():
    ins = _inputs()
    g, ctx = _optimized(sdpa, ins, attention_kernel=attention_fits)
    kinds = [n.attrs["kind"] for n in g.nodes if n.op == "fused"]
    assert kinds == ["attention"]
    assert [d.kind for d in ctx.decisions if d.pass_name == "fuse-attention"] == ["fused"]
    verify(g)
    text = print_graph(g)
    assert print_graph(parse(text)) == text
    arrays = [t.numpy() for t in ins]
    want = sdpa(*ins).numpy()
    np.testing.assert_allclose(interpret(g, *arrays)[0], want, rtol=1.3e-6, atol=1e-5)
    program = lower_graph(g)
    assert [type(k) for k in program.kernels] == [AttentionKernel]
    torch.testing.assert_close(torch.from_numpy(kernel_eval.run_program(program, arrays)[0]), sdpa(*ins))
    text, arrays_out = program_to_json(program)
    assert program_from_json(text, arrays_out).kernels == program.kernels


def test_bias_from_another_product_is_not_mistaken_for_the_scores():
    torch.manual_seed(12)
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    a, b = torch.randn(16, 4), torch.randn(4, 16)

    def f(a, b, q, k, v):  # the mask is a product too, made before the scores
        return torch.softmax(a @ b + q @ k.transpose(-2, -1), dim=-1) @ v
    cm = _check(f, a, b, q, k, v, kinds=("matmul", "attention"))  # a @ b stays a kernel of its own
    assert "lowering:" not in cm.explain()  # the attention node lowered as one kernel, not split
