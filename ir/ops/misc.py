"""Misc ops: ``constant`` (weights and literals), the generators ``full`` and
``arange`` (category ELEMENTWISE, no operands), ``fused`` (a kernel node made
by fusion, holding its body graph) and ``external`` (an op minicomp cannot
compile, kept for the PyTorch fallback: it has no reference and no lowering, and
the driver runs it through ``torch.ops`` between natively compiled parts).

Generators give ``scalar(*, index: list[Expr], **attrs) -> Expr``: ``index`` is
the output multi-index (i64 Exprs) and the result has the dtype's compute type,
like every elementwise scalar rule (the lowering casts it to f16/bf16).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.kernel import E, Expr
from minicomp.ir.ops import Attr, Category, IRError, OpDef, Role, register
from minicomp.ir.types import TensorType


# -- constant ---------------------------------------------------------------------------------------
def _infer_constant(types, attrs):
    value, dtype = attrs["value"], attrs["dtype"]
    if not isinstance(value, np.ndarray) or not isinstance(dtype, DType):
        raise IRError(f"constant needs a numpy array value and a dtype, got {type(value).__name__} and {dtype!r}")
    if value.dtype != dtype.np:
        raise IRError(f"constant of dtype {dtype} must be stored as {dtype.np}, got {value.dtype}")
    return [TensorType(dtype, value.shape)]


register(OpDef("constant", Category.OPAQUE, 0, _infer_constant, lambda value, dtype: value,
               {"value": Attr("array"), "dtype": Attr("dtype")}, doc="a literal array (weights, scalars)",
               role=Role.CONSTANT))


# -- generators --------------------------------------------------------------------------------------
def _typed_value(value: float, dtype: DType) -> Any:
    """``value`` as a Python scalar of ``dtype``'s compute type (float -> f32 first, as torch does)."""
    if dtype is DType.bool:
        return bool(value)
    if dtype.is_int:
        return int(value)
    return float(value) if dtype is DType.f64 else float(np.float32(value))


def _gen_rule(in_dtypes, attrs):
    return [], attrs["dtype"]


def _check_representable(value: float, dtype: DType) -> None:
    """Raise IRError, as torch does, when a finite value overflows ``dtype`` (inf is fine for floats)."""
    if dtype.is_int:
        info = np.iinfo(dtype.np)
        ok = math.isfinite(value) and info.min <= int(value) <= info.max
    elif dtype.is_float and math.isfinite(value):
        ok = abs(value) <= (3.3895313892515355e38 if dtype is DType.bf16 else float(np.finfo(dtype.np).max))
    else:
        ok = True
    if not ok:
        raise IRError(f"value {value} cannot be converted to {dtype} without overflow")


def _infer_full(types, attrs):
    if not isinstance(attrs["dtype"], DType) or any(s < 0 for s in attrs["shape"]):
        raise IRError(f"full needs a dtype and a non-negative shape, got {attrs['dtype']!r}, {attrs['shape']}")
    _check_representable(attrs["value"], attrs["dtype"])
    return [TensorType(attrs["dtype"], tuple(attrs["shape"]))]


def _full_ref(shape, value, dtype):
    return round_to_dtype(np.full(tuple(shape), _typed_value(value, dtype), dtype.compute.np), dtype)


def _full_scalar(*, index: list[Expr], shape, value, dtype) -> Expr:
    return E.const(_typed_value(value, dtype), dtype.compute)


def arange_length(start: float, end: float, step: float, dtype: DType = DType.f64) -> int:
    """Number of elements of arange(start, end, step) of ``dtype``; raises IRError on a bad step.

    As in torch, i64 truncates start, end and step to ints before counting.
    """
    if dtype is DType.i64 and all(math.isfinite(v) for v in (start, end, step)):
        start, end, step = int(start), int(end), int(step)
    if step == 0 or (step > 0 and end < start) or (step < 0 and end > start) or not all(
            math.isfinite(v) for v in (start, end, step)):
        raise IRError(f"arange({start}, {end}, {step}): step must be nonzero with the sign of end - start")
    return max(0, math.ceil((end - start) / step))


def _infer_arange(types, attrs):
    if not isinstance(attrs["dtype"], DType) or attrs["dtype"] is DType.bool:
        raise IRError(f"arange needs a numeric dtype, got {attrs['dtype']!r}")
    return [TensorType(attrs["dtype"], (arange_length(attrs["start"], attrs["end"], attrs["step"], attrs["dtype"]),))]


def _arange_ref(start, end, step, dtype):
    i = np.arange(arange_length(start, end, step, dtype), dtype=np.int64)
    if dtype.is_int:
        return (int(start) + i * int(step)).astype(dtype.np)
    values = float(start) + i.astype(np.float64) * float(step)  # in double, as torch
    return round_to_dtype(values if dtype is DType.f64 else values.astype(np.float32), dtype)


def _arange_scalar(*, index: list[Expr], start, end, step, dtype) -> Expr:
    if dtype.is_int:
        return E.cast(E.add(E.mul(index[0], int(step)), int(start)), dtype)
    value = E.add(E.mul(E.cast(index[0], DType.f64), float(step)), float(start))
    return E.cast(value, dtype.compute)


register(OpDef("full", Category.ELEMENTWISE, 0, _infer_full, _full_ref,
               {"shape": Attr("ints"), "value": Attr("float"), "dtype": Attr("dtype")},
               scalar=_full_scalar, dtype_rule=_gen_rule, doc="a tensor filled with value"))
register(OpDef("arange", Category.ELEMENTWISE, 0, _infer_arange, _arange_ref,
               {"start": Attr("float"), "end": Attr("float"), "step": Attr("float"), "dtype": Attr("dtype")},
               scalar=_arange_scalar, dtype_rule=_gen_rule,
               doc="start + i * step (computed in f64 for floats, i64 for ints) for i < ceil((end - start) / step)"))


# -- fused ------------------------------------------------------------------------------------------
def _infer_fused(types, attrs):
    body = attrs["body"]
    ins = getattr(body, "inputs", None)
    if ins is None or not hasattr(body, "outputs"):
        raise IRError(f"fused needs a Graph body, got {type(body).__name__}")
    if len(ins) != len(types) or any((v.type.dtype, v.type.shape) != (t.dtype, t.shape) for v, t in zip(ins, types)):
        raise IRError(f"fused ({attrs['kind']}) operands {[str(t) for t in types]} do not match its body inputs "
                      f"{[str(v.type) for v in ins]}")
    return [v.type for v in body.outputs]


def _fused_ref(*arrays, kind, body):
    from minicomp.ir.interpreter import interpret
    return interpret(body, *arrays)


register(OpDef("fused", Category.OPAQUE, None, _infer_fused, _fused_ref, {"kind": Attr("str"), "body": Attr("graph")},
               doc="a kernel node made by fusion: its body graph's inputs are the operands", num_results=None))


# -- external ---------------------------------------------------------------------------------------
def mutating_target(target: str) -> str | None:
    """Why ``target`` ("namespace.op.overload") names an op that writes into its arguments, by name
    alone (in-place ``add_``/``__iadd__``, ``out=`` overloads), or None.

    The fallback replays an external with the caller's tensors as operands, so a mutating target
    would write into them. This cheap check needs no PyTorch; :mod:`minicomp.frontend.external`
    also checks the resolved op's schema (``is_mutable``), which this name test can miss
    (``aten.max.dim_max``) but never contradicts: over all ATen overloads of torch 2.13 it flags
    no op whose schema is functional.
    """
    parts = target.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    op, overload = parts[1], parts[2]
    if (op.endswith("_") and not op.endswith("__")) or (op.startswith("__i") and op.endswith("__")):
        return "an in-place op (it writes into its first operand)"
    if overload == "out" or overload.endswith("_out") or overload.startswith("out_"):
        return "an out= variant (it writes into its out argument)"
    return None


def _infer_external(types, attrs):
    results = attrs["result_types"]
    if not isinstance(attrs["target"], str) or not attrs["target"]:
        raise IRError(f"external needs a non-empty target name, got {attrs['target']!r}")
    target = attrs["target"]
    if len(target.split(".")) != 3 or not all(target.split(".")):
        raise IRError(f"external target {target!r} is not 'namespace.op.overload' (e.g. 'aten.sort.default')")
    why = mutating_target(target)
    if why is not None:
        raise IRError(f"external target {target!r} is {why}; only functional ops can be externals")
    if not isinstance(results, (tuple, list)) or not results or not all(isinstance(t, TensorType) for t in results):
        raise IRError(f"external ({attrs['target']}) needs result_types: a non-empty list of tensor types, "
                      f"got {results!r}")
    return list(results)


def _external_ref(*arrays, target, args, result_types):
    raise IRError(f"external op {target} runs only through a PyTorch fallback "
                  f"(minicomp.compile(..., fallback=True)); it has no numpy reference")


register(OpDef("external", Category.OPAQUE, None, _infer_external, _external_ref,
               {"target": Attr("str"), "args": Attr("str"), "result_types": Attr("any")},
               doc="a functional op minicomp cannot compile, run by the PyTorch fallback (in-place and "
                   "out= targets are refused): target is the ATen op's "
                   "qualified name, args a JSON text of its arguments (tensor operands by position), "
                   "result_types the result types", num_results=None))
