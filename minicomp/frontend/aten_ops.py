"""How each ATen op becomes minicomp IR: one handler per op family, in one table.

A handler receives the :class:`~minicomp.frontend.importer.Importer` (``ctx``) and
the FX node's arguments with tensors already replaced by IR :class:`Value`s, and
returns a Value (or a tuple of Values, ``None`` for results minicomp does not
compute). Python scalars become 0-d constants whose dtype makes the IR op's
promoted dtype equal torch's; where torch's type promotion differs from tensor
promotion (0-d tensors, scalars of a lower category) a ``cast`` to torch's result
dtype follows. Ops without a handler raise ``UnsupportedOpError``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.graph import Value

aten = torch.ops.aten
Handler = Callable[..., Any]
_HANDLERS: dict[Any, Handler] = {}


def handles(*ops: Any) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of each ATen overload in ``ops``."""
    def deco(fn: Handler) -> Handler:
        for op in ops:
            _HANDLERS[op] = fn
        return fn
    return deco


def handler_for(target: Any) -> Handler | None:
    """The handler for an ATen overload, or None when minicomp does not support it."""
    return _HANDLERS.get(target)


def supported_ops() -> list[str]:
    """Names of every ATen overload the importer maps (for docs and tests)."""
    return sorted(str(op) for op in _HANDLERS)


# -- scalars and dtypes --------------------------------------------------------------------
def scalar_dtype(tensor: DType, s: Any) -> DType:
    """torch's result dtype for ``tensor <op> s`` with a Python scalar ``s``."""
    if isinstance(s, bool):
        return tensor
    if isinstance(s, int):
        return DType.i64 if tensor is DType.bool else tensor
    if isinstance(s, float):
        return tensor if tensor.is_float else DType.f32
    raise TypeError(f"unsupported scalar operand {s!r}")


def _exact(s: Any, dt: DType) -> bool:
    if dt is DType.bf16:
        return float(round_to_dtype(np.float32(s), dt)) == s
    return float(np.asarray(s).astype(dt.np)) == s if dt.is_float else True


def _operands(ctx, a: Any, b: Any, opmath: bool = False) -> tuple[Value, Value]:
    """Turn a scalar operand into a constant. ``opmath``: torch applies the scalar at f32
    precision to f16/bf16 tensors (mul, div, pow), so an inexact one stays f32."""
    if isinstance(a, Value) and isinstance(b, Value):
        return a, b
    if not isinstance(a, Value) and not isinstance(b, Value):
        dt = ctx.expected()[1]
        return ctx.const(a, dt), ctx.const(b, dt)
    t, s = (a, b) if isinstance(a, Value) else (b, a)
    dt = scalar_dtype(t.type.dtype, s)
    if opmath and dt in (DType.f16, DType.bf16) and not _exact(s, dt):
        dt = DType.f32
    c = ctx.const(s, dt)
    return (t, c) if t is a else (c, t)


def _finish(ctx, v: Value) -> Value:
    """Cast ``v`` to the dtype torch computed for the current node."""
    return ctx.cast(v, ctx.expected()[1])


def _dim(d: int, rank: int) -> int:
    r = max(rank, 1)
    if not -r <= d < r:
        raise IndexError(f"dim {d} out of range for rank {rank}")
    return d % r


def _dims(dims: Any, rank: int) -> tuple[int, ...]:
    if dims is None:
        return ()
    if isinstance(dims, int):
        dims = [dims]
    if rank == 0:
        return ()
    return tuple(sorted({_dim(d, rank) for d in dims}))


def _pair(v: Any) -> tuple[int, int]:
    v = [v] if isinstance(v, int) else list(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


# -- elementwise ---------------------------------------------------------------------------
_UNARY = {
    aten.neg.default: "neg", aten.abs.default: "abs", aten.exp.default: "exp", aten.log.default: "log",
    aten.sqrt.default: "sqrt", aten.rsqrt.default: "rsqrt", aten.sin.default: "sin", aten.cos.default: "cos",
    aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid", aten.relu.default: "relu",
    aten.silu.default: "silu", aten.erf.default: "erf", aten.reciprocal.default: "reciprocal",
    aten.floor.default: "floor", aten.isnan.default: "isnan", aten.logical_not.default: "logical_not",
}


def _unary(op: str) -> Handler:
    def handler(ctx, x: Value) -> Value:
        return _finish(ctx, ctx.emit(op, [x]))
    return handler


for _aten_op, _ir_op in _UNARY.items():
    handles(_aten_op)(_unary(_ir_op))


@handles(aten.expm1.default, aten.log1p.default)
def _expm1_log1p(ctx, x: Value) -> Value:
    x = _finish(ctx, x)  # both compute in floating point
    one = ctx.const(1, x.type.dtype)
    if ctx.node.target is aten.expm1.default:
        return ctx.emit("sub", [ctx.emit("exp", [x]), one])
    return ctx.emit("log", [ctx.emit("add", [x, one])])


@handles(aten.bitwise_not.default)
def _bitwise_not(ctx, x: Value) -> Value:
    if x.type.dtype is not DType.bool:
        raise ctx.unsupported("bitwise ops on integers")
    return ctx.emit("logical_not", [x])


@handles(aten.gelu.default)
def _gelu(ctx, x: Value, approximate: str = "none") -> Value:
    return ctx.emit("gelu", [x], approximate=approximate)


@handles(aten.leaky_relu.default)
def _leaky_relu(ctx, x: Value, negative_slope: float = 0.01) -> Value:
    return ctx.emit("leaky_relu", [x], negative_slope=float(negative_slope))


@handles(aten.hardtanh.default)
def _hardtanh(ctx, x: Value, min_val: float = -1.0, max_val: float = 1.0) -> Value:
    if (min_val, max_val) == (0, 6):
        return ctx.emit("relu6", [x])
    return ctx.emit("hardtanh", [x], min_val=float(min_val), max_val=float(max_val))


@handles(aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default)
def _clamp(ctx, x: Value, lo: Any = None, hi: Any = None) -> Value:
    if ctx.node.target is aten.clamp_max.default:
        lo, hi = None, lo
    x = _finish(ctx, x)  # int tensor with float bounds computes in f32, as torch does

    def bound(v: Any) -> Any:  # an int bound of an int tensor stays an int (i64 values above 2**24 exact)
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and not x.type.dtype.is_float):
            return v
        return float(v)
    return ctx.emit("clamp", [x], min=bound(lo), max=bound(hi))


@handles(aten.clamp.Tensor, aten.clamp_min.Tensor, aten.clamp_max.Tensor)
def _clamp_tensor(ctx, x: Value, lo: Any = None, hi: Any = None) -> Value:
    if ctx.node.target is aten.clamp_max.Tensor:
        lo, hi = None, lo
    if lo is not None:
        x = ctx.emit("maximum", list(_operands(ctx, x, lo)))
    if hi is not None:
        x = ctx.emit("minimum", list(_operands(ctx, x, hi)))
    return _finish(ctx, x)


def _binary(op: str, opmath: bool = False, reverse: bool = False) -> Handler:
    def handler(ctx, a: Any, b: Any, alpha: Any = 1, rounding_mode: Any = None) -> Value:
        if reverse:
            a, b = b, a
        if alpha != 1:  # a + alpha * b (rsub: other - alpha * self)
            b = ctx.emit("mul", list(_operands(ctx, b, alpha)))
        a, b = _operands(ctx, a, b, opmath)
        attrs = {"rounding_mode": rounding_mode} if op == "div" else {}
        return _finish(ctx, ctx.emit(op, [a, b], **attrs))
    return handler


for _ops, _ir_op, _opmath in [
    ((aten.add.Tensor, aten.add.Scalar), "add", False),
    ((aten.sub.Tensor, aten.sub.Scalar), "sub", False),
    ((aten.mul.Tensor, aten.mul.Scalar), "mul", True),
    ((aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, aten.div.Scalar_mode), "div", True),
    ((aten.remainder.Tensor, aten.remainder.Scalar), "remainder", False),
    ((aten.fmod.Tensor, aten.fmod.Scalar), "fmod", False),
    ((aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar), "pow", True),
    ((aten.maximum.default,), "maximum", False), ((aten.minimum.default,), "minimum", False),
    ((aten.eq.Tensor, aten.eq.Scalar), "eq", False), ((aten.ne.Tensor, aten.ne.Scalar), "ne", False),
    ((aten.lt.Tensor, aten.lt.Scalar), "lt", False), ((aten.le.Tensor, aten.le.Scalar), "le", False),
    ((aten.gt.Tensor, aten.gt.Scalar), "gt", False), ((aten.ge.Tensor, aten.ge.Scalar), "ge", False),
    ((aten.logical_and.default,), "logical_and", False), ((aten.logical_or.default,), "logical_or", False),
    ((aten.logical_xor.default,), "logical_xor", False),
]:
    handles(*_ops)(_binary(_ir_op, _opmath))
handles(aten.rsub.Tensor, aten.rsub.Scalar)(_binary("sub", reverse=True))
# ``a // b`` (floor_divide) is div with rounding_mode="floor" for every dtype
handles(aten.floor_divide.default, aten.floor_divide.Scalar)(
    lambda ctx, a, b: _binary("div", True)(ctx, a, b, rounding_mode="floor"))


@handles(aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.bitwise_xor.Tensor)
def _bitwise(ctx, a: Value, b: Value) -> Value:
    if a.type.dtype is not DType.bool or b.type.dtype is not DType.bool:
        raise ctx.unsupported("bitwise ops on integers")
    op = {"bitwise_and": "logical_and", "bitwise_or": "logical_or", "bitwise_xor": "logical_xor"}
    return ctx.emit(op[ctx.node.target.__name__.split(".")[0]], [a, b])


@handles(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(ctx, cond: Value, a: Any, b: Any) -> Value:
    dt = ctx.expected()[1]
    a = a if isinstance(a, Value) else ctx.const(a, dt)
    b = b if isinstance(b, Value) else ctx.const(b, dt)
    return _finish(ctx, ctx.emit("where", [cond, a, b]))


@handles(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(ctx, x: Value, mask: Value, value: Any) -> Value:
    fill = ctx.cast(value, x.type.dtype) if isinstance(value, Value) else ctx.const(value, x.type.dtype)
    return ctx.emit("where", [mask, fill, x])


@handles(aten._to_copy.default)
def _to_copy(ctx, x: Value, **_: Any) -> Value:
    return ctx.cast(x, ctx.expected()[1])


@handles(aten.clone.default, aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default)
def _identity(ctx, x: Value, *_: Any, **__: Any) -> Value:
    return x


@handles(aten.dropout.default, aten.native_dropout.default)
def _dropout(ctx, x: Value, p: float, train: Any) -> Any:
    if train and p != 0:
        raise ctx.unsupported("training-mode dropout; call model.eval() before tracing")
    return x if ctx.node.target is aten.dropout.default else (x, None)


@handles(aten.bernoulli.p, aten.bernoulli.default, aten.rand.default, aten.randn.default,
         aten.rand_like.default, aten.randn_like.default, aten.randint.default)
def _random(ctx, *_: Any, **__: Any) -> Any:
    raise ctx.unsupported("random numbers (training-mode dropout? call model.eval() before tracing)")


@handles(aten._local_scalar_dense.default)
def _item(ctx, x: Value) -> Value:
    """``tensor.item()`` (Dynamo turns float arguments into 0-d tensors): stays a 0-d value."""
    return x if x.type.rank == 0 else ctx.emit("reshape", [x], shape=())


@handles(aten.copy.default)
def _copy(ctx, dst: Value, src: Value, non_blocking: bool = False) -> Value:
    if src.type.shape != dst.type.shape:
        src = ctx.emit("expand", [src], shape=dst.type.shape)
    return ctx.cast(src, dst.type.dtype)


# The remaining families live in their own module to keep files short.
from minicomp.frontend import aten_structural  # noqa: E402,F401
from minicomp.frontend import aten_indexing  # noqa: E402,F401
from minicomp.frontend import aten_attention  # noqa: E402,F401
from minicomp.frontend import aten_conv  # noqa: E402,F401
