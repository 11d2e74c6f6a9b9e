"""The PyTorch importer: every mapped ATen family imports to IR that the reference
interpreter evaluates exactly like eager PyTorch (values, dtypes, output nesting)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minicomp
from minicomp.frontend import trace, trace_with_spec
from minicomp.frontend.tensors import to_numpy, to_torch
from minicomp.ir.dtypes import DType
from minicomp.ir.interpreter import interpret


def run_both(fn, *inputs):
    """(interpreter result, eager result) for ``fn(*inputs)``, both as torch structures."""
    traced = trace_with_spec(fn, inputs)
    outs = interpret(traced.graph, *[to_numpy(t)[0] for t in inputs])
    got = traced.unflatten([to_torch(o, v.type.dtype) for o, v in zip(outs, traced.graph.outputs)])
    with torch.no_grad():
        want = fn(*inputs)
    return got, want


def check(fn, *inputs):
    got, want = run_both(fn, *inputs)
    torch.testing.assert_close(got, want, equal_nan=True)
    return got


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


# -- elementwise ---------------------------------------------------------------------------
UNARY = [torch.neg, torch.abs, torch.exp, torch.sin, torch.cos, torch.tanh, torch.sigmoid, torch.relu,
         F.silu, torch.erf, torch.floor, torch.isnan, F.relu6, F.hardswish, F.hardsigmoid, F.elu,
         lambda x: F.leaky_relu(x, 0.2), lambda x: F.hardtanh(x, -0.5, 0.5), F.gelu,
         lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.clamp(x, -0.3, 0.4),
         lambda x: torch.clamp(x, min=0.1), lambda x: torch.clamp(x, max=0.1), lambda x: torch.log(x.abs()),
         lambda x: torch.sqrt(x.abs()), lambda x: torch.rsqrt(x.abs() + 1), lambda x: torch.reciprocal(x)]


@pytest.mark.parametrize("fn", UNARY)
@pytest.mark.parametrize("dtype", FLOATS)
def test_unary(fn, dtype):
    check(fn, rand(3, 5, dtype=dtype))


def test_unary_int_promotes_to_float():
    x = torch.arange(-3, 4, dtype=torch.int32)
    got = check(lambda v: (torch.exp(v), torch.sigmoid(v), v.abs(), -v, torch.logical_not(v)), x)
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.int32


BINARY_SCALAR = [lambda x: x + 2, lambda x: x + 0.1, lambda x: x * 0.1, lambda x: x * 3, lambda x: x / 3,
                 lambda x: x - 1.5, lambda x: 2 - x, lambda x: 0.3 - x, lambda x: x ** 2, lambda x: x > 0.5,
                 lambda x: x == 1, lambda x: x <= 0.1, lambda x: torch.add(x, x, alpha=2),
                 lambda x: torch.sub(x, 1, alpha=3), lambda x: torch.maximum(x, x.flip(0) if False else x * 0.5),
                 lambda x: torch.minimum(x, x * -1)]


@pytest.mark.parametrize("fn", BINARY_SCALAR)
@pytest.mark.parametrize("dtype", FLOATS + [torch.int32, torch.int64])
def test_binary_with_scalars(fn, dtype):
    x = rand(4, 6, dtype=torch.float32) * 4
    check(fn, x.to(dtype))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_scalars_with_int_and_bool_tensors(dtype):
    x = torch.tensor([[0, 1, 2], [3, -4, 5]]).to(dtype)
    got = check(lambda v: (v + 1, v * 0.5, v / 2, v > 1, v + True), x)
    assert got[0].dtype == (torch.int64 if dtype == torch.bool else dtype)
    assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32


def test_div_rounding_modes_and_pow():
    a = torch.tensor([7, -7, 9, -9], dtype=torch.int64)
    b = torch.tensor([2, 2, -4, 4], dtype=torch.int64)
    check(lambda x, y: (torch.div(x, y, rounding_mode="floor"), torch.div(x, y, rounding_mode="trunc"),
                        x / y, torch.pow(x, 2), 2 ** x.abs()), a, b)


def test_zero_dim_tensor_operands_keep_torch_dtype():
    x = rand(3, 4, dtype=torch.float16)
    got = check(lambda v: (v * torch.tensor(2.5), v + torch.tensor(1, dtype=torch.int64)), x)
    assert got[0].dtype == torch.float16 and got[1].dtype == torch.float16


def test_mixed_dtype_tensors_and_broadcasting():
    check(lambda a, b: (a + b, a * b, a < b), rand(2, 1, 3, dtype=torch.float16), rand(4, 1, dtype=torch.float32))


def test_where_and_masked_fill_with_bool_masks():
    x = rand(3, 4)
    mask = rand(3, 4, seed=1) > 0
    check(lambda v, m: (torch.where(m, v, 0.5), torch.where(m, v, v * 2), v.masked_fill(m, -1e4),
                        v.masked_fill(~m, float("-inf")), torch.where(m, 1.0, 0.0), m & (v > 0),
                        m | (v > 1), m ^ m), x, mask)


def test_casts():
    x = rand(3, 4) * 100
    check(lambda v: (v.to(torch.float16), v.to(torch.bfloat16), v.to(torch.int32), v.double(),
                     (v > 0).float(), v.to(torch.int64).to(torch.float32), v.bool()), x)


# -- reductions and normalizations --------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_reductions(dtype):
    x = rand(2, 3, 5, dtype=dtype)
    check(lambda v: (v.sum(), v.sum(-1), v.sum((0, 2), keepdim=True), v.mean(1), v.mean(), v.amax(-1),
                     v.amin((0, 1)), v.max(), v.min(), v.max(dim=1), v.min(2, keepdim=True), v.argmax(),
                     v.argmax(-1), v.argmin(0, keepdim=True), v.var(-1), v.var(1, correction=0),
                     torch.var_mean(v, 2), v.std(-1), v.softmax(-1), v.log_softmax(1), v.cumsum(2),
                     torch.logsumexp(v, -1)), x)


def test_integer_reductions():
    x = torch.tensor([[1, 2, 3], [4, 5, -6]], dtype=torch.int32)
    got = check(lambda v: (v.sum(), v.sum(1), v.cumsum(1), v.amax(0), (v > 2).sum(), v.argmax(1),
                           v.sum(dtype=torch.float32)), x)
    assert got[0].dtype == torch.int64 and got[2].dtype == torch.int64


def test_softmax_with_dtype_and_half_inputs():
    x = rand(2, 7, dtype=torch.float16)
    check(lambda v: (v.softmax(-1), v.softmax(-1, dtype=torch.float32), v.float().log_softmax(0)), x)


def test_norms():
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(6)
            self.ln2 = nn.LayerNorm([4, 6], elementwise_affine=False)
            self.bn = nn.BatchNorm2d(4)
            self.gn = nn.GroupNorm(2, 4)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.rand_like(p) + 0.5)
                self.bn.running_mean.copy_(torch.randn(4))
                self.bn.running_var.copy_(torch.rand(4) + 0.5)

        def forward(self, x):
            return self.ln(x), self.ln2(x.transpose(1, 2).reshape(2, 5, 4, 6)), self.bn(x), self.gn(x)

    torch.manual_seed(0)
    check(Norms().eval(), rand(2, 4, 5, 6))


# -- contractions --------------------------------------------------------------------------
def test_linear_matmul_family():
    torch.manual_seed(0)
    lin, lin_nb = nn.Linear(8, 5), nn.Linear(8, 3, bias=False)
    check(lambda x, y, v: (lin(x), lin(x.reshape(2, 2, 8)), lin_nb(x), x @ y, torch.bmm(x.reshape(2, 2, 8), y.expand(2, 8, 3)),
                           x @ v, v @ y, torch.addmm(v[:3], x, y, beta=0.5, alpha=2.0), x.reshape(2, 2, 8) @ y),
          rand(4, 8), rand(8, 3, seed=1), rand(8, seed=2))


def test_linear_becomes_one_op():
    g = trace(nn.Linear(4, 3), (rand(2, 4),))
    assert [n.op for n in g.nodes if n.op != "constant"] == ["linear"]


@pytest.mark.parametrize("stride,padding,dilation,groups,bias", [
    (1, 0, 1, 1, True), (2, 1, 1, 1, False), (1, 2, 2, 2, True), ((2, 1), (0, 1), 1, 4, True)])
def test_conv2d(stride, padding, dilation, groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    check(conv, rand(2, 4, 9, 10))


def test_pooling():
    check(lambda x: (F.max_pool2d(x, 2), F.max_pool2d(x, 3, 2, 1, ceil_mode=True), F.avg_pool2d(x, 2),
                     F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F.adaptive_avg_pool2d(x, 1),
                     F.adaptive_avg_pool2d(x, (4, 2)), F.max_pool2d(x[0], 2)), rand(2, 3, 8, 8))


def test_3d_conv_is_unsupported():  # (1-d and transposed convolutions: tests/test_frontend_models.py)
    with pytest.raises(minicomp.UnsupportedOpError, match="3-d convolution"):
        trace(nn.Conv3d(2, 2, 3), (rand(1, 2, 5, 5, 5),))


# -- movement ------------------------------------------------------------------------------
def test_views_and_slices():
    x = rand(2, 3, 4)
    check(lambda v: (v.view(6, 4), v.transpose(0, 2), v.permute(2, 0, 1), v.flatten(), v.flatten(1),
                     v.unsqueeze(1), v[:, :1].squeeze(1), v.reshape(-1, 2), v[..., 1:], v[:, -2:, ::2],
                     v[:, 1:100], v[1], v[:, -1], v[:, 5:], v.expand(3, 2, 3, 4), v[:, :1].expand(-1, 3, -1),
                     v.mT, v[0].t(), v.contiguous(), v.clone(), v.detach()), x)


def test_cat_split_chunk_unbind():
    x, y = rand(2, 6), rand(2, 3, seed=1).to(torch.float16)
    check(lambda a, b: (torch.cat([a, b], 1), torch.cat([a, a], 0), *a.split(4, 1), *a.split([1, 5], 1),
                        *a.chunk(3, 1), *a.unbind(0), torch.stack([a, a], 1)), x, y)


def test_embedding_with_int64_and_int32_ids():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4)
    ids = torch.tensor([[1, 9, 0], [3, 3, 2]])
    check(emb, ids)
    check(emb, ids.to(torch.int32))
    check(lambda w, i: torch.index_select(w, 0, i), rand(5, 3), torch.tensor([4, 0, 4]))


def test_upsample_and_pad():
    x = rand(1, 2, 3, 4)
    check(lambda v: (F.interpolate(v, scale_factor=2, mode="nearest"), F.interpolate(v, size=(6, 8)),
                     F.pad(v, (1, 2)), F.pad(v, (1, 0, 2, 1), value=-1.0), F.pad(v, (-1, 1))), x)


def test_generators():
    x = rand(2, 3)
    check(lambda v: (torch.zeros_like(v), torch.ones(3, dtype=torch.int64), torch.full((2, 2), 7.5),
                     v + torch.arange(3), torch.arange(1, 7, 2, dtype=torch.float32), torch.full_like(v, 2),
                     v.new_zeros(4), torch.tril(v), torch.triu(torch.ones(3, 3, dtype=torch.bool))), x)


# -- inputs, outputs, names, errors --------------------------------------------------------
def test_noncontiguous_and_channels_last_inputs():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    x = rand(1, 3, 6, 6).to(memory_format=torch.channels_last)
    check(conv, x)
    t = rand(5, 4).t()
    g = trace(lambda v: v * 2, (t,))
    assert g.inputs[0].type.shape == (4, 5) and g.inputs[0].type.order is None
    check(lambda v: v * 2 + 1, t)
    check(lambda v: v.sum(0), rand(4, 8)[:, ::2])


def test_output_structures_are_rebuilt():
    got = check(lambda a, b: {"sum": a + b, "pair": (a, [b * 2])}, rand(2), rand(2, seed=1))
    assert set(got) == {"sum", "pair"} and isinstance(got["pair"][1], list)
    assert isinstance(check(lambda a: a + 1, rand(2)), torch.Tensor)


def test_names_and_locations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.register_buffer("scale", torch.ones(4))

        def forward(self, x):
            return self.fc1(x) * self.scale

    g = trace(Net(), (rand(2, 4),))
    assert [v.name for v in g.inputs] == ["x"]
    assert {n.results[0].name for n in g.constants()} >= {"fc1_weight", "fc1_bias", "scale"}
    line = inspect.getsourcelines(Net.forward)[1] + 1
    assert {n.loc for n in g.nodes if n.op != "constant"} == {f"test_frontend.py:{line}"}


def test_bf16_weights_become_bf16_constants():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).to(torch.bfloat16)
    g = trace(lin, (rand(2, 4, dtype=torch.bfloat16),))
    weights = {n.results[0].name: n for n in g.constants()}
    assert weights["weight"].attrs["dtype"] is DType.bf16
    assert weights["weight"].attrs["value"].dtype == np.float32
    check(lin, rand(2, 4, dtype=torch.bfloat16))


def _sort_model(x):
    y = x * 2
    return torch.sort(y).values  # the unsupported line


def test_unsupported_op_names_op_and_user_line():
    line = inspect.getsourcelines(_sort_model)[1] + 2
    with pytest.raises(minicomp.UnsupportedOpError) as info:
        trace(_sort_model, (rand(3, 4),))
    err = info.value
    assert "sort" in err.op and err.where == f"test_frontend.py:{line}"
    assert "aten.sort" in str(err) and f"test_frontend.py:{line}" in str(err)


def test_unsupported_fft_in_module():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).abs()

    with pytest.raises(minicomp.UnsupportedOpError) as info:
        trace(Spectral(), (rand(8),))
    assert "fft" in info.value.op and info.value.where.startswith("test_frontend.py:")


def _data_dependent(x):
    return x if x.sum() > 0 else -x


def _scaled(x):
    return x * 3  # the helper's line


def test_failed_trace_leaves_no_torch_function_mode_behind():
    # The source-recording mode is entered around the user's call only; an error raised
    # inside that call must still pop it, and the next trace must record lines again.
    with pytest.raises(Exception):
        trace(_data_dependent, (rand(3),))
    assert torch.overrides._get_current_function_mode_stack() == []
    line = inspect.getsourcelines(_scaled)[1] + 1
    assert {n.loc for n in trace(lambda x: _scaled(x), (rand(3),)).nodes if n.op == "mul"} == \
        {f"test_frontend.py:{line}"}


def test_training_mode_and_input_mutation_are_rejected():
    with pytest.raises(minicomp.UnsupportedOpError, match="model.eval"):
        trace(nn.Dropout(0.5).train(), (rand(4),))
    with pytest.raises(minicomp.UnsupportedOpError, match="batch norm"):
        trace(nn.BatchNorm1d(3).train(), (rand(2, 3),))
    with pytest.raises(minicomp.UnsupportedOpError):
        trace(lambda x: x.add_(1), (rand(4),))


def test_inplace_ops_inside_the_model_are_functionalized():
    check(nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Hardtanh(inplace=True)), rand(3, 4))
    check(lambda x: (x * 2).add_(1).relu_().mul_(torch.tensor(3.0)), rand(3, 4))


def test_fx_graph_module_input():
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.GELU()))
    check(gm, rand(2, 4))
    assert {n.results[0].name for n in trace(gm, (rand(2, 4),)).constants()} == {"v0_weight", "v0_bias"}


# -- torch.compile backend -----------------------------------------------------------------
class _Breaks(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.relu(self.fc(x))
        scale = y.sum().item()  # a graph break: Dynamo hands over two subgraphs
        print("between subgraphs")
        return (y * 2 + x.shape[0], y.mean(-1) * scale)


def test_torch_compile_with_graph_breaks_and_new_shapes():
    import torch._dynamo
    from minicomp.dynamo import make_backend

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Breaks().eval()
    compiled = torch.compile(model, backend=make_backend("interpret"))
    with torch.no_grad():
        for batch in (2, 3, 5):  # new shapes: Dynamo goes symbolic, we specialize per shape
            x = rand(batch, 4, seed=batch)
            torch.testing.assert_close(compiled(x), model(x))


def test_backend_is_found_by_name():
    import torch._dynamo
    from torch._dynamo.backends.registry import lookup_backend

    from minicomp.dynamo import minicomp_backend

    assert lookup_backend("minicomp") is minicomp_backend
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU()).eval()
    x = rand(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="minicomp")(x), model(x))


def test_backend_sees_weight_updates():
    import torch._dynamo
    from minicomp.dynamo import make_backend

    torch._dynamo.reset()
    model = nn.Linear(3, 2).eval()
    compiled = torch.compile(model, backend=make_backend("interpret"))
    x = rand(1, 3)
    with torch.no_grad():
        compiled(x)
        model.weight.add_(1.0)
        torch.testing.assert_close(compiled(x), model(x))


def test_type_mismatch_is_reported_at_import(monkeypatch):
    from minicomp.frontend import aten_ops

    def wrong_relu(ctx, x):  # a buggy mapping: transposes instead of relu
        return ctx.emit("permute", [x], dims=(1, 0))

    monkeypatch.setitem(aten_ops._HANDLERS, torch.ops.aten.relu.default, wrong_relu)
    with pytest.raises(minicomp.CompileError, match=r"aten\.relu\.default.*f32\[3,2\].*f32\[2,3\]"):
        trace(lambda x: torch.relu(x), (rand(2, 3),))


def test_supported_ops_cover_the_docs():
    from minicomp.frontend.aten_ops import supported_ops

    names = set(supported_ops())
    for op in ["aten.convolution.default", "aten.native_layer_norm.default", "aten._softmax.default",
               "aten.embedding.default", "aten.upsample_nearest2d.vec", "aten.cumsum.default",
               "aten.max_pool2d_with_indices.default", "aten.masked_fill.Scalar", "aten.arange.start_step"]:
        assert op in names
