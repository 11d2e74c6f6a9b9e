"""Every fast code path against the plain one (codegen/llvm/dispatch.py).

Per kernel kind the dispatch table lists fast paths and, last, the plain reference path. Each
case below is a small program whose kernel one fast path compiles (checked with
:func:`dispatch.choose`); it is compiled with that path forced and with every path plain
(``MINICOMP_CODEGEN_PATHS``), and the two results must agree: the plain path is the oracle.
Inputs hold NaN, infinities and -0.0 where the operation keeps them meaningful.
"""
from __future__ import annotations

import math

import pytest
import torch

import minicomp
from minicomp.codegen.llvm import dispatch

ENV = dispatch.ENV


def _linear(x, w, b):
    return torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))


def _mm(a, b):
    return torch.relu(a @ b) + 1.0


def _conv(x, w, b):
    return torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))


def _sdpa(q, k, v):
    return torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1])), dim=-1) @ v


def _randn(*shape, scale=1.0):
    return torch.randn(*shape) * scale


def _with_specials(t: torch.Tensor) -> torch.Tensor:
    flat = t.view(-1)
    flat[1], flat[5], flat[9] = float("nan"), float("inf"), -0.0
    return t


#: (kind, fast path, function, input builder): the kernel of the function takes that path by default.
CASES = [
    ("matmul", "ptile", _linear, lambda: (_with_specials(_randn(20, 67)), _randn(47, 67, scale=0.12), _randn(47))),
    ("matmul", "rtile", _mm, lambda: (_with_specials(_randn(3, 20, 40)), _randn(3, 40, 33, scale=0.15))),
    ("matmul", "gemv", _linear, lambda: (_randn(2, 96), _randn(40, 96, scale=0.1), _randn(40))),
    ("matmul", "packed", _mm, lambda: (_randn(130, 70), _randn(70, 140, scale=0.1))),
    ("matmul", "axpy", _mm, lambda: (_randn(5, 7), _randn(7, 9))),
    ("conv", "implicit-gemm", _conv, lambda: (_randn(2, 3, 9, 10), _randn(8, 3, 3, 3, scale=0.2), _randn(8))),
    ("attention", "blocked", _sdpa, lambda: (_randn(1, 2, 20, 8), _randn(1, 2, 17, 8), _randn(1, 2, 17, 12))),
]
#: Fast paths that never win by default on these cases but are forced onto one they handle.
FORCED = [
    ("matmul", "dtile", _linear, lambda: (_randn(20, 160), _randn(24, 160, scale=0.08), _randn(24))),
]


def _compile(fn, inputs, env: str, monkeypatch):
    monkeypatch.setenv(ENV, env)
    cm = minicomp.compile(fn, inputs, cache=False)
    monkeypatch.delenv(ENV)
    return cm


def _paths(cm, kind: str, env: str) -> list[str]:
    forced = dispatch.forced_paths(env)
    return [dispatch.choose(k, forced)[0] for k in cm.program.kernels if dispatch.kind_of(k) == kind]


@pytest.mark.parametrize("kind,path,fn,make", CASES + FORCED, ids=[f"{c[0]}-{c[1]}" for c in CASES + FORCED])
def test_fast_path_matches_plain(kind, path, fn, make, monkeypatch):
    torch.manual_seed(0)
    inputs = make()
    fast_env = f"{kind}={path}"
    fast = _compile(fn, inputs, fast_env, monkeypatch)
    assert _paths(fast, kind, fast_env) == [path]
    if (kind, path, fn, make) in CASES:  # this path is the default choice too
        assert _paths(fast, kind, "") == [path]
    plain = _compile(fn, inputs, "plain", monkeypatch)
    assert _paths(plain, kind, "plain") == ["plain"]
    with torch.no_grad():
        got, want = fast(*inputs), plain(*inputs)
    torch.testing.assert_close(got, want, equal_nan=True)
    torch.testing.assert_close(got, fn(*inputs), equal_nan=True)


def test_every_fast_path_is_covered():
    covered = {(c[0], c[1]) for c in CASES + FORCED}
    fast = {(kind, name) for kind, (_cls, paths) in dispatch.TABLE.items() for name, _a, _e in paths[:-1]}
    assert fast == covered, f"fast paths without a case here: {sorted(fast - covered)}"


def test_plain_path_is_last_and_takes_everything():
    for kind, (_cls, paths) in dispatch.TABLE.items():
        name, applies, _emit = paths[-1]
        assert name == "plain", kind
        assert applies(None) is True, kind  # the rule reads nothing of the kernel


@pytest.mark.parametrize("text,match", [("fast", "expected 'plain'"), ("matmul=tiles", "has no path 'tiles'"),
                                        ("gemm=plain", "expected 'plain'"), ("matmul", "expected 'plain'")])
def test_misspelled_override_is_an_error(text, match):
    with pytest.raises(ValueError, match=match):
        dispatch.forced_paths(text)


def test_override_forms():
    assert dispatch.forced_paths("") is None
    assert dispatch.forced_paths("plain") == {kind: "plain" for kind in dispatch.TABLE}
    assert dispatch.forced_paths(" matmul=dtile , conv=plain ") == {"matmul": "dtile", "conv": "plain"}
