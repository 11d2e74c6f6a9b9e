"""The three examples import, interpret like eager PyTorch, and round-trip through the text format."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import minicomp
import minicomp.ir
from minicomp.ir.parser import parse

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"minicomp_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp", "lenet", "transformer_block"])
def test_example_interprets_like_eager(name):
    ex = load(name)
    model, inputs = ex.model(), ex.example_inputs()
    assert not model.training
    g = minicomp.trace(model, inputs)
    got = minicomp.interpret(g, *[t.numpy() for t in inputs])
    with torch.no_grad():
        want = model(*inputs)
    assert len(got) == 1
    torch.testing.assert_close(torch.from_numpy(np.asarray(got[0])), want)
    assert str(parse(str(g))) == str(g)


def test_examples_are_deterministic():
    ex = load("mlp")
    a, b = ex.model(), ex.model()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(ex.example_inputs()[0], ex.example_inputs()[0])


def test_transformer_block_other_sizes():
    ex = load("transformer_block")
    model, inputs = ex.model(), ex.example_inputs(batch=2, seq=16)
    assert inputs[0].shape == (2, 16, 128)
    g = minicomp.trace(model, inputs)
    ops = [n.op for n in g.nodes]
    assert ops.count("linear") == 4 and ops.count("softmax") == 1 and ops.count("layer_norm") == 2
    got = minicomp.interpret(g, inputs[0].numpy())
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got[0]), model(*inputs))
