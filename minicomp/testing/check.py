"""Differential checking: PyTorch eager vs the minicomp interpreter vs compile targets.

:func:`check_compile` runs one :class:`~minicomp.testing.graphs.Case` through
PyTorch eager (:mod:`minicomp.testing.torch_ref`), the reference interpreter and
each compile target, comparing with ``torch.testing.assert_close(equal_nan=True)``
at the result dtype's default tolerances (float32/float16/bfloat16 outputs beyond them get a
second chance against a float64 run: :mod:`minicomp.testing.oracle`). On a mismatch it finds the first layer
that diverged (bisecting the pass pipeline with the interpreter after each pass;
if every pass agrees, the backend is to blame), writes a standalone repro script,
and raises :class:`MismatchError` carrying all of it.
"""
from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.errors import MinicompError
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph
from minicomp.testing.oracle import FP64, STRICT, Fp64Reference, check_against_fp64, fp64_covers, fp64_reference
from minicomp.testing.repro import write_repro
from minicomp.testing.torch_ref import TORCH_DTYPE


class MismatchError(AssertionError):
    """A layer of minicomp disagrees with PyTorch eager (or crashed) on a valid graph.

    Attributes: ``layer`` (the first layer that diverged: ``"interpreter"``, ``"pass
    <name>"``, or ``"backend <target>"``), ``target``, ``ir`` (the graph as text IR),
    ``repro_path`` (the standalone script) and ``detail`` (the comparison message).
    """

    def __init__(self, layer: str, target: str, ir: str, repro_path: str, detail: str):
        self.layer, self.target, self.ir, self.repro_path, self.detail = layer, target, ir, repro_path, detail
        super().__init__(f"minicomp mismatch in {layer} (checking target '{target}')\n"
                         f"--- graph ---\n{ir}\n--- first divergence: {layer} ---\n{detail}\n"
                         f"--- repro: python {repro_path}")


class InvalidCaseError(MinicompError):
    """PyTorch eager itself rejects the case: the graph is not valid for PyTorch."""


PassSpec = Sequence[Any]  # pass names or Pass objects


def _passes(passes: PassSpec | None, target: str) -> list:
    from minicomp.passes.manager import default_pipeline, get_pass
    if passes is None:
        return default_pipeline("gpu" if target == "triton" else "cpu", {})
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def run_layer(graph: Graph, inputs: Sequence[np.ndarray], layer: str, passes: PassSpec | None = None) -> list:
    """Outputs of ``graph`` on ``inputs`` computed by one layer.

    ``layer`` is ``"interpreter"`` (no passes), or a compile target (``"cpu"``,
    ``"interpret"``, ``"triton"``) run through
    :func:`minicomp.testing.targets.compile_graph` with ``passes`` (None: the
    driver's default pipeline). Returns numpy arrays or torch tensors.
    """
    import minicomp
    from minicomp.testing.strategies import to_torch
    from minicomp.testing.targets import compile_graph
    if layer == "interpreter":
        return list(minicomp.interpret(graph.copy(), *inputs))
    run = compile_graph(graph, layer, passes)
    return list(run([to_torch(a, v.type.dtype) for a, v in zip(inputs, graph.inputs)]))


def _as_torch(x: Any, dtype: DType):
    import torch
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x))
    x = x.detach().cpu()
    return x.to(torch.bfloat16) if dtype is DType.bf16 and x.dtype == torch.float32 else x


def compare_outputs(expected: Sequence[Any], got: Sequence[Any], graph: Graph,
                    fp64: Fp64Reference | None = None) -> str | None:
    """None when ``got`` matches ``expected`` (PyTorch's results) output by output, else why not.

    Checks count, the IR's declared dtype and shape of each output against
    PyTorch's, then values with ``assert_close(equal_nan=True)`` at default
    tolerances. A float16/bfloat16 output that fails that is judged instead by the
    float64 oracle rule of :mod:`minicomp.testing.oracle` when ``fp64`` (from
    :func:`~minicomp.testing.oracle.fp64_reference`) is given. Each problem names
    the rule that rejected the output.
    """
    import torch
    if len(got) != len(expected):
        return f"expected {len(expected)} outputs, got {len(got)}"
    problems = []
    for i, (e, g, v) in enumerate(zip(expected, got, graph.outputs)):
        want = getattr(torch, TORCH_DTYPE[v.type.dtype].split(".")[1])
        if e.dtype != want or tuple(e.shape) != v.type.shape:
            problems.append(f"output {i} (%{v.name}): IR type {v.type} but PyTorch gives "
                            f"{e.dtype}{list(e.shape)} (type inference disagrees with PyTorch)")
            continue
        g = _as_torch(g, v.type.dtype)
        try:
            torch.testing.assert_close(g, e, equal_nan=True)
            continue
        except AssertionError as err:
            strict = str(err)
        head = f"output {i} (%{v.name}: {v.type})"
        if fp64 is None or not fp64_covers(e.dtype) or g.dtype != e.dtype or g.shape != e.shape:
            problems.append(f"{head} [rule: {STRICT}]: {strict}")
            continue
        ref = fp64()
        why = ref if isinstance(ref, str) else check_against_fp64(g, e, ref[i] if i < len(ref) else None)
        if isinstance(ref, str):
            problems.append(f"{head} [rule: {STRICT}; float64 oracle unavailable: {why}]: {strict}")
        elif why is not None:
            problems.append(f"{head} [rule: {FP64}]: {why}\n(strict check: {strict})")
    return "\n".join(problems) or None


def _crash(e: BaseException) -> str:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return "raised " + "".join(tb[-6:]).rstrip()


def _outcome(fn) -> tuple[list | None, str | None]:
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - a crash on a valid graph is a finding to report
        return None, _crash(e)


def bisect_passes(graph: Graph, inputs: Sequence[np.ndarray], expected: Sequence[Any], target: str,
                  passes: PassSpec | None = None, fp64: Fp64Reference | None = None) -> tuple[str, str] | None:
    """Run the pipeline pass by pass, interpreting after each; the first divergence.

    Returns ``("pass <name>", detail)`` for the first pass after which the
    interpreter disagrees with ``expected`` (or which crashes), ``("interpreter",
    detail)`` when it disagrees before any pass, or None when every pass agrees.
    Comparisons use :func:`compare_outputs` with ``fp64``.
    """
    import minicomp
    from minicomp.passes.manager import PassContext, PassManager
    got, problem = _outcome(lambda: list(minicomp.interpret(graph.copy(), *inputs)))
    problem = problem or compare_outputs(expected, got, graph, fp64)
    if problem is not None:  # the interpreter is wrong before any pass ran: it can't judge passes
        return "interpreter", problem
    g = graph.copy()
    ctx = PassContext(options={"target": "gpu" if target == "triton" else "cpu"})
    for p in _passes(passes, target):
        try:
            g = PassManager([p]).run(g, ctx)
            got = list(minicomp.interpret(g.copy(), *inputs))
        except Exception as e:  # noqa: BLE001
            return f"pass {p.name}", _crash(e)
        problem = compare_outputs(expected, got, g, fp64)
        if problem is not None:
            return f"pass {p.name}", problem
    return None


def check_compile(case, targets: Sequence[str] = ("cpu",), passes: PassSpec | None = None,
                  check_interpreter: bool = True) -> None:
    """Check that minicomp computes what PyTorch eager computes for ``case``.

    Runs PyTorch eager, the interpreter (unless ``check_interpreter=False``) and each
    target of ``targets`` (with ``passes``, default the driver's pipeline). Returns
    None when everything agrees; raises :class:`MismatchError` naming the first
    diverging layer, with the graph's text IR and a repro script path; raises
    :class:`InvalidCaseError` when PyTorch itself rejects the case.

    Oracle rule: every output must pass ``torch.testing.assert_close(equal_nan=True)``
    against eager at default tolerances, except that a float32/float16/bfloat16 output that
    fails it is accepted when, element by element, ours is within default tolerance
    of eager or at least as close as eager to the same PyTorch function run with
    floating inputs upcast to float64 (+ 1 ulp of the output dtype), with NaN/inf
    positions agreeing with eager. Reason: eager's kernels are not always correctly
    rounded, and size-dependently so (bf16 ``abs -> rsqrt -> log`` at ``x = 1.0703125``:
    eager's scalar loop rounds ``sqrt`` first and lands one ulp off, which ``log``
    amplifies to 13%; a float32 ``addmm`` accumulated in float32 lands one ulp off,
    which a following ``pow`` amplifies beyond float32's rtol). See :mod:`minicomp.testing.oracle`. The
    mismatch detail names the rule that rejected each output.
    """
    graph, inputs = case.graph, [np.asarray(a) for a in case.inputs]
    try:
        fn = case.torch_fn()
        expected = list(fn(*case.to_torch_inputs()))
    except Exception as e:
        raise InvalidCaseError(f"PyTorch eager rejects this graph ({type(e).__name__}: {e}):\n{case.ir()}") from e
    fp64 = fp64_reference(fn, case.to_torch_inputs())
    layers = (["interpreter"] if check_interpreter else []) + list(targets)
    for layer in layers:
        got, problem = _outcome(lambda: run_layer(graph, inputs, layer, passes))
        if problem is None:
            problem = compare_outputs(expected, got, graph, fp64)
        if problem is None:
            continue
        blamed, detail = "interpreter", problem
        if layer != "interpreter":
            found = bisect_passes(graph, inputs, expected, layer, passes, fp64)
            blamed, detail = found if found is not None else (f"backend {layer}", problem)
        names = None if passes is None else [p if isinstance(p, str) else p.name for p in passes]
        path = write_repro(graph, case.ir(), inputs, [layer] if layer != "interpreter" else [],
                           f"{blamed} diverged from PyTorch eager", names)
        raise MismatchError(blamed, layer, case.ir(), path, detail)
