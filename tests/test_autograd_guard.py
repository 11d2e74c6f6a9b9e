"""Autograd, lazy tensor flags and tensor kinds at the call boundary (issue 14 points 3, 4, 16).

* Grad mode on and a tensor that requires grad: the call runs under autograd (compiled
  forward and backward graphs, see tests/test_training.py; eager PyTorch's backward for
  second derivatives), so ``backward()`` fills every ``.grad`` with eager's values and
  outputs require grad exactly when eager's do.
* Inputs with the negative or conjugate bit set are read with their flags applied.
* Sparse, MKL-DNN, nested, quantized and meta tensors and non-native-byte-order numpy
  arrays are one clear GuardError.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch._dynamo
from torch import nn

import minicomp
from minicomp.errors import GuardError, MinicompError


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3)).eval()


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        y = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(y.flatten(1))


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    m = _ConvNet()
    with torch.no_grad():  # non-trivial running statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


CASES = {"mlp": (_mlp, (4, 6)), "convnet": (_convnet, (2, 2, 8, 8))}


def _grads(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    x.grad = None
    (out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["input"] = x.grad.clone()
    return grads


def _compare(model, compiled, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    want_out = model(x)
    want = _grads(model, x, want_out)
    got_out = compiled(x)
    assert got_out.requires_grad == want_out.requires_grad
    torch.testing.assert_close(got_out, want_out)
    got = _grads(model, x, got_out)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("name", CASES)
def test_backward_through_minicomp_compile_gives_eager_gradients(name):
    build, shape = CASES[name]
    model = build()
    compiled = minicomp.compile(model, (torch.randn(*shape),), cache=False)
    _compare(model, compiled, shape)


@pytest.mark.parametrize("name", CASES)
def test_backward_through_frozen_weights_gives_eager_gradients(name):
    build, shape = CASES[name]
    model = build()
    compiled = minicomp.compile(model, (torch.randn(*shape),), cache=False, freeze=True)
    _compare(model, compiled, shape)


@pytest.mark.parametrize("name", CASES)
def test_backward_through_torch_compile_gives_eager_gradients(name):
    torch._dynamo.reset()
    build, shape = CASES[name]
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # backward graphs may run in eager, said once
        _compare(model, torch.compile(model, backend="minicomp"), shape)


def test_outputs_require_grad_exactly_where_eager_does():
    w = torch.randn(3, 3, requires_grad=True)

    def f(x, y):
        return x @ w, y * 2, (x @ w).argmax(-1)

    x, y = torch.randn(2, 3), torch.randn(2, 3)
    with torch.no_grad():
        cm = minicomp.compile(f, (x, y), cache=False)
    got, want = cm(x, y), f(x, y)
    assert [t.requires_grad for t in got] == [t.requires_grad for t in want] == [True, False, False]
    got[0].sum().backward()
    g, w.grad = w.grad.clone(), None
    want[0].sum().backward()
    torch.testing.assert_close(g, w.grad)


def test_a_tensor_passed_twice_gets_its_gradient_once():
    def f(x, y):
        return x * y + x

    x = torch.randn(4, requires_grad=True)
    cm = minicomp.compile(f, (x.detach(), x.detach()), cache=False)
    cm(x, x).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach() + 1)


def test_no_grad_and_inference_mode_keep_the_plain_call():
    model = _mlp()
    x = torch.randn(4, 6)
    cm = minicomp.compile(model, (x,), cache=False)
    with torch.no_grad():
        assert not cm(x).requires_grad
    with torch.inference_mode():
        assert not cm(x).requires_grad
    assert cm(x).requires_grad  # parameters require grad and grad mode is on: like eager


def test_second_derivatives_are_eager_ones():
    def f(x):
        return (x * x * x).sum()

    x = torch.randn(5, requires_grad=True)
    cm = minicomp.compile(f, (x.detach(),), cache=False)
    (g,) = torch.autograd.grad(cm(x), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(g, 3 * x * x)
    torch.testing.assert_close(gg, 6 * x.detach())


def test_an_input_modified_before_backward_raises_like_eager():
    model = _mlp()
    leaf = torch.randn(4, 6, requires_grad=True)
    x = leaf * 1.0
    cm = minicomp.compile(model, (x.detach(),), cache=False)
    y = cm(x)
    with torch.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# -- lazy flags (point 4) ----------------------------------------------------------------
def _neg_input() -> torch.Tensor:
    z = torch.complex(torch.randn(2, 5), torch.randn(2, 5))
    v = z[0].conj().imag  # the negative bit is set: the memory holds +imag
    assert v.is_neg()
    return v


def test_negative_bit_inputs_are_read_negated():
    f = lambda x: x * 2 + 1  # noqa: E731
    v = _neg_input()
    cm = minicomp.compile(f, (torch.randn(5),), cache=False)
    torch.testing.assert_close(cm(v), f(v))  # the fast path
    cm2 = minicomp.compile(f, (v,), cache=False)  # the example itself
    torch.testing.assert_close(cm2(v), f(v))
    n = torch.ones(5)._neg_view()
    torch.testing.assert_close(cm(n), f(n))


def test_negative_bit_weights_are_read_negated():
    lin = nn.Linear(5, 2).eval()
    x = torch.randn(3, 5)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False)
        lin.weight.data = torch.complex(torch.randn(2, 5), torch.randn(2, 5)).conj().imag
        assert lin.weight.is_neg()
        torch.testing.assert_close(cm(x), lin(x))


# -- tensor kinds (point 16) -------------------------------------------------------------
def _kinds():
    dense = torch.randn(3, 4)
    return {
        "sparse": (dense.to_sparse(), "sparse tensor"),
        "sparse_csr": (dense.to_sparse_csr(), "sparse tensor"),
        "mkldnn": (dense.to_mkldnn(), "MKL-DNN tensor"),
        "nested": (torch.nested.nested_tensor([torch.randn(4), torch.randn(4), torch.randn(4)]), "nested tensor"),
        "quantized": (torch.quantize_per_tensor(dense, 0.1, 0, torch.qint8), "quantized tensor"),
        "meta": (torch.empty(3, 4, device="meta"), "device 'meta'"),
        "big_endian": (np.arange(12, dtype=">f4").reshape(3, 4), "non-native byte order"),
    }


KINDS = list(_kinds())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", ["cpu", "interpret"])
def test_unsupported_tensor_kinds_are_one_guard_error_on_call(kind, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's beta warnings for nested/sparse tensors
        bad, words = _kinds()[kind]
    cm = minicomp.compile(lambda x: x * 2, (torch.randn(3, 4),), target=target, cache=False)
    with pytest.raises(GuardError, match=f"input 0 is .*{words}"):
        cm(bad)
    with pytest.raises(GuardError, match=f"input 0 is .*{words}"):
        cm(bad)  # again, with the entry warm


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_tensor_kinds_are_one_guard_error_at_compile(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad, words = _kinds()[kind]
    with pytest.raises(MinicompError, match=words):
        minicomp.compile(lambda x: x * 2, (bad,), cache=False)


def test_a_sparse_weight_is_one_guard_error():
    lin = nn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False)
        lin.weight = nn.Parameter(lin.weight.detach().to_sparse(), requires_grad=False)
        with pytest.raises(GuardError, match="weight 'weight' is a sparse tensor"):
            cm(x)
