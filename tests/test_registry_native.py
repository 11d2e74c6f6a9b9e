"""Registry-wide tests of the CPU backend: every op in ``minicomp.ir.ops.all_ops()``.

Each test is parametrized over the registry (minus :data:`NOT_KERNELS`: ``constant``,
``fused``, ``external``), so a newly registered op is covered without editing this file.

1. Every op lowers natively: :func:`minicomp.ir.lowering.lower_node` accepts a node of
   it, and a compiled CPU call on a graph using it runs no numpy op reference and
   dispatches no ATen compute op (only output allocation and copies), with no fallbacks.
2. Every op computes what PyTorch eager and the reference interpreter compute, on
   random graphs over all dtypes with random shapes, broadcasting, size-0/size-1 dims
   and NaN/inf/-0.0 (:func:`minicomp.testing.check_compile`), and also when the
   compiled model receives non-contiguous inputs (strided slices of a bigger tensor,
   transposed-back views).

Budgets: ``budget(n)`` is n examples under the dev/ci profiles and 20x more under
``deep`` (``MINICOMP_DEEP=1``); a CPU compile costs ~50-300 ms, so CI numbers are small.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import minicomp
import minicomp.ir.interpreter as interpreter
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node
from minicomp.ir.lowering import lower_graph, lower_node
from minicomp.ir.lowering.builder import is_view
from minicomp.ir.ops import all_ops
from minicomp.passes import PassContext, PassManager, default_pipeline, kernel_count
from minicomp.testing import Case, check_compile, compare_outputs, graphs

# var over no more elements than its correction is NaN (compared like any other value);
# PyTorch also warns about it, which is noise here.
pytestmark = pytest.mark.filterwarnings(r"ignore:var\(\). degrees of freedom:UserWarning")

#: Registry ops that are not compiled kernels by design: ``constant`` (data, folded into
#: kernel arguments), ``fused`` (made by the fusion pass from the other ops) and
#: ``external`` (an ATen op minicomp cannot compile, made only by the frontend and run
#: by the PyTorch fallback; tests/test_fallback.py covers it).
NOT_KERNELS = frozenset({"constant", "fused", "external"})
#: Every other registry op: each must lower and run natively.
OPS = sorted(set(all_ops()) - NOT_KERNELS)

#: The ATen ops a compiled CPU call may dispatch, decided by observing every op's calls:
#: ``empty.memory_format`` and ``empty_like.default`` allocate each output in the runtime
#: (``torch.empty_like`` of a storage-less prototype, ``torch.empty`` for the rest);
#: ``clone.default`` is ``Tensor.contiguous()`` on a non-contiguous input and the copy
#: the runtime makes of an output that aliases an input, a constant or another output.
#: Neither computes anything; every arithmetic op must run in the JIT-compiled code.
ALLOWED_ATEN = frozenset({"aten.empty.memory_format", "aten.empty_like.default", "aten.clone.default"})


def budget(n: int) -> settings:
    """``n`` examples normally; scaled with the loaded profile's max_examples (deep: 2000 -> 20x)."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))


# -- helpers --------------------------------------------------------------------------------------
class _AtenRecorder(TorchDispatchMode):
    """Records the name of every ATen op dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _references_forbidden() -> Iterator[None]:
    """Make every op's numpy reference and the interpreter's entry points raise.

    OpDefs are frozen dataclasses, so ``reference`` is swapped with
    ``object.__setattr__`` and always restored (hypothesis forbids function-scoped
    fixtures such as ``monkeypatch`` inside ``@given``).
    """
    def forbidden(what: str):
        def boom(*args, **kwargs):
            raise AssertionError(f"{what} was called during a compiled CPU call")
        return boom

    saved_refs = {name: d.reference for name, d in all_ops().items()}
    saved_fns = {name: getattr(interpreter, name) for name in ("evaluate_node", "interpret")}
    try:
        for name, d in all_ops().items():
            object.__setattr__(d, "reference", forbidden(f"the numpy reference of '{name}'"))
        for name in saved_fns:
            setattr(interpreter, name, forbidden(f"minicomp.ir.interpreter.{name}"))
        yield
    finally:
        for name, d in all_ops().items():
            object.__setattr__(d, "reference", saved_refs[name])
        for name, fn in saved_fns.items():
            setattr(interpreter, name, fn)


def _depends_on_input(graph: Graph, node: Node) -> bool:
    """Whether ``node`` reads a graph input (transitively), so passes cannot constant-fold it.

    Generators (``full``, ``arange``: no operands) count as reading one: they have nothing to read.
    """
    if not node.operands:
        return True
    inputs = {id(v) for v in graph.inputs}
    seen: set[int] = set()
    stack = list(node.operands)
    while stack:
        v = stack.pop()
        if id(v) in inputs:
            return True
        if id(v) in seen or v.producer is None:
            continue
        seen.add(id(v))
        stack.extend(v.producer.operands)
    return False


def _nodes_of(case: Case, op: str) -> list[Node]:
    return [n for n in case.graph.nodes if n.op == op]


def _as_kernel_node(node: Node) -> Node:
    """``node`` itself, or for a view op (no kernel of its own) a ``fused`` copy node of it.

    The copy body is what fusion makes when a view reaches a graph output: the view of
    the body's inputs, then ``copy`` of its first result.
    """
    if not is_view(node):
        return node
    body = Graph("body")
    ins = [body.add_input(o.type) for o in node.operands]
    view = body.add(node.op, ins, dict(node.attrs))
    body.set_outputs([body.add("copy", [view.results[0]]).results[0]])
    outer = Graph("outer")
    operands = [outer.add_input(o.type) for o in node.operands]
    return outer.add("fused", operands, {"kind": "copy", "body": body})


def _sentinel(dtype: torch.dtype) -> float | bool:
    if dtype == torch.bool:
        return True
    return float("nan") if dtype.is_floating_point else 77


def _non_contiguous(t: torch.Tensor, how: str) -> torch.Tensor:
    """A non-contiguous tensor equal to ``t`` (where its shape allows one).

    ``strided``: every dim a step-2 slice (from offset 1) of a bigger tensor filled with
    a sentinel (NaN for floats), so reading outside the view shows; ``transposed``: the
    first and last dims swapped, made contiguous, and swapped back.
    """
    if how == "transposed" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if how == "strided" and t.dim() >= 1:
        base = torch.full([2 * s + 1 for s in t.shape], _sentinel(t.dtype), dtype=t.dtype)
        view = base[tuple(slice(1, 1 + 2 * s, 2) for s in t.shape)]
        view.copy_(t)
        return view
    return t


def _draw_case(data: st.DataObject, op: str, dtypes: Sequence[DType], special: bool = False,
               max_nodes: int = 3) -> Case:
    """A random graph over ``op`` alone with a node of ``op`` that reads a graph input."""
    case = data.draw(graphs(ops=[op], dtypes=dtypes, special_values=special, max_nodes=max_nodes), label="case")
    assume(any(_depends_on_input(case.graph, n) for n in _nodes_of(case, op)))
    return case


def _compile(case: Case) -> minicomp.CompiledModel:
    return minicomp.compile(case.graph, case.to_torch_inputs(), target="cpu", cache=False)


# -- 1. every op lowers natively ------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
@budget(3)
@given(data=st.data())
def test_op_has_a_lowering(op: str, data: st.DataObject) -> None:
    """``lower_node`` makes a kernel for a node of every op (views: inside a fused copy body)."""
    case = data.draw(graphs(ops=[op], dtypes=tuple(DType), max_nodes=2), label="case")
    nodes = _nodes_of(case, op)
    assume(nodes)
    for node in nodes:
        kernel = lower_node(_as_kernel_node(node))
        assert kernel.outputs, f"the kernel of '{op}' writes nothing"


@pytest.mark.parametrize("op", OPS)
@budget(3)
@given(data=st.data())
def test_fusion_lowering_and_kernel_count_agree(op: str, data: st.DataObject) -> None:
    """One registry answer for every layer: after the default pipeline, the lowering makes
    exactly the kernels ``kernel_count`` counts (it splits no fused node), plus only the copy
    kernels it notes for operands that are not affine views of a buffer."""
    case = data.draw(graphs(ops=[op], dtypes=tuple(DType), max_nodes=3), label="case")
    graph = PassManager(default_pipeline("cpu")).run(case.graph.copy(), PassContext())
    notes: list[str] = []
    program = lower_graph(graph, notes=notes)
    assert not [n for n in notes if "split" in n], notes
    copies = sum(n.startswith("copy kernel for") for n in notes)
    assert len(program.kernels) == kernel_count(graph) + copies, (notes, [k.name for k in program.kernels])


@pytest.mark.parametrize("op", OPS)
@budget(3)
@given(data=st.data())
def test_op_runs_natively_on_cpu(op: str, data: st.DataObject) -> None:
    """A compiled CPU call runs no numpy reference, only allocation/copy ATen ops, no fallback."""
    case = _draw_case(data, op, tuple(DType))
    cm = _compile(case)
    assert cm.fallbacks == [], f"'{op}' fell back: {cm.fallbacks}"
    assert cm.program is not None
    contiguous = case.to_torch_inputs()
    how = data.draw(st.sampled_from(["strided", "transposed"]), label="layout")
    strided = [_non_contiguous(t, how) for t in contiguous]
    for inputs in (contiguous, strided):
        with _references_forbidden(), _AtenRecorder() as rec:
            cm(*inputs)
        extra = sorted(set(rec.seen) - ALLOWED_ATEN)
        assert not extra, f"compiled '{op}' dispatched ATen compute ops {extra}:\n{case.ir()}"
    assert cm.fallbacks == []


# -- 2. every op matches PyTorch and the interpreter -----------------------------------------------
@pytest.mark.parametrize("op", OPS)
@budget(4)
@given(data=st.data())
def test_op_matches_torch_and_interpreter(op: str, data: st.DataObject) -> None:
    """Compiled CPU == interpreter == PyTorch eager, all dtypes, NaN/inf/-0.0, any shapes."""
    case = data.draw(graphs(ops=[op], dtypes=tuple(DType), special_values=True, max_nodes=4), label="case")
    assume(_nodes_of(case, op))
    check_compile(case, targets=("cpu",))


@pytest.mark.parametrize("op", OPS)
@budget(3)
@given(data=st.data())
def test_op_on_non_contiguous_inputs(op: str, data: st.DataObject) -> None:
    """Non-contiguous inputs give PyTorch eager's results, and the inputs stay unmodified."""
    case = _draw_case(data, op, tuple(DType), special=True)
    cm = _compile(case)
    contiguous = case.to_torch_inputs()
    expected = list(case.torch_fn()(*contiguous))
    inputs = [_non_contiguous(t, data.draw(st.sampled_from(["strided", "transposed", "as_is"]), label="layout"))
              for t in contiguous]
    before = [t.clone() for t in inputs]
    got = cm(*inputs)
    problem = compare_outputs(expected, got, case.graph)
    assert problem is None, f"non-contiguous inputs {[tuple(t.stride()) for t in inputs]}:\n{problem}\n{case.ir()}"
    interpreted = minicomp.interpret(case.graph.copy(), *[np.asarray(a) for a in case.inputs])
    problem = compare_outputs(expected, interpreted, case.graph)
    assert problem is None, f"the interpreter disagrees with PyTorch:\n{problem}\n{case.ir()}"
    for t, b in zip(inputs, before):
        torch.testing.assert_close(t, b, equal_nan=True, rtol=0, atol=0)
