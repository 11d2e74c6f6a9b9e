"""Random valid graphs (NNSmith-style) through minicomp, compared with PyTorch eager.

Budgets are per test: ``budget(n)`` gives n examples under the dev/ci profiles and
20x more under the ``deep`` profile (``MINICOMP_DEEP=1``). A CPU compile costs
~50-200 ms of LLVM time, a Triton-interpreter run ~1 s, so the CI numbers are modest;
``scripts/deep_run.py`` runs thousands.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Value, constant
from minicomp.ir.types import TensorType
from minicomp.testing import Case, check_compile, graphs
from minicomp.testing.check import run_layer
from minicomp.testing.strategies import to_torch


def budget(n: int) -> settings:
    """``n`` examples normally; scaled with the loaded profile's max_examples (deep: 2000 -> 20x)."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))


@budget(300)
@given(graphs(max_nodes=8))
def test_random_f32_graphs_cpu(case: Case) -> None:
    check_compile(case, targets=("cpu",))


@budget(100)
@given(graphs(max_nodes=6, dtypes=tuple(DType)))
def test_random_all_dtype_graphs_cpu(case: Case) -> None:
    check_compile(case, targets=("cpu",))


@budget(60)
@given(graphs(max_nodes=6, special_values=True))
def test_random_graphs_with_nan_inf_negzero_cpu(case: Case) -> None:
    check_compile(case, targets=("cpu",))


@budget(25)
@given(graphs(max_nodes=5))
def test_random_graphs_triton_interpreter(case: Case) -> None:
    check_compile(case, targets=("triton",), check_interpreter=False)


# -- metamorphic oracles (PolyJuice-style) ---------------------------------------------------
def _assert_same(a: list, b: list, graph: Graph) -> None:
    for x, y, v in zip(a, b, graph.outputs):
        torch.testing.assert_close(to_torch(np.asarray(x), v.type.dtype) if not isinstance(x, torch.Tensor) else x,
                                   to_torch(np.asarray(y), v.type.dtype) if not isinstance(y, torch.Tensor) else y,
                                   equal_nan=True)


@budget(60)
@given(graphs(max_nodes=6, dtypes=(DType.f32, DType.i64)))
def test_passes_on_and_off_agree_on_cpu(case: Case) -> None:
    """The full pipeline vs no passes at all (one kernel per op): same results."""
    with_passes = run_layer(case.graph, case.inputs, "cpu")
    without = run_layer(case.graph, case.inputs, "cpu", passes=[])
    _assert_same(with_passes, without, case.graph)


def _rewrite_outputs(case: Case, wrap) -> Case:
    """A copy of ``case`` whose every output ``v`` is replaced by ``wrap(graph, v)`` (an equal value)."""
    g = case.graph.copy()
    g.set_outputs([wrap(g, v) for v in g.outputs])
    return Case(g, case.inputs)


def _times_one(g: Graph, v: Value) -> Value:
    one = constant(g, np.ones((), dtype=v.type.dtype.np), v.type.dtype)
    return g.add("mul", [v, one]).result


def _transpose_twice(g: Graph, v: Value) -> Value:
    perm = tuple(reversed(range(v.type.rank)))
    inv = tuple(int(i) for i in np.argsort(perm))
    return g.add("permute", [g.add("permute", [v], {"dims": perm}).result], {"dims": inv}).result


def _split_cat(g: Graph, v: Value) -> Value:
    if v.type.rank == 0:
        return v
    n = v.type.shape[0]
    sizes = (n // 2, n - n // 2) if n else (0,)
    parts = g.add("split", [v], {"dim": 0, "sizes": sizes}).results
    return g.add("cat", parts, {"dim": 0}).result


@budget(30)
@given(graphs(max_nodes=5, dtypes=(DType.f32, DType.i32)))
def test_equivalent_rewrites_give_identical_results(case: Case) -> None:
    base = run_layer(case.graph, case.inputs, "cpu")
    for wrap in (_times_one, _transpose_twice, _split_cat):
        variant = _rewrite_outputs(case, wrap)
        _assert_same(base, run_layer(variant.graph, variant.inputs, "cpu"), case.graph)


def test_rewrites_are_really_equivalent_in_pytorch() -> None:
    """Sanity of the oracle itself: each rewrite leaves PyTorch's results unchanged."""
    g = Graph("f")
    x = g.add_input(TensorType(DType.f32, (3, 2)))
    g.set_outputs([g.add("tanh", [x]).result])
    case = Case(g, [np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5])
    want = case.torch_fn()(*case.to_torch_inputs())
    for wrap in (_times_one, _transpose_twice, _split_cat):
        v = _rewrite_outputs(case, wrap)
        got = v.torch_fn()(*v.to_torch_inputs())
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
