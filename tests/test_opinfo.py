"""Sweep PyTorch's OpInfo database through minicomp's CPU compiler.

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
Runtime is bounded by taking at most ``CAP[dtype]`` samples per (op, dtype), spread
evenly over the OpInfo's sample list. Expected failures live in ``opinfo_xfails.py``;
an xfailed (op, dtype) whose samples all pass fails the test (unexpected pass).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("expecttest", reason="OpInfo's module imports expecttest (pip install expecttest)")

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

import minicomp  # noqa: E402
from opinfo_xfails import XFAILS  # noqa: E402

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
_RESULTS: dict[str, list[int]] = {}  # "op/dtype" -> [samples run, samples passed]


def _key(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


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


def run_sample(op, sample) -> str | None:
    """None when minicomp matches eager on this sample, else a one-line reason."""
    fn, tensors = as_function(op, sample)
    expected = _flat(fn(*tensors))
    try:
        got = _flat(minicomp.compile(fn, tensors, target="cpu")(*tensors))
        assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, equal_nan=True)
    except Exception as e:  # noqa: BLE001 - every failure kind is a mismatch to report
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    return None


def _spread(items: list, cap: int) -> list:
    if len(items) <= cap:
        return items
    step = len(items) / cap
    return [items[int(i * step)] for i in range(cap)]


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    ops = {k.split("/")[0] for k in _RESULTS}
    ran = sum(r[0] for r in _RESULTS.values())
    passed = sum(r[1] for r in _RESULTS.values())
    line = (f"OpInfo sweep: {len(ops)} OpInfos, {len(_RESULTS)} (op, dtype) pairs, "
            f"{passed}/{ran} samples match eager, {len(XFAILS)} expected-failure entries")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the summary is the point of the sweep: show it
        print(f"\n{line}")


@pytest.mark.parametrize("key,dtype", CASES, ids=[f"{k}-{str(d).split('.')[1]}" for k, d in CASES])
def test_opinfo(key: str, dtype: torch.dtype) -> None:
    op = OPINFOS[key]
    samples = [s for s in op.sample_inputs("cpu", dtype, requires_grad=False) if usable(s) is None]
    samples = _spread(samples, CAP[dtype])
    if not samples:
        pytest.skip(f"no sample of {key} for {dtype} passes the filter rules R1-R4")
    failures = []
    for i, s in enumerate(samples):
        why = run_sample(op, s)
        if why is not None:
            failures.append(f"sample {i} (input {tuple(getattr(s.input, 'shape', ()))}): {why}")
    dt = str(dtype).split(".")[1]
    _RESULTS[f"{key}/{dt}"] = [len(samples), len(samples) - len(failures)]
    reason = XFAILS.get((key, dt))
    if reason is not None:
        if not failures:
            pytest.fail(f"unexpected pass: ({key!r}, {dt!r}) is listed in opinfo_xfails.py ({reason}) "
                        f"but all {len(samples)} samples match eager; remove the entry")
        pytest.xfail(reason)
    assert not failures, f"{key} {dt}: {len(failures)}/{len(samples)} samples differ from eager:\n" + \
        "\n".join(failures)
