"""Scalar expressions (:mod:`minicomp.ir.kernel` Expr trees) -> IRBuilder code.

:data:`PRIMITIVE_RULES` is the one dispatch table: each primitive name maps to a
function ``(builder, result_dtype, operand_values, operand_dtype) -> value``.
Operands arrive already converted to the dtype the rule computes in.

Documented choices: integer ``div``/``floordiv``/``mod`` by zero give 0 (never
SIGFPE; ``INT_MIN / -1`` wraps); ``max``/``min`` on floats use
``llvm.maximum``/``llvm.minimum`` (NaN-propagating, -0.0 < +0.0); float ``mod``
is C ``fmod``; integer ``pow`` with a negative exponent gives ``1/a`` truncated
(1, -1 or 0); data-dependent load indices are clamped into the buffer.

Run-time checks (the ``check`` primitive: integer divisors, embedding ids) are not a
table rule: the emitter ORs the failing check's code into the function's *check flag*,
an i32 local that :func:`open_checks` creates and :func:`close_checks` publishes to the
program's error word (one atomic OR, only when something failed). The flag lives in a
register (SROA promotes it), so a loop's checks are an OR reduction that vectorizes:
the cost is a compare and a select per checked value, no branch in the loop.
"""
from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.mathlib import math_call
from minicomp.codegen.llvm.control import entry_alloca
from minicomp.codegen.llvm.types import I1, I32, I64, PTR, register_type, storage_type
from minicomp.ir.dtypes import DType, promote
from minicomp.ir.expr_walk import post_order
from minicomp.ir.kernel import PRIMITIVES, Cast, Const, Expr, Load, Op, Ref, Var

Rule = Callable[[ir.IRBuilder, DType, list[ir.Value], DType], ir.Value]


def _zero(v: ir.Value) -> ir.Constant:
    return ir.Constant(v.type, 0)


def _arith(fop: str, iop: str, bop: str) -> Rule:
    def rule(b, dt, a, odt):
        if odt.is_float:
            return getattr(b, fop)(a[0], a[1])
        return getattr(b, bop if odt is DType.bool else iop)(a[0], a[1])
    return rule


def _safe_divisor(b, x, y):
    """(divisor safe for sdiv/srem, is_zero, is_minus_one)."""
    zero = b.icmp_signed("==", y, _zero(y))
    m1 = b.icmp_signed("==", y, ir.Constant(y.type, -1))
    return b.select(b.or_(zero, m1), ir.Constant(y.type, 1), y), zero, m1


def _div(b, dt, a, odt):
    x, y = a
    if odt.is_float:
        return b.fdiv(x, y)
    if odt is DType.bool:
        return x
    safe, zero, m1 = _safe_divisor(b, x, y)
    q = b.select(m1, b.sub(_zero(x), x), b.sdiv(x, safe))
    return b.select(zero, _zero(x), q)


def _floordiv(b, dt, a, odt):
    x, y = a
    if odt.is_float:  # torch's div_floor: floor((x - fmod(x, y)) / y) with corrections
        mod = b.frem(x, y)
        div = b.fdiv(b.fsub(x, mod), y)
        fix = b.and_(b.fcmp_ordered("!=", mod, _zero_f(mod)),
                     b.xor(b.fcmp_ordered("<", y, _zero_f(y)), b.fcmp_ordered("<", mod, _zero_f(mod))))
        div = b.select(fix, b.fsub(div, ir.Constant(x.type, 1.0)), div)
        fl = call(b, "llvm.floor", div)
        fl = b.select(b.fcmp_ordered(">", b.fsub(div, fl), ir.Constant(x.type, 0.5)),
                      b.fadd(fl, ir.Constant(x.type, 1.0)), fl)
        nonzero = b.select(b.fcmp_ordered("==", div, _zero_f(div)),
                           call(b, "llvm.copysign", _zero_f(div), b.fdiv(x, y)), fl)
        return b.select(b.fcmp_ordered("==", y, _zero_f(y)), b.fdiv(x, y), nonzero)
    if odt is DType.bool:
        return x
    safe, zero, m1 = _safe_divisor(b, x, y)
    q = b.sdiv(x, safe)
    r = b.srem(x, safe)
    adjust = b.and_(b.icmp_signed("!=", r, _zero(r)),
                    b.icmp_signed("!=", b.icmp_signed("<", r, _zero(r)), b.icmp_signed("<", y, _zero(y))))
    q = b.select(adjust, b.sub(q, ir.Constant(q.type, 1)), q)
    q = b.select(m1, b.sub(_zero(x), x), q)
    return b.select(zero, _zero(x), q)


def _zero_f(v):
    return ir.Constant(v.type, 0.0)


def _mod(b, dt, a, odt):
    x, y = a
    if odt.is_float:
        return b.frem(x, y)
    if odt is DType.bool:
        return _zero(x)
    safe, zero, m1 = _safe_divisor(b, x, y)
    r = b.srem(x, safe)
    adjust = b.and_(b.icmp_signed("!=", r, _zero(r)),
                    b.icmp_signed("!=", b.icmp_signed("<", r, _zero(r)), b.icmp_signed("<", y, _zero(y))))
    r = b.select(adjust, b.add(r, y), r)
    return b.select(b.or_(zero, m1), _zero(x), r)


def _minmax(fname: str, pred: str, bop: str) -> Rule:
    def rule(b, dt, a, odt):
        if odt.is_float:
            return call(b, fname, a[0], a[1])
        if odt is DType.bool:
            return getattr(b, bop)(a[0], a[1])
        return b.select(b.icmp_signed(pred, a[0], a[1]), a[0], a[1])
    return rule


def _ipow_fn(module: ir.Module, ty: ir.IntType) -> ir.Function:
    """``mc_ipow_iN(a, e)``: integer power by squaring; e < 0 gives 1/a truncated."""
    name = f"mc_ipow_i{ty.width}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(ty, [ty, ty]), name=name)
    fn.linkage = "internal"
    base, exp = fn.args
    entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    one, zero = ir.Constant(ty, 1), ir.Constant(ty, 0)
    neg = b.icmp_signed("<", exp, zero)
    b.cbranch(b.icmp_signed(">", exp, zero), loop, done)
    b.position_at_end(loop)
    r, x, e = b.phi(ty), b.phi(ty), b.phi(ty)
    r2 = b.select(b.icmp_signed("!=", b.and_(e, one), zero), b.mul(r, x), r)
    x2, e2 = b.mul(x, x), b.lshr(e, one)
    r.add_incoming(one, entry), r.add_incoming(r2, loop)
    x.add_incoming(base, entry), x.add_incoming(x2, loop)
    e.add_incoming(exp, entry), e.add_incoming(e2, loop)
    b.cbranch(b.icmp_signed(">", e2, zero), loop, done)
    b.position_at_end(done)
    res = b.phi(ty)
    res.add_incoming(one, entry), res.add_incoming(r2, loop)
    odd = b.icmp_signed("!=", b.and_(exp, one), zero)
    negval = b.select(b.icmp_signed("==", base, one), one,
                      b.select(b.icmp_signed("==", base, ir.Constant(ty, -1)),
                               b.select(odd, ir.Constant(ty, -1), one), zero))
    b.ret(b.select(neg, negval, res))
    return fn


def _pow(b, dt, a, odt):
    if odt.is_float:
        return call(b, "llvm.pow", a[0], a[1])
    if odt is DType.bool:
        return b.or_(a[0], b.not_(a[1]))
    return b.call(_ipow_fn(b.module, a[0].type), a)


def _abs(b, dt, a, odt):
    if odt.is_float:
        return call(b, "llvm.fabs", a[0])
    if odt is DType.bool:
        return a[0]
    return b.select(b.icmp_signed("<", a[0], _zero(a[0])), b.sub(_zero(a[0]), a[0]), a[0])


def _neg(b, dt, a, odt):
    if odt.is_float:
        return b.fneg(a[0])
    return a[0] if odt is DType.bool else b.sub(_zero(a[0]), a[0])


def _transcendental(name: str) -> Rule:
    def rule(b, dt, a, odt):
        if not odt.is_float:
            raise TypeError(f"primitive {name} needs a float operand, got {odt}")
        if name == "sqrt":
            return call(b, "llvm.sqrt", a[0])
        return math_call(b, name, a[0])
    return rule


def _rounding(name: str) -> Rule:
    def rule(b, dt, a, odt):
        return call(b, f"llvm.{name}", a[0]) if odt.is_float else a[0]
    return rule


def _compare(pred: str) -> Rule:
    def rule(b, dt, a, odt):
        if odt.is_float:
            return b.fcmp_unordered(pred, a[0], a[1]) if pred == "!=" else b.fcmp_ordered(pred, a[0], a[1])
        if odt is DType.bool:
            return b.icmp_unsigned(pred, a[0], a[1])
        return b.icmp_signed(pred, a[0], a[1])
    return rule


def _isnan(b, dt, a, odt):
    return b.fcmp_unordered("uno", a[0], a[0]) if odt.is_float else ir.Constant(I1, 0)


PRIMITIVE_RULES: dict[str, Rule] = {
    "add": _arith("fadd", "add", "or_"), "sub": _arith("fsub", "sub", "xor"),
    "mul": _arith("fmul", "mul", "and_"), "div": _div, "neg": _neg, "abs": _abs,
    "max": _minmax("llvm.maximum", ">", "or_"), "min": _minmax("llvm.minimum", "<", "and_"),
    "pow": _pow, "mod": _mod, "floordiv": _floordiv,
    **{n: _transcendental(n) for n in ("exp", "log", "sqrt", "sin", "cos", "tanh", "erf")},
    "floor": _rounding("floor"), "ceil": _rounding("ceil"),
    "lt": _compare("<"), "le": _compare("<="), "gt": _compare(">"), "ge": _compare(">="),
    "eq": _compare("=="), "ne": _compare("!="), "isnan": _isnan,
    "and": lambda b, dt, a, odt: b.and_(a[0], a[1]), "or": lambda b, dt, a, odt: b.or_(a[0], a[1]),
    "xor": lambda b, dt, a, odt: b.xor(a[0], a[1]), "not": lambda b, dt, a, odt: b.not_(a[0]),
    "where": lambda b, dt, a, odt: b.select(a[0], a[1], a[2]),
}
# ``check`` needs the function's check flag, so ExprEmitter emits it (see open_checks)
assert set(PRIMITIVE_RULES) | {"check"} == set(PRIMITIVES), "every primitive needs exactly one LLVM rule"

_FLAG_ATTR = "minicomp_check_flag"


def open_checks(b: ir.IRBuilder) -> None:
    """Start collecting failed checks in the function being built: its check flag (an i32 entry
    alloca, recorded on the ``ir.Function``) is set to 0 at the builder's position."""
    flag = getattr(b.function, _FLAG_ATTR, None)
    if flag is None:
        flag = entry_alloca(b, I32, name="checks")
        setattr(b.function, _FLAG_ATTR, flag)
    b.store(ir.Constant(I32, 0), flag)


def close_checks(b: ir.IRBuilder, error_word: ir.Value) -> None:
    """OR the check flag into ``error_word`` (an i32 that all threads of the call share) when
    a check failed since :func:`open_checks`: atomically, and off the common path."""
    flag = getattr(b.function, _FLAG_ATTR)
    bits = b.load(flag, typ=I32)
    with b.if_then(b.icmp_unsigned("!=", bits, ir.Constant(I32, 0)), likely=False):
        b.atomic_rmw("or", error_word, bits, "monotonic")

_COMPARE = {"lt", "le", "gt", "ge", "eq", "ne", "isnan"}
_LOGIC = {"and", "or", "xor", "not"}


def _has_data_dependence(e: Expr) -> bool:
    return any(isinstance(n, (Load, Ref)) for n in post_order(e))


class ExprEmitter:
    """Emits Expr trees at the builder's position.

    ``buffers`` are (pointer, numel, dtype) for the kernel's inputs (Load ``buf``
    indexes it), ``loop_vars`` the i64 loop values by dim, ``refs`` reduction
    results by stage (register values). Shared subtrees are emitted once.
    """

    def __init__(self, builder: ir.IRBuilder, buffers: list[tuple[ir.Value, int, DType]],
                 loop_vars: list[ir.Value], refs: dict[int, ir.Value] | None = None) -> None:
        self.b = builder
        self.buffers = buffers
        self.loop_vars = loop_vars
        self.refs = refs if refs is not None else {}
        self._memo: dict[int, tuple[Expr, ir.Value]] = {}

    def emit(self, e: Expr) -> ir.Value:
        """The register value of ``e`` (register type of ``e.dtype``)."""
        hit = self._memo.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        # Operands first, each once, children before parents (no recursion: expressions can be
        # thousands of nodes deep); each node's own rule then finds its operands emitted.
        for n in post_order(e, self._emitted):
            self._memo[id(n)] = (n, self._emit(n))
        return self._memo[id(e)][1]

    def _emitted(self, e: Expr) -> bool:
        hit = self._memo.get(id(e))
        return hit is not None and hit[0] is e

    def bind(self, e: Expr, value: ir.Value) -> None:
        """Use ``value`` (register type of ``e.dtype``) wherever the node ``e`` is emitted."""
        self._memo[id(e)] = (e, value)

    def emit_as(self, e: Expr, dtype: DType) -> ir.Value:
        """``e`` converted to ``dtype`` (torch cast semantics)."""
        return convert.cast(self.b, self.emit(e), e.dtype, dtype)

    def index(self, e: Expr, numel: int) -> ir.Value:
        """An i64 element offset; clamped into [0, numel) when it depends on loaded data."""
        v = self.emit_as(e, DType.i64)
        if _has_data_dependence(e):
            b = self.b
            v = b.select(b.icmp_signed("<", v, ir.Constant(I64, 0)), ir.Constant(I64, 0), v)
            hi = ir.Constant(I64, max(numel - 1, 0))
            v = b.select(b.icmp_signed(">", v, hi), hi, v)
        return v

    def _emit(self, e: Expr) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            return convert.constant(e.value, e.dtype)
        if isinstance(e, Var):
            return convert.cast(b, self.loop_vars[e.dim], DType.i64, e.dtype)
        if isinstance(e, Ref):
            return self.refs[e.stage]
        if isinstance(e, Cast):
            return self.emit_as(e.arg, e.dtype)
        if isinstance(e, Load):
            ptr, numel, dtype = self.buffers[e.buf]
            if numel == 0:
                return convert.cast(b, convert.constant(0, dtype), dtype, e.dtype)
            idx = self.index(e.index, numel)
            raw = b.load(b.gep(ptr, [idx], inbounds=True, source_etype=storage_type(dtype)),
                         typ=storage_type(dtype))
            return convert.cast(b, convert.from_storage(b, raw, dtype), dtype, e.dtype)
        if isinstance(e, Op):
            return self._op(e)
        raise TypeError(f"not an expression: {e!r}")

    def _check(self, e: Op) -> ir.Value:
        """``check(ok, value, code)``: the flag |= (ok ? 0 : code); the value passes through."""
        flag = getattr(self.b.function, _FLAG_ATTR, None)
        if flag is None:
            raise ValueError("a check primitive in a kernel without a check flag (call open_checks first)")
        b = self.b
        ok = self.emit_as(e.args[0], DType.bool)
        value = self.emit(e.args[1])
        bits = b.select(ok, ir.Constant(I32, 0), ir.Constant(I32, int(e.args[2].value)))
        b.store(b.or_(b.load(flag, typ=I32), bits), flag)
        return value

    def _op(self, e: Op) -> ir.Value:
        if e.op == "check":
            return self._check(e)
        if e.op not in PRIMITIVE_RULES:
            raise ValueError(f"unknown primitive {e.op!r}")
        if e.op in _LOGIC:
            odt = DType.bool
            args = [self.emit_as(a, DType.bool) for a in e.args]
        elif e.op == "where":
            odt = e.dtype
            args = [self.emit_as(e.args[0], DType.bool)] + [self.emit_as(a, odt) for a in e.args[1:]]
        elif e.op in _COMPARE:
            odt = e.args[0].dtype
            for a in e.args[1:]:
                odt = promote(odt, a.dtype)
            args = [self.emit_as(a, odt) for a in e.args]
        else:
            odt = e.dtype
            args = [self.emit_as(a, odt) for a in e.args]
        v = PRIMITIVE_RULES[e.op](self.b, e.dtype, args, odt)
        if v.type != register_type(e.dtype):
            raise TypeError(f"primitive {e.op} produced {v.type} for {e.dtype}")
        return v


__all__ = ["PRIMITIVE_RULES", "ExprEmitter", "PTR"]
