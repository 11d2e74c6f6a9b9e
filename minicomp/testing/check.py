"""Differential and bit-exact checking: PyTorch eager vs the interpreter vs passes vs compile targets.

:func:`check_compile` runs one :class:`~minicomp.testing.graphs.Case` through two oracles:

1. *differential*: PyTorch eager (:mod:`minicomp.testing.torch_ref`) against the
   reference interpreter and each compile target, compared with
   ``torch.testing.assert_close(equal_nan=True)`` at the result dtype's default
   tolerances (float32/float16/bfloat16 outputs beyond them get a second chance
   against a float64 run: :mod:`minicomp.testing.oracle`);
2. *bit-exact* (``exact=True``, the default): each pass of each target's pipeline
   against the graph before it, both run by the interpreter, bit for bit
   (:mod:`minicomp.testing.exact`), so a pass that changes bits within tolerance,
   flips a zero's sign or drops a NaN is caught.

On a failure it names the first layer that diverged (:func:`bisect_passes` runs
the pipeline pass by pass with the interpreter after each; if every pass agrees,
the backend is to blame), optionally shrinks the case
(:func:`minicomp.testing.shrink.shrink_case`), writes a repro script and raises
:class:`MismatchError` with a one-screen report.
"""
from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.errors import MinicompError
from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph
from minicomp.testing.oracle import FP64, STRICT, Fp64Reference, check_against_fp64, fp64_covers, fp64_reference
from minicomp.testing.report import format_report
from minicomp.testing.repro import write_repro
from minicomp.testing.targets import check_targets, pipeline_target
from minicomp.testing.torch_ref import TORCH_DTYPE, torch_fn


class MismatchError(AssertionError):
    """A layer of minicomp disagrees with PyTorch eager, changed bits it must keep, or crashed.

    Attributes: ``layer`` (the first layer that diverged: ``"interpreter"``, ``"pass
    <name>"``, or ``"backend <target>"``), ``target``, ``mode`` (``"differential"`` or
    ``"exact"``), ``ir`` (the reported graph as text IR), ``case`` (the reported,
    possibly shrunk, :class:`~minicomp.testing.graphs.Case`), ``repro_path`` (the
    standalone script), ``detail`` (the comparison message) and ``report`` (the
    one-screen text, also ``str(err)``).
    """

    def __init__(self, layer: str, target: str, ir: str, repro_path: str, detail: str, *,
                 mode: str = "differential", case: Any = None, report: str | None = None):
        self.layer, self.target, self.ir, self.repro_path, self.detail = layer, target, ir, repro_path, detail
        self.mode, self.case = mode, case
        self.report = report or (f"minicomp mismatch in {layer} (checking target '{target}')\n--- graph ---\n"
                                 f"{ir}\n--- first divergence: {layer} ---\n{detail}\n--- repro: python {repro_path}")
        super().__init__(self.report)


class InvalidCaseError(MinicompError):
    """PyTorch eager itself rejects the case: the graph is not valid for PyTorch."""


PassSpec = Sequence[Any]  # pass names or Pass objects


def _passes(passes: PassSpec | None, target: str) -> list:
    from minicomp.passes.manager import default_pipeline, get_pass
    if passes is None:
        return default_pipeline(pipeline_target(target), {})
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def run_layer(graph: Graph, inputs: Sequence[np.ndarray], layer: str, passes: PassSpec | None = None,
              verify: bool = True) -> list:
    """Outputs of ``graph`` on ``inputs`` computed by one layer.

    ``layer`` is ``"interpreter"`` (no passes), or a compile target (``"cpu"``,
    ``"interpret"``, ``"triton"`` or a registered one) run through
    :func:`minicomp.testing.targets.compile_graph` with ``passes`` (None: the
    driver's default pipeline; ``verify``: verify the IR after each pass). Returns numpy arrays or torch tensors.
    """
    import minicomp
    from minicomp.testing.strategies import to_torch
    from minicomp.testing.targets import compile_graph
    if layer == "interpreter":
        return list(minicomp.interpret(graph.copy(), *inputs))
    run = compile_graph(graph, layer, passes, verify=verify)
    return list(run([to_torch(a, v.type.dtype) for a, v in zip(inputs, graph.inputs)]))


def _as_torch(x: Any, dtype: DType):
    import torch
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x))
    x = x.detach().cpu()
    return x.to(torch.bfloat16) if dtype is DType.bf16 and x.dtype == torch.float32 else x


def compare_outputs(expected: Sequence[Any], got: Sequence[Any], graph: Graph,
                    fp64: Fp64Reference | None = None, signs: Sequence[Any] | None = None) -> str | None:
    """None when ``got`` matches ``expected`` (PyTorch's results) output by output, else why not.

    Checks count, the IR's declared dtype and shape of each output against
    PyTorch's, then values with ``assert_close(equal_nan=True)`` at default
    tolerances. A float16/bfloat16 output that fails that is judged instead by the
    float64 oracle rule of :mod:`minicomp.testing.oracle` when ``fp64`` (from
    :func:`~minicomp.testing.oracle.fp64_reference`) is given. With ``signs`` (the
    reference interpreter's outputs) the sign of every zero counts too
    (:func:`zero_sign_difference`). Each problem names the rule that rejected the output.
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
        head = f"output {i} (%{v.name}: {v.type})"
        try:
            torch.testing.assert_close(g, e, equal_nan=True)
            judged = signs is not None and i < len(signs) and not zero_sign_unspecified(graph)
            flipped = zero_sign_difference(g, e, signs[i]) if judged else None
            if flipped is not None:
                problems.append(f"{head} [rule: {ZERO_SIGN}]: {flipped}")
            continue
        except AssertionError as err:
            strict = str(err)
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


ZERO_SIGN = "sign of zero: where eager and the reference interpreter agree on a zero's sign, ours must too"


#: Ops whose zero sign for mixed +0.0/-0.0 operands implementations choose differently: IEEE 754-2019
#: maximum(+0, -0) is +0 (minicomp's CPU backend), numpy and eager's scalar loop return an operand.
ZERO_SIGN_UNSPECIFIED = frozenset({"maximum", "minimum", "amax", "amin", "max_pool2d", "clamp", "hardtanh",
                                   "relu6"})


def zero_sign_unspecified(graph: Graph) -> bool:
    """True when ``graph`` has an op of :data:`ZERO_SIGN_UNSPECIFIED`: its outputs' zero signs are not judged."""
    return any(n.op in ZERO_SIGN_UNSPECIFIED for n in graph.nodes)


def zero_sign_difference(got: Any, eager: Any, reference: Any) -> str | None:
    """None unless ``got`` has a zero of the other sign than ``eager`` where ``reference`` agrees with eager.

    ``assert_close`` counts ``-0.0`` equal to ``+0.0``, so a backend computing
    ``neg(x)`` as ``0 - x`` or ``abs`` keeping ``-0.0`` would pass it. Eager alone is
    no judge of signs: its ``minimum``/``maximum`` of ``+0.0`` and ``-0.0`` depend on the
    tensor's size, and its reductions start from ``+0.0``. An element counts only
    where eager and the reference interpreter (minicomp's specification) both give
    that zero sign, so a disagreement between them never blames a backend.
    """
    import torch
    g, e = _as_torch(got, DType.f32), eager
    if not (g.is_floating_point() and e.is_floating_point()) or tuple(g.shape) != tuple(e.shape):
        return None
    r = _as_torch(reference, DType.f32)
    if tuple(r.shape) != tuple(e.shape) or not r.is_floating_point():
        return None
    g, e, r = (t.detach().cpu().to(torch.float64) for t in (g, e, r))
    zero = (g == 0) & (e == 0) & (r == 0)
    bad = zero & (torch.signbit(g) != torch.signbit(e)) & (torch.signbit(r) == torch.signbit(e))
    if not bool(bad.any()):
        return None
    flat = int(torch.nonzero(bad.reshape(-1))[0])
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(g.shape))) if g.dim() else ()
    return (f"{int(bad.sum())} / {bad.numel()} elements are zeros of the wrong sign; first at index {idx}: "
            f"ours={g[idx].item()!r}, eager={e[idx].item()!r}, interpreter={r[idx].item()!r}")


def crash_text(e: BaseException) -> str:
    """A crash as report text: ``raised`` and the last frames of the traceback."""
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return "raised " + "".join(tb[-6:]).rstrip()


_crash = crash_text


def _outcome(fn) -> tuple[list | None, str | None]:
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - a crash on a valid graph is a finding to report
        return None, _crash(e)


def bisect_passes(graph: Graph, inputs: Sequence[np.ndarray], expected: Sequence[Any], target: str = "cpu",
                  passes: PassSpec | None = None, fp64: Fp64Reference | None = None,
                  signs: Sequence[Any] | None = None) -> tuple[str, str] | None:
    """Run the pipeline pass by pass, interpreting after each; the first divergence from ``expected``.

    ``expected`` are PyTorch eager's outputs for ``inputs``; ``passes`` as for
    :func:`check_compile` (None: ``target``'s default pipeline). Returns ``("pass
    <name>", detail)`` for the first pass after which the interpreter disagrees with
    ``expected`` (or which crashes), ``("interpreter", detail)`` when it disagrees
    before any pass, or None when every pass agrees (then a backend is to blame).
    Comparisons use :func:`compare_outputs` with ``fp64`` and ``signs`` (the interpreter's outputs before any
    pass, the judge of zero signs); outputs are named as in ``graph``.
    """
    import minicomp
    from minicomp.passes.manager import PassContext, PassManager
    got, problem = _outcome(lambda: list(minicomp.interpret(graph.copy(), *inputs)))
    problem = problem or compare_outputs(expected, got, graph, fp64)
    if problem is not None:  # the interpreter is wrong before any pass ran: it can't judge passes
        return "interpreter", problem
    g = graph.copy()
    ctx = PassContext(options={"target": pipeline_target(target)})
    for p in _passes(passes, target):
        try:
            g = PassManager([p]).run(g, ctx)
            got = list(minicomp.interpret(g.copy(), *inputs))
        except Exception as e:  # noqa: BLE001
            return f"pass {p.name}", crash_text(e)
        problem = compare_outputs(expected, got, graph, fp64, signs)
        if problem is not None:
            return f"pass {p.name}", problem
    return None


@dataclasses.dataclass(frozen=True)
class Failure:
    """What :func:`find_failure` found: the blamed ``layer``, the ``target`` being checked, the oracle
    ``mode`` (``"differential"`` or ``"exact"``) and the ``detail``."""

    layer: str
    target: str
    mode: str
    detail: str

    @property
    def key(self) -> tuple[str, str]:
        """What must stay the same for a smaller case to show "the same" failure (used by the shrinker)."""
        return self.layer, self.mode


def _torch_expected(case) -> tuple[Any, list]:
    try:
        fn = case.torch_fn()
        return fn, list(fn(*case.to_torch_inputs()))
    except Exception as e:
        raise InvalidCaseError(f"PyTorch eager rejects this graph ({type(e).__name__}: {e}):\n{case.ir()}") from e


def find_failure(case, targets: Sequence[str] = ("cpu",), passes: PassSpec | None = None,
                 check_interpreter: bool = True, exact: bool = True, differential: bool = True) -> Failure | None:
    """The first failure of ``case`` (see :func:`check_compile`), or None; writes nothing, raises nothing else.

    ``differential=False`` skips the comparison with PyTorch (the shrinker's fast
    path for bit-exact failures; PyTorch must still accept the case). Raises
    :class:`InvalidCaseError` when PyTorch itself rejects the case.
    """
    check_targets(targets)
    graph, inputs = case.graph, [np.asarray(a) for a in case.inputs]
    fn, expected = _torch_expected(case)
    fp64 = fp64_reference(torch_fn(graph, upcast_constants=True), case.to_torch_inputs())
    reference = None  # the interpreter's outputs: the judge of zero signs for passes and targets
    if differential:
        reference, problem = _outcome(lambda: run_layer(graph, inputs, "interpreter"))
        problem = problem if problem is not None else compare_outputs(expected, reference, graph, fp64)
        if problem is not None and check_interpreter:
            return Failure("interpreter", "interpreter", "differential", problem)
        reference = None if problem is not None else reference
    if exact:  # before the targets: it needs no compile, and names the pass exactly
        from minicomp.testing.exact import check_passes_exact
        seen: set[str] = set()
        for target in targets or ("cpu",):
            flavour = pipeline_target(target)
            if flavour not in seen:
                seen.add(flavour)
                found = check_passes_exact(graph, inputs, _passes(passes, target), {"target": flavour})
                if found is not None:
                    return Failure(found[0], target, "exact", found[1])
    for layer in targets if differential else []:
        # (the exact check verified the IR after every pass that changed it; a crash is bisected with verification)
        got, problem = _outcome(lambda: run_layer(graph, inputs, layer, passes, verify=not exact))
        if problem is None:
            problem = compare_outputs(expected, got, graph, fp64, reference)
        if problem is not None:
            found = bisect_passes(graph, inputs, expected, layer, passes, fp64, reference)
            blamed, detail = found if found is not None else (f"backend {layer}", problem)
            return Failure(blamed, layer, "differential", detail)
    return None


def check_compile(case, targets: Sequence[str] = ("cpu",), passes: PassSpec | None = None,
                  check_interpreter: bool = True, *, exact: bool = True, shrink: bool | float = False) -> None:
    """Check that minicomp computes what PyTorch eager computes for ``case``, and that passes keep bits.

    Runs PyTorch eager, the interpreter (unless ``check_interpreter=False``) and each
    target of ``targets`` (built in or registered with
    :func:`~minicomp.testing.targets.register_target`; an unknown name raises
    :class:`~minicomp.testing.targets.UnknownTargetError` at once) with ``passes``
    (pass names or Pass objects; None: each target's default pipeline). With
    ``exact`` it also runs each pipeline (the CPU one when ``targets`` is empty) pass by
    pass through the interpreter, before compiling for the targets, and
    requires bit-identical results (:mod:`minicomp.testing.exact`; passes that
    declare ``reassociates = True`` are held to tolerance instead). ``shrink``
    (True, or a time budget in seconds) minimizes a failing case first.

    Returns None when everything agrees; raises :class:`MismatchError` naming the
    first diverging layer, with a one-screen report and a repro script path; raises
    :class:`InvalidCaseError` when PyTorch itself rejects the case.

    Oracle rule of the differential check: every output must pass
    ``torch.testing.assert_close(equal_nan=True)`` against eager at default
    tolerances, except that a float32/float16/bfloat16 output that fails it is
    accepted when, element by element, ours is within default tolerance of eager or
    at least as close as eager to the same PyTorch function run with floating
    inputs upcast to float64 (+ 1 ulp of the output dtype), with NaN/inf positions
    agreeing with eager. Reason: eager's kernels are not always correctly rounded,
    and size-dependently so (see :mod:`minicomp.testing.oracle`). The mismatch
    detail names the rule that rejected each output.
    """
    failure = find_failure(case, targets, passes, check_interpreter, exact)
    if failure is None:
        return
    original_nodes = None
    if shrink:
        from minicomp.testing.report import op_nodes
        from minicomp.testing.shrink import shrink_case
        budget = 30.0 if shrink is True else float(shrink)
        original_nodes = op_nodes(case.graph)
        case, failure = shrink_case(case, failure, targets, passes, check_interpreter, exact, budget_s=budget)
    raise mismatch_error(case, failure, targets, passes, original_nodes)


def mismatch_error(case, failure: Failure, targets: Sequence[str], passes: PassSpec | None,
                   original_nodes: int | None = None) -> MismatchError:
    """Write the repro script for ``failure`` on ``case`` and build the :class:`MismatchError` to raise."""
    inputs = [np.asarray(a) for a in case.inputs]
    layer_targets = [] if failure.layer == "interpreter" and failure.mode == "differential" else [failure.target]
    path, problem = write_repro(case.graph, case.ir(), inputs, layer_targets, f"{failure.layer} diverged",
                                passes, mode=failure.mode, layer=failure.layer)
    what = "changed bits it must keep" if failure.mode == "exact" else "diverged from PyTorch eager"
    oracle = "bit-exact oracle: pass on vs pass off" if failure.mode == "exact" else "differential oracle"
    headline = f"minicomp mismatch: {failure.layer} {what} (checking target '{failure.target}', {oracle})"
    note = f"(shrunk from {original_nodes} op nodes)" if original_nodes is not None else ""
    report = format_report(headline, case.graph, inputs, failure.layer, failure.detail, path, problem, note)
    return MismatchError(failure.layer, failure.target, case.ir(), path, failure.detail, mode=failure.mode,
                         case=case, report=report)
