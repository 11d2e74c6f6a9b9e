"""Deep graphs and deep expressions: no recursion proportional to their size (issue 14, point 14).

A chain of about 70 fused elementwise ops used to overflow Python's stack in lowering
(``KernelBuilder.expr``), and every walk over the resulting expression (LLVM and Triton
emission, the cache's program text, ``==``/``hash``/``repr`` of the expression dataclasses)
recursed once per level. A value used twice (``x * sigmoid(x)``) was also walked once per
use: exponential in the chain's length.
"""
from __future__ import annotations

import time

import pytest
import torch

import minicomp
from minicomp.ir.dtypes import DType
from minicomp.ir.expr_walk import post_order
from minicomp.ir.kernel import Cast, Const, E, Load, Op, Var

N_OPS = 1000


def chain(x: torch.Tensor) -> torch.Tensor:
    """1,000 numerically tame elementwise ops in one fusible chain (no transcendental: cheap for LLVM)."""
    for i in range(N_OPS // 2):
        x = x * 1.0001 + 0.1 if i % 2 == 0 else torch.abs(x) - 0.05
    return x


@pytest.mark.parametrize("target", ["cpu", "interpret", "triton"])
def test_thousand_op_chain_compiles_and_matches_eager(target):
    x = torch.randn(16, 32)
    start = time.perf_counter()
    cm = minicomp.compile(chain, (x,), target=target, cache=False)
    seconds = time.perf_counter() - start
    torch.testing.assert_close(cm(x), chain(x))
    if target != "interpret":
        assert len(cm.kernels) == 1  # the whole chain is one fused kernel: one deep expression
    print(f"{target}: compiled {N_OPS} ops in {seconds:.1f} s")


def test_thousand_op_chain_through_the_program_cache(tmp_path, monkeypatch):
    """The cached path too: the program's cache-key text and its JSON are written without recursion."""
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path))
    x = torch.randn(8, 8)
    for _ in range(2):  # a miss (stores), then a hit (loads)
        cm = minicomp.compile(chain, (x,), target="cpu")
        torch.testing.assert_close(cm(x), chain(x))


def test_shared_values_give_an_expression_linear_in_the_chain():
    """``x * sigmoid(x)`` 24 times: each value is built once and shared, not copied per use (2**24)."""
    from minicomp.ir.lowering import lower_graph

    def silu_chain(x):
        for _ in range(24):
            x = x * torch.sigmoid(x) + 0.5
        return x
    x = torch.randn(4, 8)
    graph = minicomp.trace(silu_chain, (x,))
    from minicomp.driver import _run_passes
    graph, _ = _run_passes(graph, "cpu", None, {})
    program = lower_graph(graph)
    (kernel,) = program.kernels
    assert len(post_order(kernel.stages[-1].value)) < 40 * 24
    cm = minicomp.compile(silu_chain, (x,), target="cpu", cache=False)
    torch.testing.assert_close(cm(x), silu_chain(x))


def _deep(n: int, leaf: object = None):
    e = leaf if leaf is not None else Load(0, Var(0), DType.f32)
    for i in range(n):
        e = E.add(E.mul(e, 1.5), 0.25) if i % 2 else E.cast(E.cast(e, DType.f64), DType.f32)
    return e


def test_deep_expression_eq_hash_repr_do_not_recurse():
    a, b = _deep(20000), _deep(20000)
    assert a is not b and a == b and hash(a) == hash(b)
    c = _deep(20000, Load(1, Var(0), DType.f32))
    assert a != c
    assert repr(a).count("Op(op='add'") == 10000


def test_expression_methods_keep_dataclass_semantics():
    x = Load(0, Var(1), DType.f32)
    e = Op("add", (x, Const(1.0, DType.f32)), DType.f32)
    f32, i64 = repr(DType.f32), repr(DType.i64)
    assert repr(e) == (f"Op(op='add', args=(Load(buf=0, index=Var(dim=1, dtype={i64}), dtype={f32}), "
                       f"Const(value=1.0, dtype={f32})), dtype={f32})")
    assert repr(Op("neg", (x,), DType.f32)) == f"Op(op='neg', args=({x!r},), dtype={f32})"
    assert e == Op("add", (Load(0, Var(1), DType.f32), Const(1.0, DType.f32)), DType.f32)
    assert e != Op("add", (x, Const(2.0, DType.f32)), DType.f32)
    assert Op("add", (x, Const(0.0, DType.f32)), DType.f32) == Op("add", (x, Const(-0.0, DType.f32)), DType.f32)
    assert Cast(x, DType.f64) != Cast(x, DType.f16) and len({e, Op("add", (x, Const(1.0, DType.f32)), DType.f32)}) == 1
    import pickle
    assert pickle.loads(pickle.dumps(e)) == e and "_hash" not in pickle.loads(pickle.dumps(e)).__dict__


def test_deep_expression_json_round_trip():
    from minicomp.ir.kernel import Buffer, LoopKernel, Store
    from minicomp.ir.program import Program
    from minicomp.ir.kernel_io import program_from_json, program_text, program_to_json
    from minicomp.ir.types import TensorType
    t = TensorType(DType.f32, (4,))
    k = LoopKernel("k", "pointwise", (Buffer("a", t),), (Buffer("b", t),), (4,), (),
                   (Store(0, Var(0), _deep(6000)),))
    program = Program((k,), (), (), 0, 1, 1)
    text, consts = program_to_json(program)
    assert program_from_json(text, consts) == program
    assert len(program_text(program)) < 2_000_000
