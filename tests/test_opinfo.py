"""Sweep PyTorch's OpInfo database through minicomp's CPU compiler, one test per sample.

For every OpInfo that exercises an op minicomp supports (``SWEEP`` below), each
sample input (float32, plus the other dtypes listed) is compiled with
``minicomp.compile(fn, inputs, target="cpu")`` (fallbacks off, the default) and
compared with eager at ``assert_close``'s default tolerances (``equal_nan=True``).

Samples are filtered by these written rules (see :func:`usable`):
  R1. the sample's input is a tensor, or a list/tuple of tensors (``cat``, ``stack``);
  R2. args/kwargs hold only tensors (become compiled inputs) or plain Python
      constants: numbers, bools, strings, None, torch dtypes, and tuples/lists of them;
  R3. every tensor has one of minicomp's 7 dtypes and lives on the CPU;
  R4. no ``out=`` kwarg (minicomp compiles functional programs only).
Runtime is bounded by taking at most ``CAP[dtype]`` samples per (op, dtype): a fixed
pseudo-random choice, kept in the OpInfo's order (an even stride aliased with sample
lists that alternate, e.g. max_pool2d's return_indices, and swept only one kind). The
choice and the sample values come from a seed per (op, dtype), so every run sees the
same samples and numbers.

The ledger ``opinfo_xfails.py`` names each sample that is expected to fail, by
(op, dtype, sample id), with the error it must raise or the numeric difference it
must show. A sample without an entry must match eager; a sample with one must fail
exactly as the entry says: an unexpected error, a larger mismatch or an unexpected
pass fails the test, and so does an entry that names no swept sample.
:func:`ledger_totals` counts the sweep from the ledger without running it (the
README's figures are checked against it by tests/test_docs.py); the last test
writes the totals the run measured to ``<pytest basetemp>/opinfo-totals.json``.
"""
from __future__ import annotations

import functools
import json
import random
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("expecttest", reason="OpInfo's module imports expecttest (pip install expecttest)")

from torch.testing._comparison import default_tolerances  # noqa: E402
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

import minicomp  # noqa: E402
from opinfo_xfails import XFAILS, Differs, Raises  # noqa: E402

F32, F64, I32, I64, BOOL = torch.float32, torch.float64, torch.int32, torch.int64, torch.bool
FLOAT_EXTRA = (F64,)
INT_EXTRA = (F64, I64, I32)

#: OpInfo key -> dtypes swept besides float32 (the key adds ".variant" when there is one).
SWEEP: dict[str, tuple[torch.dtype, ...]] = {
    # elementwise unary
    **{k: INT_EXTRA for k in ("abs", "neg", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid",
                              "erf", "reciprocal", "floor", "isnan", "logical_not", "nn.functional.relu",
                              "nn.functional.relu6", "nn.functional.hardtanh", "clamp", "clamp_min",
                              "clamp_max", "square")},
    **{k: FLOAT_EXTRA for k in ("nn.functional.silu", "nn.functional.leaky_relu", "nn.functional.gelu",
                                "nn.functional.hardswish", "nn.functional.hardsigmoid")},
    # elementwise binary / ternary
    **{k: INT_EXTRA + (BOOL,) for k in ("add", "mul", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
                                        "logical_and", "logical_or", "logical_xor", "where", "masked_fill")},
    **{k: INT_EXTRA for k in ("sub", "rsub", "div.no_rounding_mode", "div.trunc_rounding", "div.floor_rounding",
                              "true_divide", "pow", "remainder", "fmod")},
    # reductions and normalizations
    **{k: INT_EXTRA for k in ("sum", "amax", "amin", "argmax", "argmin", "cumsum")},
    **{k: FLOAT_EXTRA for k in ("mean", "var", "softmax", "log_softmax", "nn.functional.layer_norm",
                                "nn.functional.batch_norm")},
    # contractions
    **{k: FLOAT_EXTRA for k in ("matmul", "mm", "bmm", "nn.functional.linear", "addmm", "nn.functional.conv2d",
                                "nn.functional.max_pool2d", "nn.functional.avg_pool2d")},
    # movement
    **{k: (F64, I64, BOOL) for k in ("reshape", "view", "flatten", "squeeze", "unsqueeze", "permute", "transpose",
                                     "t", "expand", "narrow", "cat", "split", "split.list_args", "chunk", "clone",
                                     "contiguous", "movedim", "stack", "select")},
    "nn.functional.embedding": FLOAT_EXTRA,
    "nn.functional.interpolate.nearest": FLOAT_EXTRA,
}
CAP = {F32: 10, F64: 3, I32: 3, I64: 3, BOOL: 3}
_OK_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool}
_SHORT = {F32: "f32", F64: "f64", I32: "i32", I64: "i64", BOOL: "b8", torch.float16: "f16", torch.bfloat16: "bf16"}
_RESULTS: dict[tuple[str, str, str], str] = {}  # ledger key -> "match" | "raises" | "differs", as run


def _key(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


OPINFOS = {_key(op): op for op in op_db if _key(op) in SWEEP}
CASES = [(k, dt) for k, dts in SWEEP.items() if k in OPINFOS for dt in (F32, *dts)
         if dt in OPINFOS[k].supported_dtypes("cpu")]


def _plain(x: Any) -> bool:
    if isinstance(x, (bool, int, float, str, type(None), torch.dtype)):
        return True
    return isinstance(x, (tuple, list, torch.Size)) and all(_plain(y) for y in x)


def _tensor_ok(t: torch.Tensor) -> bool:
    return t.dtype in _OK_DTYPES and t.device.type == "cpu"


def usable(sample) -> str | None:
    """None when the sample passes rules R1-R4, else the rule it breaks."""
    inp = sample.input
    tensors = [inp] if isinstance(inp, torch.Tensor) else list(inp) if isinstance(inp, (list, tuple)) else None
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        return "R1"
    for a in [*sample.args, *sample.kwargs.values()]:
        if isinstance(a, torch.Tensor):
            tensors.append(a)
        elif not _plain(a):
            return "R2"
    if not all(_tensor_ok(t) for t in tensors):
        return "R3"
    if "out" in sample.kwargs:
        return "R4"
    return None


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{_SHORT.get(x.dtype, str(x.dtype))}[{','.join(map(str, x.shape))}]"
    if isinstance(x, (list, tuple)):
        inner = ",".join(_describe(y) for y in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    return repr(x)


def sample_id(index: int, sample) -> str:
    """The ledger's name for a sample: its index in the OpInfo's list of usable samples for
    its (op, dtype), then its input, positional args and kwargs, tensors shown as dtype[shape]."""
    parts = [_describe(sample.input), *map(_describe, sample.args),
             *(f"{k}={_describe(v)}" for k, v in sample.kwargs.items())]
    return f"#{index} " + " ".join(parts)


def _choose(n: int, cap: int, seed: int) -> list[int]:
    """``cap`` of the indices ``range(n)`` (all when n <= cap), chosen by ``seed``, in order."""
    return list(range(n)) if n <= cap else sorted(random.Random(seed).sample(range(n), cap))


@dataclass(frozen=True)
class Case:
    """One swept sample: the OpInfo key, dtype, and the sample with its ledger id."""

    key: str
    dtype: torch.dtype
    sid: str
    sample: Any

    @property
    def ledger_key(self) -> tuple[str, str, str]:
        return self.key, _dtype_name(self.dtype), self.sid


@functools.cache
def swept_samples() -> tuple[Case, ...]:
    """Every sample the sweep runs, in order. Values and the choice are drawn under a seed per
    (op, dtype) (crc32 of its name); torch's global RNG state is restored afterwards."""
    cases = []
    for key, dtype in CASES:
        seed = zlib.crc32(f"{key}/{dtype}".encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = [s for s in OPINFOS[key].sample_inputs("cpu", dtype, requires_grad=False) if usable(s) is None]
        cases += [Case(key, dtype, sample_id(i, samples[i]), samples[i])
                  for i in _choose(len(samples), CAP[dtype], seed)]
    return tuple(cases)


@dataclass(frozen=True)
class Totals:
    """The sweep's figures: OpInfos, (op, dtype) pairs and samples swept, and how they end."""

    opinfos: int
    pairs: int
    samples: int
    match: int
    raises: int
    differs: int


def _totals(outcomes: dict[tuple[str, str, str], str]) -> Totals:
    kinds = list(outcomes.values())
    return Totals(opinfos=len({k for k, _, _ in outcomes}), pairs=len({(k, d) for k, d, _ in outcomes}),
                  samples=len(kinds), match=kinds.count("match"), raises=kinds.count("raises"),
                  differs=kinds.count("differs"))


def ledger_totals() -> Totals:
    """The totals a passing sweep measures, found without running it: every sample the ledger
    names ends as its entry says, every other one matches eager."""
    kind = {Raises: "raises", Differs: "differs"}
    return _totals({c.ledger_key: kind[type(XFAILS[c.ledger_key])] if c.ledger_key in XFAILS else "match"
                    for c in swept_samples()})


def as_function(op, sample):
    """(fn, tensors): ``fn(*tensors)`` calls the op on the sample with the tensors as arguments."""
    is_list = not isinstance(sample.input, torch.Tensor)
    first = list(sample.input) if is_list else [sample.input]
    arg_pos = [i for i, a in enumerate(sample.args) if isinstance(a, torch.Tensor)]
    kw_names = [k for k, v in sample.kwargs.items() if isinstance(v, torch.Tensor)]
    tensors = first + [sample.args[i] for i in arg_pos] + [sample.kwargs[k] for k in kw_names]

    def fn(*ts):
        ts = list(ts)
        inp = ts[:len(first)] if is_list else ts[0]
        rest = ts[len(first):]
        args = list(sample.args)
        for i in arg_pos:
            args[i] = rest.pop(0)
        kwargs = dict(sample.kwargs)
        for k in kw_names:
            kwargs[k] = rest.pop(0)
        return op.op(inp, *args, **kwargs)

    return fn, [t.detach().clone().contiguous() for t in tensors]


def _flat(out) -> list:
    return [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]


def _differs(got: list, expected: list) -> Differs | None:
    """None when every output matches eager at assert_close's defaults (equal_nan), else how
    many elements differ and the largest difference. Shapes and dtypes must agree first."""
    assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
    elements, max_abs = 0, 0.0
    for g, e in zip(got, expected):
        assert (g.shape, g.dtype) == (e.shape, e.dtype), f"got {g.dtype}{list(g.shape)}, eager {e.dtype}{list(e.shape)}"
        try:
            torch.testing.assert_close(g, e, equal_nan=True)
        except AssertionError:
            rtol, atol = default_tolerances(e)
            g64, e64 = g.double(), e.double()
            bad = ~torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
            elements += int(bad.sum())
            max_abs = max(max_abs, float((g64 - e64).abs()[bad].nan_to_num(torch.inf).max()))
    return Differs(elements, max_abs, "as measured") if elements else None


def run_sample(op, sample) -> Raises | Differs | None:
    """How minicomp does on this sample: None when it matches eager, else the error it raised
    (as a :class:`Raises`) or the mismatch it showed (as a :class:`Differs`)."""
    fn, tensors = as_function(op, sample)
    expected = _flat(fn(*tensors))
    try:
        got = _flat(minicomp.compile(fn, tensors, target="cpu")(*tensors))
        return _differs(got, expected)
    except Exception as e:  # noqa: BLE001 - every failure kind is an outcome to hold against the ledger
        return Raises(type(e).__name__, str(e).strip())


def verdict(outcome: Raises | Differs | None, entry: Raises | Differs | None) -> str | None:
    """None when the outcome is what the ledger expects, else why the test fails."""
    if entry is None:
        return None if outcome is None else f"differs from eager and has no ledger entry: {outcome!r}"
    if outcome is None:
        return f"unexpected pass: the sample matches eager; remove its entry {entry!r} from opinfo_xfails.py"
    if isinstance(entry, Raises) and isinstance(outcome, Raises):
        if outcome.error == entry.error and entry.message in outcome.message:
            return None
    if isinstance(entry, Differs) and isinstance(outcome, Differs):
        if outcome.elements <= entry.elements and outcome.max_abs <= entry.max_abs:
            return None
    return f"failed otherwise than the ledger says:\n  expected {entry!r}\n  got      {outcome!r}"


@pytest.mark.parametrize("case", swept_samples(), ids=lambda c: f"{c.key}-{_dtype_name(c.dtype)}-{c.sid.split()[0]}")
def test_opinfo(case: Case) -> None:
    entry = XFAILS.get(case.ledger_key)
    outcome = run_sample(OPINFOS[case.key], case.sample)
    failure = verdict(outcome, entry)
    if failure is not None:
        pytest.fail(f"{case.key} {_dtype_name(case.dtype)} sample {case.sid!r}: {failure}")
    _RESULTS[case.ledger_key] = "match" if entry is None else "raises" if isinstance(entry, Raises) else "differs"
    if entry is not None:
        pytest.xfail(str(entry))


def test_ledger_names_swept_samples() -> None:
    """Every ledger entry names a sample the sweep runs (a renamed or dropped sample fails here)."""
    swept = {c.ledger_key for c in swept_samples()}
    stale = [k for k in XFAILS if k not in swept]
    assert not stale, f"{len(stale)} opinfo_xfails.py entries name no swept sample: {stale}"


def test_verdict_holds_each_sample_to_its_entry() -> None:
    """The ledger's rules: no entry means match; an entry must be met exactly (same error type,
    message text included; a difference no larger), and a pass where one is listed fails."""
    err, diff = Raises("UnsupportedOpError", "no running statistics"), Differs(1, 2e-5, "rounding")
    assert verdict(None, None) is None
    assert verdict(Raises("UnsupportedOpError", "x: no running statistics; call eval()"), err) is None
    assert verdict(Differs(1, 1.8e-5, "as measured"), diff) is None
    assert "no ledger entry" in verdict(Raises("IndexError", "tuple index out of range"), None)
    assert "no ledger entry" in verdict(Differs(1, 1e-9, "as measured"), None)
    assert "unexpected pass" in verdict(None, err)
    for outcome, entry in ((Raises("CompileError", "no running statistics"), err), (Raises("UnsupportedOpError",
                           "another reason"), err), (Differs(2, 1e-5, "as measured"), diff),
                           (Differs(1, 3e-5, "as measured"), diff), (Raises("IndexError", "oops"), diff)):
        assert "otherwise than the ledger says" in verdict(outcome, entry)


# -- the samples whose ledger entries hid wrong values or crashes, fixed (each compared with eager) --
@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_avg_pool2d_negative_divisor_override(target: str, dtype: torch.dtype) -> None:
    """A negative divisor_override divides by it, as eager does (it was taken as "none" and the
    window count used instead): the OpInfo sample avg_pool2d(x, (2, 2), (), (0,), False, True, -2)."""
    x = torch.randn(1, 1, 4, 4, dtype=dtype)
    for divisor in (-2, -1, 3):
        def fn(t, d=divisor):
            return F.avg_pool2d(t, (2, 2), (), (0,), False, True, d)
        torch.testing.assert_close(minicomp.compile(fn, (x,), target=target)(x), fn(x))


@pytest.mark.parametrize("dtype", [I32, I64, F32])
def test_sum_and_cumsum_keep_a_dtype_given_equal_to_the_input(dtype: torch.dtype) -> None:
    """``torch.sum(x, dtype=x.dtype)`` and cumsum alike keep that dtype; for int32 the frontend
    dropped it and the IR's int32 -> int64 default made the import fail (OpInfo cumsum int32
    sample ``i32[5,5,5] 1 dtype=torch.int32``)."""
    x = torch.arange(-30, 30, dtype=dtype).reshape(3, 4, 5)
    for fn in (lambda t: torch.cumsum(t, 1, dtype=dtype), lambda t: torch.sum(t, 1, dtype=dtype),
               lambda t: torch.sum(t, dtype=dtype), lambda t: torch.cumsum(t, 1), lambda t: torch.sum(t, 2)):
        torch.testing.assert_close(minicomp.compile(fn, (x,), target="cpu")(x), fn(x))


@pytest.mark.parametrize("dtype", [F32, F64, I32, I64, BOOL])
def test_cumsum_of_0d(dtype: torch.dtype) -> None:
    """cumsum of a 0-d tensor (dim 0 or -1) is the value itself in cumsum's result dtype
    (an IndexError inside minicomp's lowering before, on the OpInfo's 0-d sample)."""
    x = torch.tensor(3, dtype=dtype)
    for fn in (lambda t: torch.cumsum(t, 0), lambda t: torch.cumsum(t, -1),
               lambda t: torch.cumsum(t, 0, dtype=torch.float64)):
        torch.testing.assert_close(minicomp.compile(fn, (x,), target="cpu")(x), fn(x))


@pytest.mark.parametrize("dtype", [F32, I64, BOOL])
def test_transpose_of_0d(dtype: torch.dtype) -> None:
    """transpose of a 0-d tensor (dims 0 and -1) is the tensor itself (an IndexError in the
    frontend before, on the OpInfo's 0-d sample ``transpose(x, 0, 0)``)."""
    x = torch.tensor(3, dtype=dtype)
    for fn in (lambda t: torch.transpose(t, 0, 0), lambda t: torch.transpose(t, -1, 0) * 2):
        torch.testing.assert_close(minicomp.compile(fn, (x,), target="cpu")(x), fn(x))


def test_matmul_rounding_difference_is_within_float32_bound() -> None:
    """The one matmul sample the ledger lists as Differs is a rounding difference: minicomp's
    result and eager's both lie within float32's dot-product error bound of the float64 product
    (|error| <= gamma_k * (|a| @ |b|), gamma_k = k*u / (1 - k*u), u = 2**-24), on every element."""
    key = ("matmul", "float32", "#13 f32[10] f32[5,5,10,5]")
    assert isinstance(XFAILS[key], Differs)
    case = next(c for c in swept_samples() if c.ledger_key == key)
    fn, tensors = as_function(OPINFOS["matmul"], case.sample)
    k, u = tensors[0].shape[-1], 2.0 ** -24
    exact = fn(*[t.double() for t in tensors])
    bound = (k * u / (1 - k * u)) * fn(*[t.double().abs() for t in tensors])
    for name, result in (("eager", fn(*tensors)), ("minicomp", minicomp.compile(fn, tensors, target="cpu")(*tensors))):
        err = (result.double() - exact).abs()
        assert bool((err <= bound).all()), f"{name}: error {float((err - bound).max()):.3g} over the bound"


def test_sweep_totals(request, tmp_path_factory) -> None:
    """Last: print the totals this run measured and write them as JSON under pytest's basetemp;
    after a full sweep they must equal :func:`ledger_totals` (what the README quotes)."""
    measured = _totals(_RESULTS)
    path = tmp_path_factory.getbasetemp() / "opinfo-totals.json"
    path.write_text(json.dumps(asdict(measured), indent=1) + "\n")
    line = (f"OpInfo sweep: {measured.opinfos} OpInfos, {measured.pairs} (op, dtype) pairs, {measured.match} of "
            f"{measured.samples} samples match eager, {measured.raises} raise the ledger's error, "
            f"{measured.differs} differ as the ledger says (totals in {path})")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the summary is the point of the sweep: show it
        print(f"\n{line}")
    if len(_RESULTS) < len(swept_samples()):
        pytest.skip(f"not a full sweep: {len(_RESULTS)} of {len(swept_samples())} samples ran and ended as "
                    "the ledger says")
    assert measured == ledger_totals()
