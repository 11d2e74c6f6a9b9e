"""The ATen ops real models produce (issue 16), each checked against eager.

Attention in every ATen form ``scaled_dot_product_attention`` takes, 1-d and transposed
convolutions, interpolation, advanced indexing and gathers, ``as_strided`` views, the
norms of transformer models, and value-read tracing (``specialize=True``). Each runs
through the reference interpreter (fast, exact semantics) and, for the kernels that
matter, through the CPU backend at float32's default tolerances.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minicomp
from minicomp.errors import DataDependentError, UnsupportedOpError
from minicomp.frontend import trace, trace_with_spec
from minicomp.frontend.value_guards import ValueGuardError
from tests.test_frontend import check, rand

aten = torch.ops.aten


def compiled(fn, *inputs, **options):
    """Compile for the CPU, check against eager, return the compiled model."""
    cm = minicomp.compile(fn, inputs, target="cpu", **options)
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), fn(*inputs))
    return cm


# -- attention -----------------------------------------------------------------------------
Q, K, V = rand(2, 4, 16, 8, seed=1), rand(2, 4, 20, 8, seed=2), rand(2, 4, 20, 8, seed=3)
BOOL_MASK = rand(16, 20, seed=4) > -0.5
BOOL_MASK[3] = False  # a query row with no key: zeros, as torch's kernels give
FLOAT_MASK = rand(2, 1, 16, 20, seed=5)
FLOAT_MASK[0, 0, 2] = float("-inf")


@pytest.mark.parametrize("name, fn, args", [
    ("plain", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (Q, K, V)),
    ("causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (Q, K, V)),
    ("scale", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), (Q, K, V)),
    ("bool_mask", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), (Q, K, V, BOOL_MASK)),
    ("float_mask", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), (Q, K, V, FLOAT_MASK)),
    ("gqa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), (Q, K[:, :2], V[:, :2, :, :6])),
    ("3d_math", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (Q[0], K[0], V[0])),
])
def test_sdpa_forms_match_eager(name, fn, args):
    check(fn, *args)


def test_sdpa_becomes_the_fused_attention_kernel():
    cm = compiled(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), Q, K, V)
    assert [k.kind for k in cm.kernels] == ["attention"]


@pytest.mark.parametrize("op", [aten._scaled_dot_product_efficient_attention.default,
                                aten._scaled_dot_product_flash_attention.default])
def test_gpu_sdpa_forms_match_the_math(op):
    """The forms torch picks on a GPU, in an FX graph traced through their meta kernels (they have
    no CPU kernel): the imported program computes what the composite op computes."""
    import operator
    g = torch.fx.Graph()
    q, k, v = (g.placeholder(n) for n in "qkv")
    extra = (None, False) if op is aten._scaled_dot_product_efficient_attention.default else ()
    node = g.call_function(op, (q, k, v, *extra), {"is_causal": True, "scale": 0.5})
    g.output(g.call_function(operator.getitem, (node, 0)))
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    got, _ = run_both_graph(gm, Q, K, V)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(Q, K, V, is_causal=True, scale=0.5))


def run_both_graph(gm, *inputs):
    from minicomp.frontend.tensors import to_numpy, to_torch
    from minicomp.ir.interpreter import interpret
    traced = trace_with_spec(gm, inputs)
    outs = interpret(traced.graph, *[to_numpy(t)[0] for t in inputs])
    return traced.unflatten([to_torch(o, v.type.dtype) for o, v in zip(outs, traced.graph.outputs)]), traced


def test_sdpa_with_dropout_is_refused():
    with pytest.raises(UnsupportedOpError, match="dropout_p=0.5"):
        trace(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.5), (Q, K, V))


# -- convolutions and resampling --------------------------------------------------------------
@pytest.mark.parametrize("layer, shape", [
    (nn.Conv1d(4, 6, 5, stride=2, padding=2), (2, 4, 31)),
    (nn.Conv1d(4, 8, 3, padding=4, dilation=2, groups=2), (1, 4, 20)),
    (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (1, 4, 7, 9)),
    (nn.ConvTranspose2d(4, 6, (3, 2), stride=(1, 3), padding=(0, 1), groups=2, dilation=2), (2, 4, 5, 6)),
    (nn.ConvTranspose2d(2, 2, 3, stride=2, padding=3), (1, 2, 8, 8)),  # padding beyond the kernel crops
    (nn.ConvTranspose1d(3, 5, 4, stride=3, padding=2), (1, 3, 10)),
])
def test_1d_and_transposed_convolutions(layer, shape):
    torch.manual_seed(0)
    compiled(layer.eval(), rand(*shape))


@pytest.mark.parametrize("kwargs, shape", [
    (dict(scale_factor=2, mode="bilinear"), (1, 2, 5, 7)),
    (dict(size=(9, 4), mode="bilinear", align_corners=True), (1, 2, 5, 7)),
    (dict(scale_factor=1.5, mode="bicubic"), (1, 2, 6, 6)),
    (dict(size=(8, 8), mode="bicubic", align_corners=True), (1, 2, 6, 6)),
    (dict(scale_factor=3, mode="nearest"), (1, 2, 6)),
    (dict(scale_factor=2, mode="nearest"), (1, 2, 3, 4, 5)),
    (dict(size=11, mode="linear"), (1, 2, 6)),
])
def test_interpolation(kwargs, shape):
    check(lambda x: F.interpolate(x, **kwargs), rand(*shape))


def test_transformer_norms_and_masks():
    check(nn.GroupNorm(2, 6).eval(), rand(2, 6, 5, 5))
    check(nn.RMSNorm(8).eval(), rand(2, 5, 8))  # torch's composite adds eps in place: made functional
    check(lambda x, m: (x.triu(1) + x.tril(-1)).masked_fill(m, -1.5).cumsum(1), rand(5, 8), rand(5, 8) > 0)


# -- indexing ------------------------------------------------------------------------------------
X = rand(3, 5, 4)


@pytest.mark.parametrize("fn, args", [
    (lambda x, i: x[:, i], (X, torch.tensor([[0, 2], [4, -1]]))),
    (lambda x, i: x[i], (X, torch.tensor([2, -3, 0]))),
    (lambda x, i, j: x[i, :, j], (X, torch.tensor([0, 2]), torch.tensor([[1], [3]]))),  # apart: dims first
    (lambda x, i, j: x[:, i, j], (X, torch.tensor([0, 2]), torch.tensor([[1], [3]]))),
    (lambda x, i: torch.gather(x, 1, i), (X, torch.tensor([[[0, 4, 1, 1]], [[2, 2, 2, 2]], [[3, 0, 1, 4]]]))),
    (lambda x, i: torch.index_select(x, 1, i), (X, torch.tensor([4, 0, 0]))),
    (lambda x: (x.flip(1, 2), torch.roll(x, 2, 1)), (X,)),
    (lambda x: x.permute(2, 0, 1).as_strided((4, 3), (1, 4)), (X,)),
])
def test_indexing_matches_eager(fn, args):
    check(fn, *args)
    compiled(fn, *args)


def test_out_of_range_index_is_an_error_not_a_neighbour():
    cm = minicomp.compile(lambda x, i: torch.gather(x, 1, i), (X, torch.zeros(3, 2, 4, dtype=torch.long)))
    with pytest.raises(IndexError):
        cm(X, torch.full((3, 2, 4), 5))  # row 5 of 5 would be row 0 of the next slice if unchecked


def test_boolean_mask_indexing_is_refused():
    with pytest.raises(UnsupportedOpError):
        trace(lambda x: x[x > 0], (X,))


def test_in_place_restride_of_a_fresh_result_is_a_view():
    def restride(x):
        y = x.mean((-1, -2), keepdim=True)
        y.as_strided_(y.shape, (y.shape[1], 1, y.shape[1], y.shape[1]))
        return y.permute(0, 2, 3, 1) * 2
    check(restride, rand(1, 6, 3, 3))


# -- value reads --------------------------------------------------------------------------------
def branch(x, m):
    if m.all():  # the value read the guard names
        return x * 2
    return x - 1


def test_value_reads_specialize_behind_guards():
    x, ones = rand(4), torch.ones(4, dtype=torch.bool)
    with pytest.raises(DataDependentError):
        trace_with_spec(branch, (x, ones))
    traced = trace_with_spec(branch, (x, ones), specialize=True)
    assert [(g.value, g.code) for g in traced.guards] == [(True, "if m.all():  # the value read the guard names")]
    cm = minicomp.compile(traced.graph, (x, ones))
    torch.testing.assert_close(traced.unflatten(cm(x, ones)), branch(x, ones))
    with pytest.raises(ValueGuardError, match=r"`if m.all\(\):.*` at test_frontend_models.py:\d+ read True"):
        traced.unflatten(cm(x, torch.tensor([True, False, True, True])))


def test_value_dependent_shapes_stay_errors_when_specializing():
    with pytest.raises(DataDependentError, match="depends on tensor values"):
        trace_with_spec(lambda x: torch.nonzero(x > 0) if x.sum() > -100 else x, (rand(6),), specialize=True)


def test_tracing_leaves_the_models_python_state_as_it_was():
    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))
            self.cache = {}

        def forward(self, x):
            if "w2" not in self.cache:
                self.cache["w2"] = self.w * 2
            return x + self.cache["w2"]
    m = Caching()
    trace(m, (rand(3),))
    assert m.cache == {}
    torch.testing.assert_close(m(rand(3)), rand(3) + 2)
