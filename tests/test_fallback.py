"""Partial fallback: ``fallback=True`` runs only the unsupported ops in PyTorch.

Checked against eager PyTorch: the partitioned model's results, ``cm.fallbacks``
(ATen op name and source line), that native kernels run before and after an
external op, and that ``fallback=False`` keeps raising the clear error.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import minicomp
from minicomp.fallback import Segment, partition
from minicomp.ir.graph import Graph
from minicomp.ir.interpreter import interpret
from minicomp.ir.ops import IRError
from minicomp.ir.types import TensorType
from minicomp.ir.dtypes import DType


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path / "cache"))


def _line_of(fn, text: str) -> str:
    """``test_fallback.py:N`` of the line of ``fn`` containing ``text``."""
    lines, start = inspect.getsourcelines(fn)
    return f"test_fallback.py:{start + next(i for i, ln in enumerate(lines) if text in ln)}"


def sort_between(x):
    y = torch.relu(x) * 2.0
    v = torch.sort(y, dim=-1).values
    return v + 1.0


def _steps(cm) -> list[str]:
    """The partition of the compiled graph as "native" / external target names."""
    return ["native" if isinstance(s, Segment) else s.attrs["target"] for s in partition(cm.graph)]


def test_without_fallback_the_error_names_the_op_and_line():
    x = torch.randn(3, 5)
    with pytest.raises(minicomp.UnsupportedOpError, match=r"aten\.sort\.default") as info:
        minicomp.compile(sort_between, (x,))
    assert info.value.op == "aten.sort.default"
    assert info.value.where == _line_of(sort_between, "torch.sort")
    assert "no minicomp mapping" in str(info.value)


@pytest.mark.parametrize("target", ["cpu", "interpret"])
def test_unsupported_op_runs_between_native_parts(target):
    x = torch.randn(3, 5)
    x[0, 0], x[1, 1], x[2, 2] = float("nan"), float("-inf"), -0.0
    cm = minicomp.compile(sort_between, (x,), target=target, fallback=True)
    torch.testing.assert_close(cm(x), sort_between(x), equal_nan=True)
    assert cm.fallbacks == [f"aten.sort.default at {_line_of(sort_between, 'torch.sort')}"]
    assert _steps(cm) == ["native", "aten.sort.default", "native"]
    if target == "cpu":
        kernels = cm.kernels
        assert len(kernels) == 2 and all(k.source for k in kernels)
        assert "relu" in kernels[0].name and "add" in kernels[1].name
        assert cm.program is None and "part 1" in cm.summary()


def test_two_unsupported_ops_and_an_external_result_as_output():
    def fn(x, y):
        a = torch.cummin(torch.exp(x), 0).values   # external on a native result
        values, idx = torch.sort(y)                # external on a graph input, two results
        z = torch.cummax(a * values, dim=1).values  # external chain: native part between
        return z - 1.0, idx, values
    x, y = torch.randn(4, 6), torch.randn(4, 6)
    cm = minicomp.compile(fn, (x, y), fallback=True)
    got, ref = cm(x, y), fn(x, y)
    torch.testing.assert_close(got, ref)
    names = [f.split(" at ")[0] for f in cm.fallbacks]
    assert sorted(names) == ["aten.cummax.default", "aten.cummin.default", "aten.sort.default"]
    assert all(" at test_fallback.py:" in f for f in cm.fallbacks)
    assert _steps(cm)[0] == "native" and _steps(cm)[-1] == "native" and len(cm.kernels) >= 3
    y2 = torch.randn(4, 6)  # results of a second call are fresh tensors, not reused buffers
    got2 = cm(x, y2)
    torch.testing.assert_close(got2, fn(x, y2))
    torch.testing.assert_close(got, ref)


def test_output_is_only_an_external_result():
    fn = lambda x: torch.cummin(x, 1).values  # noqa: E731
    x = torch.randn(2, 3)
    cm = minicomp.compile(fn, (x,), fallback=True)
    out = cm(x)
    torch.testing.assert_close(out, fn(x))
    assert cm.kernels == [] and _steps(cm) == ["aten.cummin.default"]
    assert cm.fallbacks[0].startswith("aten.cummin.default at test_fallback.py:")


class WithWeights(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6))
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x, img):
        w = torch.sort(self.w).values                  # external on a weight: never constant-folded
        c = torch.cummin(self.conv(img), 3).values
        return torch.cummin(x.t(), 1).values + w.sum(), self.conv(c), x


def test_weights_views_contractions_and_passthrough():
    m = WithWeights().eval()
    x, img = torch.randn(6, 6), torch.randn(1, 2, 5, 5)
    cm = minicomp.compile(m, (x, img), fallback=True, verify=True)
    with torch.no_grad():
        ref = m(x, img)
    out = cm(x, img)
    torch.testing.assert_close(out, ref)
    assert out[2] is not x  # an input returned as output is a copy, as in the native path
    assert len(cm.fallbacks) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("shape", [(4, 3), (1, 1), (0, 3)])
def test_dtypes_and_edge_shapes(dtype, shape):
    if dtype is torch.bool:
        def fn(x):
            return torch.logical_not(torch.cummin(torch.logical_not(x), 0).values) | x
        x = torch.rand(shape) > 0.5
    else:
        def fn(x):
            return torch.cummin(x * 2, 0).values + 1
        x = (torch.randn(shape) * 10).to(dtype)
    cm = minicomp.compile(fn, (x,), fallback=True)
    torch.testing.assert_close(cm(x), fn(x))
    assert cm.fallbacks and cm.fallbacks[0].startswith("aten.cummin.default")


def test_a_new_signature_partitions_again():
    x = torch.randn(3, 5)
    cm = minicomp.compile(sort_between, (x,), fallback=True)
    x2 = torch.randn(7, 2)
    torch.testing.assert_close(cm(x2), sort_between(x2))
    assert _steps(cm) == ["native", "aten.sort.default", "native"]
    torch.testing.assert_close(cm(x), sort_between(x))


def test_random_ops_still_run_the_whole_model_eagerly():
    """An op that cannot be replayed exactly (random here) keeps the whole-model fallback."""
    def fn(x):
        return torch.nn.functional.dropout(torch.cummin(x, 0).values, 0.5, training=True) * 0
    x = torch.randn(4, 4)
    with pytest.raises(minicomp.UnsupportedOpError, match="cummin"):
        minicomp.compile(fn, (x,))
    cm = minicomp.compile(fn, (x,), fallback=True)
    torch.testing.assert_close(cm(x), fn(x))
    assert cm.kernels == [] and len(cm.fallbacks) == 1 and "bernoulli" in cm.fallbacks[0]


def test_external_node_has_no_reference_and_roundtrips_its_attrs():
    g = Graph("ext")
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    node = g.add("external", [x], {"target": "aten.flip.default", "args": '{"args": [{"tensor": 0}, [0]], "kwargs": {}}',
                                   "result_types": (TensorType(DType.f32, (2, 3)),)})
    g.set_outputs(node.results)
    with pytest.raises(IRError, match="aten.flip.default runs only through a PyTorch fallback"):
        interpret(g, np.zeros((2, 3), np.float32))
    with pytest.raises(IRError, match="result_types"):
        g.add("external", [x], {"target": "aten.flip.default", "args": "{}", "result_types": ()})
    cm = minicomp.compile(g, (torch.randn(2, 3),), fallback=True)  # a Graph with externals runs too
    t = torch.randn(2, 3)
    torch.testing.assert_close(cm(t)[0], torch.flip(t, [0]))


def test_an_attention_op_without_dropout_falls_back_alone(monkeypatch):
    """SDPA's ATen ops are tagged nondeterministic for their dropout; with dropout_p=0 (inference) a
    fallback replays exactly, so it runs alone in PyTorch and the rest of the model stays native."""
    from minicomp.frontend import aten_ops

    def unsupported(ctx, *args, **kwargs):
        raise ctx.unsupported("(pretend the attention mapping is missing)")
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    monkeypatch.setitem(aten_ops._HANDLERS, op, unsupported)

    def fn(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(q.relu(), k, v, is_causal=True)
        return out * 2
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)
    cm = minicomp.compile(fn, (q, k, v), fallback=True)
    torch.testing.assert_close(cm(q, k, v), fn(q, k, v))
    assert [f.split(" at ")[0] for f in cm.fallbacks] == [str(op)]
    assert _steps(cm) == ["native", str(op), "native"]
