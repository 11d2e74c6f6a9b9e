"""minicomp.compile on the CPU (LLVM JIT): examples and single ops against eager PyTorch."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F

import minicomp
from eager_ref import eager

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path / "cache"))


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["mlp", "lenet", "transformer_block"])
@pytest.mark.parametrize("batch", [1, 3])
def test_examples_match_eager(name, batch):
    ex = load_example(name)
    model = ex.model()
    inputs = ex.example_inputs(batch)
    cm = minicomp.compile(model, inputs)
    with torch.no_grad():
        ref = model(*inputs)
    torch.testing.assert_close(cm(*inputs), ref)
    assert cm.fallbacks == [] and cm.kernels
    assert all(k.source for k in cm.kernels)
    assert "define" in cm.source("llvm") and cm.source("asm")


def test_unfused_pipeline_matches_too():
    ex = load_example("transformer_block")
    model, inputs = ex.model(), ex.example_inputs(2)
    cm = minicomp.compile(model, inputs, passes=[])
    with torch.no_grad():
        torch.testing.assert_close(cm(*inputs), model(*inputs))


def _edge(shape, dtype):
    if dtype == torch.bool:
        return torch.rand(shape) < 0.5
    if not dtype.is_floating_point:
        return torch.randint(-6, 7, shape, dtype=dtype)
    x = torch.randn(shape) * 2
    flat = x.view(-1)
    if flat.numel() >= 4:
        flat[:4] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0])
    return x.to(dtype)


FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
UNARY = [torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.sin, torch.cos, torch.tanh, torch.sigmoid,
         torch.relu, F.silu, torch.erf, torch.reciprocal, torch.floor, torch.abs, torch.neg, F.gelu,
         lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.clamp(x, -0.5, 0.75), F.leaky_relu,
         F.hardtanh, F.relu6, torch.isnan]


@pytest.mark.parametrize("fn", UNARY)
@pytest.mark.parametrize("dtype", FLOATS)
def test_unary_float(fn, dtype):
    x = _edge((5, 7), dtype)
    torch.testing.assert_close(minicomp.compile(fn, (x,))(x), eager(fn, x), equal_nan=True)


BINARY = [torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.pow, torch.eq, torch.lt,
          torch.ge, lambda a, b: torch.where(a > b, a, b), lambda a, b: torch.div(a, b, rounding_mode="floor")]


@pytest.mark.parametrize("fn", BINARY)
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float16, torch.float32),
                                    (torch.bfloat16, torch.bfloat16), (torch.int32, torch.int64),
                                    (torch.int64, torch.float32), (torch.float64, torch.float64)])
def test_binary_broadcast(fn, dtypes):
    a, b = _edge((4, 1, 6), dtypes[0]), _edge((3, 1), dtypes[1])
    if not dtypes[1].is_floating_point:
        b = b.abs() + 1  # integer division / power by zero or negatives is an error or UB
    ref = fn(a, b)
    torch.testing.assert_close(minicomp.compile(fn, (a, b))(a, b), ref, equal_nan=True)


@pytest.mark.parametrize("fn", [
    lambda x: x.sum(1), lambda x: x.mean((0, 2), keepdim=True), lambda x: x.amax(-1), lambda x: x.argmax(1),
    lambda x: x.var(2), lambda x: torch.softmax(x, -1), lambda x: torch.log_softmax(x, 1),
    lambda x: torch.cumsum(x, 1), lambda x: F.layer_norm(x, (6,)), lambda x: x.permute(2, 0, 1).reshape(6, 12) * 2,
    lambda x: torch.cat([x, -x], 1), lambda x: x[:, 1::2].exp(), lambda x: x.transpose(1, 2) @ x,
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reductions_views_contractions(fn, dtype):
    x = torch.randn(3, 4, 6).to(dtype)
    torch.testing.assert_close(minicomp.compile(fn, (x,))(x), fn(x))


def test_size_zero_and_zero_dim_inputs():
    fn = lambda a, b: (a * 2 + 1, b.exp())  # noqa: E731
    a, b = torch.randn(0, 5), torch.tensor(0.5)
    cm = minicomp.compile(fn, (a, b))
    out = cm(a, b)
    assert out[0].shape == (0, 5)
    torch.testing.assert_close(out[1], b.exp())


def test_output_structure_and_aliases():
    fn = lambda x, y: {"sum": x + y, "same": x, "pair": (y * 2, y * 2)}  # noqa: E731
    x, y = torch.randn(3), torch.randn(3)
    out = minicomp.compile(fn, (x, y))(x, y)
    ref = fn(x, y)
    torch.testing.assert_close(out, ref)
    assert out["same"].data_ptr() != x.data_ptr()


def test_interpret_target():
    fn = lambda x: torch.softmax(x * 3, -1)  # noqa: E731
    x = torch.randn(4, 5)
    torch.testing.assert_close(minicomp.compile(fn, (x,), target="interpret")(x), fn(x))


def test_unknown_target_raises_clearly():  # the triton target: tests/test_compile_triton.py
    with pytest.raises(minicomp.CompileError, match="unknown target"):
        minicomp.compile(torch.relu, (torch.randn(2),), target="tpu")


def test_fallback_runs_eager_and_says_so():
    fn = lambda x: torch.fft.fft(x).real  # noqa: E731
    x = torch.randn(8)
    with pytest.raises(minicomp.UnsupportedOpError):
        minicomp.compile(fn, (x,))
    cm = minicomp.compile(fn, (x,), fallback=True)
    torch.testing.assert_close(cm(x), fn(x))
    assert cm.fallbacks and "fft" in cm.fallbacks[0]


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_random_graphs_compile_like_eager(data):
    from minicomp.ir import DType
    from minicomp.testing.graphs import graphs
    case = data.draw(graphs(max_nodes=6, dtypes=(DType.f32, DType.bf16, DType.i64), special_values=True))
    fn, inputs = case.torch_fn(), case.to_torch_inputs()
    ref = fn(*inputs)
    out = minicomp.compile(fn, inputs)(*inputs)
    torch.testing.assert_close(out, ref, equal_nan=True, msg=lambda m: f"{m}\n{case.ir()}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_log_softmax_last_dim_rounds_like_eager(dtype):
    """Regression (deep random run): eager rounds sum(exp) and its log to the input dtype."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(64, 2, generator=g) * 3).to(dtype)
    fn = lambda t: torch.log_softmax(t, dim=-1)  # noqa: E731
    cm = minicomp.compile(fn, (x,), target="cpu")
    torch.testing.assert_close(cm(x), fn(x))
