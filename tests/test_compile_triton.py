"""``minicomp.compile(..., target="triton")`` end to end, run by Triton's interpreter.

The examples compile and match eager PyTorch, every kernel also compiles ahead of
time for sm_90, and the call guards behave as on the CPU. Also: an IR Graph as the
model. The interpreter is slow and AOT compiles are cold on a fresh Triton cache: the examples
run once each (about 80 s cold, 35 s with a warm ~/.triton cache, on 2 cores).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import minicomp
from minicomp.errors import CompileError, GuardError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """Triton's interpreter for this module (set before any kernel is loaded)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp", "lenet", "transformer_block"])
def test_example_matches_eager_and_aot_compiles(name):
    module = load_example(name)
    model, inputs = module.model(), tuple(module.example_inputs())
    cm = minicomp.compile(model, inputs, target="triton")
    assert cm.device == torch.device("cpu")  # the interpreter runs on CPU tensors
    results = cm.aot_compile(arch=90)
    assert len(results) == len(cm.kernels) > 0
    failed = [f"{r.name}: {r.error[-300:]}" for r in results if not r.ok]
    assert not failed, failed
    assert all(r.ptx_bytes > 0 and r.cubin_bytes > 0 for r in results)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(cm(*inputs), want)
    assert cm.source_kinds() == ["triton"]
    text = cm.source("triton")
    assert "@triton.jit" in text and "def run(*args)" in text
    for k in cm.kernels:
        assert k.kind in ("loop", "reduction", "matmul", "conv", "pool", "attention") and "@triton.jit" in k.source
    assert "triton" in cm.summary() and f"{len(cm.kernels)} kernel(s)" in cm.summary()


def scale_add(x, y):
    return torch.relu(x) * 2 + y


def test_guards_recompile_or_raise():
    x, y = torch.randn(4, 8), torch.randn(8)
    cm = minicomp.compile(scale_add, (x, y), target="triton")
    torch.testing.assert_close(cm(x, y), scale_add(x, y))
    x2 = torch.randn(3, 8)  # new shape: recompiles
    torch.testing.assert_close(cm(x2, y), scale_add(x2, y))
    assert cm.graph.inputs[0].type.shape == (3, 8)
    xt = torch.randn(8, 4).t()  # strides: made contiguous
    torch.testing.assert_close(cm(xt, y), scale_add(xt, y))
    torch.testing.assert_close(cm(x.numpy(), y.numpy()), scale_add(x, y))  # numpy arrays are accepted
    with pytest.raises(GuardError, match="2 tensor input"):
        cm(x)
    with pytest.raises(GuardError, match="device 'meta'"):
        cm(x.to("meta"), y)
    with pytest.raises(GuardError, match="expected a torch.Tensor"):
        cm(x, 1.0)

    strict = minicomp.compile(scale_add, (x, y), target="triton", recompile=False)
    with pytest.raises(GuardError, match="input 0 has shape \\[3, 8\\].*recompile=False"):
        strict(x2, y)
    with pytest.raises(GuardError, match="dtype torch.float64"):
        strict(x.double(), y)
    torch.testing.assert_close(strict(x, y), scale_add(x, y))


def test_aliased_and_constant_outputs_are_copies():
    w = torch.randn(5)

    def fn(x):
        return x, x + 1, w

    x = torch.randn(5)
    out = minicomp.compile(fn, (x,), target="triton")(x)
    torch.testing.assert_close(out, fn(x))
    assert out[0].data_ptr() != x.data_ptr()


def test_cpu_only_methods_and_missing_sources_are_clear():
    x = torch.randn(4)
    cm = minicomp.compile(torch.relu, (x,), target="triton")
    with pytest.raises(CompileError, match="available: triton"):
        cm.source("llvm")
    cpu = minicomp.compile(torch.relu, (x,), target="cpu")
    assert cpu.source_kinds() == ["llvm", "llvm-unopt", "asm"]
    with pytest.raises(CompileError, match="needs a Triton target"):
        cpu.aot_compile(90)


@pytest.mark.parametrize("target", ["cpu", "interpret", "triton"])
def test_graph_as_model(target):
    x, y = torch.randn(3, 4), torch.randn(4)
    graph = minicomp.trace(lambda a, b: (a * b, (a + b).sum()), (x, y))
    before = str(graph)
    cm = minicomp.compile(graph, (x, y), target=target)
    got = cm(x, y)
    assert isinstance(got, list) and len(got) == 2
    torch.testing.assert_close(got[0], x * y)
    torch.testing.assert_close(got[1], (x + y).sum())
    assert str(graph) == before  # the caller's graph is never modified
    with pytest.raises(GuardError, match="input 0 is float32\\[2, 4\\]"):
        cm(torch.randn(2, 4), y)


def test_graph_example_inputs_must_match():
    graph = minicomp.trace(torch.neg, (torch.randn(3),))
    with pytest.raises(GuardError, match="takes 1 input"):
        minicomp.compile(graph, (np.zeros(3, np.float32), np.zeros(3, np.float32)))
    with pytest.raises(GuardError, match="float64"):
        minicomp.compile(graph, (torch.zeros(3, dtype=torch.float64),))


def test_without_cuda_the_interpreter_is_switched_on_with_a_warning(monkeypatch):
    from minicomp.triton_runtime import choose_device
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="TRITON_INTERPRET=1"):
        assert choose_device() == torch.device("cpu")
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
