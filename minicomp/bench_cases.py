"""The cases of ``minicomp bench``: each a model or function with its example inputs, and its work.

A case's work is what the roofline (:mod:`minicomp.roofline`) reads it against, counted the same
way for every case from eager PyTorch, so no case carries a hand-written figure:

* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one eager call (matrix products,
  convolutions and attention, two FLOPs a multiply-add; elementwise ops count nothing);
* bytes: the least a call must move, every input, output, parameter and buffer once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """A benchmark case: ``build()`` returns ``(callable, inputs)``, built the same way (seed 0)
    in every process that builds it."""

    name: str
    build: Callable[[], tuple]
    #: in the ``--quick`` subset (one of each kind of case)
    quick: bool = False
    #: issue 19's target for the case: "fma" (at least TARGETS["fma"] of the FMA peak), "copy"
    #: (of the copy bandwidth), "overhead" (per-call overhead under TARGETS["overhead"] us) or None
    target: str | None = None


#: The goals of issue 19's targets (see ``Case.target``).
TARGETS = {"fma": 0.8, "copy": 0.8, "overhead": 10.0}


def _example(name: str, **kw):
    from minicomp.cli import load_model_file
    from minicomp.demo import _examples_dir
    mod = load_model_file(str(_examples_dir() / f"{name}.py"))
    model = mod.model()
    inputs = tuple(mod.example_inputs(**kw)) if kw else tuple(mod.example_inputs())
    return model, inputs


def _mlp(b):
    def build():
        import torch
        m, (x,) = _example("mlp")
        return m, (torch.randn(b, x.shape[1]),)
    return build


def _lenet(b):
    def build():
        import torch
        m, (x,) = _example("lenet")
        return m, (torch.randn(b, *x.shape[1:]),)
    return build


def _block(b, t):
    return lambda: _example("transformer_block", batch=b, seq=t)


def _chain():
    import torch
    return (lambda x: torch.sigmoid(2 * x + 1) * torch.tanh(x) - torch.abs(x)), (torch.randn(16 * 1024 * 1024),)


def _softmax():
    import torch
    return (lambda x: torch.softmax(x, dim=-1)), (torch.randn(4096, 1024),)


def _layernorm():
    import torch
    return torch.nn.LayerNorm(1024).eval(), (torch.randn(4096, 1024),)


def _gemm(n):
    def build():
        import torch
        return (lambda a, b: a @ b), (torch.randn(n, n), torch.randn(n, n))
    return build


def _conv():
    import torch
    return torch.nn.Conv2d(64, 64, 3, padding=1).eval(), (torch.randn(1, 64, 56, 56),)


CASES = (Case("mlp_b1", _mlp(1), quick=True, target="overhead"), Case("mlp_b64", _mlp(64)),
         Case("lenet_b1", _lenet(1), target="overhead"), Case("lenet_b32", _lenet(32)),
         Case("block_b1", _block(1, 64), quick=True, target="overhead"), Case("block_b8", _block(8, 128)),
         Case("chain_16m", _chain, quick=True, target="copy"), Case("softmax_4096x1024", _softmax, target="copy"),
         Case("layernorm_4096x1024", _layernorm, quick=True, target="copy"),
         Case("gemm_1024", _gemm(1024), quick=True, target="fma"), Case("gemm_2048", _gemm(2048), target="fma"),
         Case("conv3x3_b1", _conv, quick=True, target="fma"))


def _tiny_add():
    import torch
    return (lambda x: torch.relu(x * 2 + 1)), (torch.randn(4096),)


def _tiny_mm():
    import torch
    return (lambda a, b: a @ b), (torch.randn(64, 64), torch.randn(64, 64))


#: Cases of a few microseconds, for smoke runs and tests of the bench itself (never in a default
#: run; ``--cases tiny_add tiny_mm`` selects them).
SMOKE_CASES = (Case("tiny_add", _tiny_add), Case("tiny_mm", _tiny_mm))


def find(name: str) -> Case:
    """The case called ``name`` (KeyError naming the known ones otherwise)."""
    for case in CASES + SMOKE_CASES:
        if case.name == name:
            return case
    raise KeyError(f"unknown bench case {name!r}; known: {[c.name for c in CASES + SMOKE_CASES]}")


def build(case: Case) -> tuple:
    """``case.build()`` with torch's generator seeded, so every process gets the same inputs."""
    import torch
    torch.manual_seed(0)
    return case.build()


def work(fn, inputs: tuple) -> tuple[int, int]:
    """(FLOPs, bytes) of one eager call of ``fn(*inputs)``, counted as the module docstring says."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    state = list(fn.parameters()) + list(fn.buffers()) if isinstance(fn, torch.nn.Module) else []
    return int(counter.get_total_flops()), nbytes(inputs) + nbytes(outs) + nbytes(state)
