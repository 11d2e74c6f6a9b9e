"""The float64 oracle: when PyTorch eager itself is inaccurate in float32, float16 or bfloat16.

PyTorch eager is minicomp's oracle, but eager is not always correctly rounded,
and its error can depend on the tensor's size. Example 1 (found
by a deep run): bf16 ``x = 1.0703125 -> abs -> rsqrt -> log``. The true rsqrt is
0.96660; correctly rounded to bf16 it is 0.96484375, which minicomp and eager's
vectorized loop (tensors of 32+ elements) give, but eager's scalar tail loop
(small tensors) rounds ``sqrt`` to bf16 first and gives 0.96875. ``log`` near 1
amplifies that one-ulp difference to a 13% relative difference, far beyond
``assert_close``'s bf16 tolerance, although minicomp is the more accurate one.

Example 2 (found by CI, float32): ``addmm(c, a, b, alpha=2)`` with ``a = 3.25``,
``b = c = 2.925`` is 21.9374996 exactly. minicomp's interpreter accumulates in
float64 and rounds once, to the correctly rounded 21.9375; eager accumulates in
float32 and gives 21.937498, one ulp below. ``pow(2, .)`` multiplies the relative
difference by ``ln 2 * 21.9`` = 15, to 1.307e-6, just over float32's rtol of
1.3e-6, although minicomp's result is four times closer to the true value.

The rule (the idea of Inductor's accuracy check against an fp64 reference, made
element-wise): a float32/float16/bfloat16 output that fails the strict check is accepted
when the same PyTorch function, run with its floating inputs upcast to float64,
shows that, element by element, minicomp's result is at least as close to the
float64 result as eager's is, give or take one unit in the last place (ulp) of the
output dtype at the float64 value. The ulp allows for the final rounding of our
own result (eager may round luckily at a single element). NaN and infinity
positions must still agree with eager, and an element where the float64 result
is not finite must pass the strict check. float64 outputs (there is no more
precise reference), integer and bool outputs, and every other case keep the strict
``assert_close`` at default tolerances.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

STRICT = "strict assert_close at default tolerances"
FP64 = ("float64 oracle: eager is beyond default tolerance, so each element of ours must be within default "
        "tolerance of eager, or at least as close to the float64 result as eager's (+ 1 ulp)")

# torch.testing.assert_close's default (rtol, atol) for the dtypes the float64 oracle covers.
_TOLERANCES = {"torch.float32": (1.3e-6, 1e-5), "torch.float16": (1e-3, 1e-5), "torch.bfloat16": (1.6e-2, 1e-5)}

Fp64Reference = Callable[[], "list | str"]


def fp64_covers(dtype: Any) -> bool:
    """True for ``torch.float32``, ``torch.float16`` and ``torch.bfloat16``: the dtypes the float64 oracle covers."""
    return str(dtype) in _TOLERANCES


def fp64_reference(torch_fn: Callable[..., Sequence], torch_inputs: Sequence[Any]) -> Fp64Reference:
    """A cached zero-argument callable: ``torch_fn`` on ``torch_inputs`` with floating inputs as float64.

    It returns the list of output tensors, or a string saying why there is none
    (PyTorch raised). The run happens at most once, on the first call, so callers
    pay for it only when a covered output fails the strict check. Explicit
    casts inside ``torch_fn`` keep their dtypes; its floating constants must be float64
    already (``torch_ref.torch_fn(graph, upcast_constants=True)``), or mixing them with
    the upcast inputs raises and the strict rule stands.
    """
    @functools.cache
    def run() -> list | str:
        import torch
        args = [t.to(torch.float64) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                for t in torch_inputs]
        try:
            return list(torch_fn(*args))
        except Exception as e:  # noqa: BLE001 - no reference just means the strict rule stands
            return f"the float64 run raised {type(e).__name__}: {e}"
    return run


def ulp(ref: Any, dtype: Any):
    """The spacing of ``dtype``'s values at ``|ref|`` (float64 tensor); subnormal spacing below the normals."""
    import torch
    info = torch.finfo(dtype)
    _, exp = torch.frexp(ref.abs().clamp(min=info.tiny))
    return info.eps * torch.pow(2.0, (exp - 1).to(torch.float64))


def check_against_fp64(got: Any, eager: Any, ref: Any) -> str | None:
    """None when ``got`` passes the float64 oracle rule (see the module docstring), else why not.

    ``got`` and ``eager`` are float32/float16/bfloat16 tensors of one shape, ``ref`` is the
    float64 run's output of the same shape.
    """
    import torch
    if not isinstance(ref, torch.Tensor) or not ref.is_floating_point() or tuple(ref.shape) != tuple(eager.shape):
        return f"the float64 run gave no comparable output ({getattr(ref, 'dtype', type(ref).__name__)}" \
               f"{list(getattr(ref, 'shape', []))})"
    rtol, atol = _TOLERANCES[str(eager.dtype)]
    g, e, r = (t.detach().cpu().to(torch.float64) for t in (got, eager, ref))
    close = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    finite = torch.isfinite(g) & torch.isfinite(e) & torch.isfinite(r)
    err_ours, err_eager = (g - r).abs(), (e - r).abs()
    no_worse = finite & (err_ours <= err_eager + ulp(r, eager.dtype))
    bad = ~(close | no_worse)
    if not bool(bad.any()):
        return None
    excess = torch.where(finite, err_ours - err_eager, torch.full_like(g, float("inf")))
    excess = torch.where(bad, excess, torch.full_like(g, -float("inf")))
    flat = int(torch.argmax(excess.reshape(-1)))
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(g.shape))) if g.dim() else ()
    return (f"{int(bad.sum())} / {bad.numel()} elements are neither within default tolerance of eager "
            f"(rtol={rtol}, atol={atol}) nor at least as close to the float64 result as eager (+ 1 ulp); "
            f"worst at index {idx}: ours={g[idx].item()!r}, eager={e[idx].item()!r}, "
            f"float64={r[idx].item()!r}")
