"""A catalogue of realistic compiler bugs to inject, for measuring the toolkit (mutation testing).

Each :class:`Mutant` breaks minicomp the way real compilers have shipped broken:
wrong algebraic identities in the canonicalizer (added as rewrite patterns, first in
the list), and wrong scalar formulas, views and broadcasting in the backends'
shared lowering (the ``scalar``/``view`` of an op's :class:`~minicomp.ir.ops.OpDef`,
or the lowering's operand indexing). :func:`activate` applies one for the rest of
the process; it is meant for a fresh process per mutant (``scripts/mutation_score.py``).

Activation is a plugin: ``load_plugin("minicomp.testing.mutants:enable_mul_by_zero")``,
so a repro script written while a mutant is active activates it again and reproduces.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from minicomp.ir.kernel import E
from minicomp.passes.rewrite import RewritePattern


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One injected bug: ``name``, where it lives (``layer``: ``"pass"`` or ``"backend"``), the bug class and how."""

    name: str
    layer: str
    kind: str
    description: str
    apply: Callable[[], None]


# -- pass mutants: wrong rewrite patterns in canonicalize --------------------------------------
class _Pattern(RewritePattern):
    """A rewrite from a function ``fn(node, rw) -> list of values | None``."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn

    def match_and_rewrite(self, node, rw) -> bool:
        values = self.fn(node, rw)
        if values is None:
            return False
        rw.replace(node, values)
        return True


def _float_same(node, x) -> bool:
    return node.result.type.dtype.is_float and x.type == node.result.type


def _full(rw, t, value):
    return rw.add("full", [], {"shape": t.shape, "value": value, "dtype": t.dtype}).result


def _mul_by_zero(node, rw):
    if node.op == "mul":
        for x, c in ((node.operands[0], node.operands[1]), (node.operands[1], node.operands[0])):
            if _float_same(node, x) and rw.splat(c) == 0:
                return [_full(rw, node.result.type, 0.0)]
    return None


def _self_sub(node, rw):
    if node.op == "sub" and node.operands[0] is node.operands[1] and node.result.type.dtype.is_float:
        return [_full(rw, node.result.type, 0.0)]
    return None


def _add_pos_zero(node, rw):
    if node.op == "add":
        for x, c in ((node.operands[0], node.operands[1]), (node.operands[1], node.operands[0])):
            if _float_same(node, x) and rw.is_scalar_const(c, 0.0):
                return [x]
    return None


def _zero_minus(node, rw):
    x = node.operands[1] if node.op == "sub" else None
    if x is not None and _float_same(node, x) and rw.is_scalar_const(node.operands[0], 0.0):
        return [rw.add("neg", [x]).result]
    return None


def _div_to_mul(node, rw):
    if node.op != "div" or node.attrs.get("rounding_mode") is not None:
        return None
    x, c = node.operands
    s = rw.splat(c)
    if _float_same(node, x) and isinstance(s, float) and s not in (0.0, 1.0) and c.type.rank == 0:
        return [rw.add("mul", [x, rw.constant(1.0 / s, c.type.dtype)]).result]
    return None


def _reassociate(node, rw):
    if node.op != "add" or not node.result.type.dtype.is_float:
        return None
    inner = node.operands[0].producer
    if inner is None or inner.op != "add" or len(rw.graph.uses(inner.result)) != 1:
        return None
    a, b = inner.operands
    c = node.operands[1]
    if not (a.type == b.type == c.type == node.result.type):
        return None
    return [rw.add("add", [a, rw.add("add", [b, c]).result]).result]


def _split_sum(node, rw):
    dims = tuple(node.attrs.get("dims") or ()) if node.op == "sum" else ()
    if len(dims) < 2 or not node.result.type.dtype.is_float or node.attrs.get("dtype") not in (None, "none"):
        return None
    keep = bool(node.attrs.get("keepdim"))
    x = node.operands[0]
    first = rw.add("sum", [x], {"dims": (dims[-1],), "keepdim": True}).result
    return [rw.add("sum", [first], {"dims": dims[:-1] + (dims[-1],), "keepdim": keep}).result]


def _drop_cast_roundtrip(node, rw):
    inner = node.operands[0].producer if node.op == "cast" else None
    if inner is not None and inner.op == "cast" and inner.operands[0].type == node.result.type:
        return [inner.operands[0]]
    return None


def _const_to_rhs(node, rw):
    if node.op in ("sub", "div") and node.attrs.get("rounding_mode") is None:
        c, x = node.operands
        if rw.splat(c) is not None and rw.splat(x) is None and x.type == node.result.type:
            return [rw.add(node.op, [x, c], dict(node.attrs)).result]
    return None


def _max_to_select(node, rw):
    if node.op == "maximum" and node.result.type.dtype.is_float:
        a, b = node.operands
        if a.type == b.type == node.result.type:
            return [rw.add("where", [rw.add("gt", [a, b]).result, a, b]).result]
    return None


def _abs_to_select(node, rw):
    if node.op == "abs" and node.result.type.dtype.is_float:
        x = node.operands[0]
        zero = rw.constant(0.0, x.type.dtype)
        return [rw.add("where", [rw.add("lt", [x, zero]).result, rw.add("neg", [x]).result, x]).result]
    return None


def _compose_slices(node, rw):
    inner = node.operands[0].producer if node.op == "slice" else None
    if inner is None or inner.op != "slice" or inner.attrs["dim"] != node.attrs["dim"]:
        return None
    a, b = inner.attrs, node.attrs
    if b["step"] != 1:
        return None
    start = a["start"] + b["start"]  # bug: the outer start is not scaled by the inner step
    n = node.result.type.shape[b["dim"]]
    attrs = {"dim": a["dim"], "start": start, "end": start + (n - 1) * a["step"] + 1 if n else start, "step": a["step"]}
    try:
        new = rw.graph.add("slice", [inner.operands[0]], attrs, before=node)
    except Exception:  # noqa: BLE001 - out of range: decline without touching the graph
        return None
    rw.graph.remove(new)
    if new.result.type != node.result.type:
        return None
    return [rw.add("slice", [inner.operands[0]], attrs).result]


def _pass_mutant(pattern: Callable) -> Callable[[], None]:
    def apply() -> None:
        from minicomp.passes import canonicalize
        original = canonicalize.builtin_patterns
        canonicalize.builtin_patterns = lambda: [_Pattern(pattern.__name__.strip("_"), pattern)] + original()
    return apply


# -- backend mutants: wrong scalar formulas, views and indexing in the shared lowering -----------
def _replace_op(name: str, **fields) -> None:
    from minicomp.ir import ops
    ops._REGISTRY[name] = dataclasses.replace(ops.get_op(name), **fields)


def _scalar(name: str, make: Callable[[Callable], Callable]) -> Callable[[], None]:
    def apply() -> None:
        from minicomp.ir.ops import get_op
        _replace_op(name, scalar=make(get_op(name).scalar))
    return apply


def _floats_only(fn: Callable, orig: Callable) -> Callable:
    return lambda *a, **kw: fn(*a, **kw) if a[0].dtype.is_float else orig(*a, **kw)


def _slice_view(mistake: str) -> Callable[[], None]:
    def apply() -> None:
        from minicomp.ir.ops.movement import idx_add, idx_mul

        def view(out_index, in_types, attrs, result=0):
            index, d = list(out_index), attrs["dim"]
            if mistake == "start" and attrs["start"] > 0:
                index[d] = idx_add(idx_mul(index[d], attrs["step"]), attrs["start"] - 1)
            elif mistake == "step":
                index[d] = idx_add(index[d], attrs["start"])
            else:
                index[d] = idx_add(idx_mul(index[d], attrs["step"]), attrs["start"])
            return index
        _replace_op("slice", view=view)
    return apply


def _left_aligned_broadcast() -> None:
    from minicomp.ir.lowering import builder, indexing as ix

    def operand(self, node, i, idx, out_shape):
        shape = node.operands[i].type.shape
        lead = len(out_shape) - len(shape)
        sub = [ix.c64(0) if s == 1 and out_shape[lead + d] != 1 else
               idx[d] if lead and out_shape[d] == s else idx[lead + d] for d, s in enumerate(shape)]
        return self.expr(node.operands[i], sub)
    builder.KernelBuilder.operand = operand


_M = Mutant
CATALOGUE: dict[str, Mutant] = {m.name: m for m in [
    _M("mul-by-zero", "pass", "wrong identity", "x * 0 -> 0 (wrong for NaN, inf, and -0.0 for x < 0)",
       _pass_mutant(_mul_by_zero)),
    _M("self-sub", "pass", "wrong identity", "x - x -> 0 on floats (NaN - NaN, inf - inf are NaN)",
       _pass_mutant(_self_sub)),
    _M("add-pos-zero", "pass", "sign of zero", "x + 0.0 -> x (-0.0 + 0.0 is +0.0)", _pass_mutant(_add_pos_zero)),
    _M("zero-minus-is-neg", "pass", "sign of zero", "0.0 - x -> neg(x) (0 - 0 is +0.0, neg(0) is -0.0)",
       _pass_mutant(_zero_minus)),
    _M("div-by-reciprocal", "pass", "rounding", "x / c -> x * (1/c) (rounds twice)", _pass_mutant(_div_to_mul)),
    _M("reassociate-add", "pass", "reassociation", "(a + b) + c -> a + (b + c) on floats",
       _pass_mutant(_reassociate)),
    _M("split-sum", "pass", "reassociated reduction", "sum over several dims -> nested sums",
       _pass_mutant(_split_sum)),
    _M("drop-cast-roundtrip", "pass", "dropped cast", "cast(cast(x, T), S) -> x (drops T's rounding/truncation)",
       _pass_mutant(_drop_cast_roundtrip)),
    _M("const-to-rhs", "pass", "swapped operands", "sub/div(c, x) -> (x, c): constants moved right as if commutative",
       _pass_mutant(_const_to_rhs)),
    _M("max-to-select", "pass", "NaN dropping", "maximum(a, b) -> where(a > b, a, b)",
       _pass_mutant(_max_to_select)),
    _M("abs-to-select", "pass", "sign of zero", "abs(x) -> where(x < 0, -x, x) (abs(-0.0) stays -0.0)",
       _pass_mutant(_abs_to_select)),
    _M("compose-slices", "pass", "off-by-one stride", "slice(slice(x)) -> one slice, outer start not scaled by the "
       "inner step", _pass_mutant(_compose_slices)),
    _M("max-drops-nan", "backend", "NaN dropping", "maximum's scalar rule: a > b ? a : b",
       _scalar("maximum", lambda o: _floats_only(lambda a, b: E.where(E.gt(a, b), a, b), o))),
    _M("min-drops-nan", "backend", "NaN dropping", "minimum's scalar rule: a < b ? a : b",
       _scalar("minimum", lambda o: _floats_only(lambda a, b: E.where(E.lt(a, b), a, b), o))),
    _M("sub-swapped", "backend", "swapped operands", "sub's scalar rule computes b - a",
       _scalar("sub", lambda o: lambda a, b: o(b, a))),
    _M("div-swapped", "backend", "swapped operands", "div's scalar rule computes b / a",
       _scalar("div", lambda o: lambda a, b, **kw: o(b, a, **kw))),
    _M("where-swapped", "backend", "swapped operands", "where's scalar rule picks b where the condition holds",
       _scalar("where", lambda o: lambda c, a, b: o(c, b, a))),
    _M("neg-as-zero-minus", "backend", "sign of zero", "neg's scalar rule: 0 - x",
       _scalar("neg", lambda o: _floats_only(lambda x: E.sub(0, x), o))),
    _M("relu-drops-nan", "backend", "NaN dropping", "relu's scalar rule: x > 0 ? x : 0",
       _scalar("relu", lambda o: _floats_only(lambda x: E.where(E.gt(x, 0), x, 0), o))),
    _M("abs-keeps-neg-zero", "backend", "sign of zero", "abs's scalar rule: x < 0 ? -x : x",
       _scalar("abs", lambda o: _floats_only(lambda x: E.where(E.lt(x, 0), E.neg(x), x), o))),
    _M("ge-is-gt", "backend", "off-by-one comparison", "ge's scalar rule is a > b",
       _scalar("ge", lambda o: lambda a, b: E.gt(a, b))),
    _M("slice-start-off-by-one", "backend", "off-by-one stride", "slice view reads from start - 1",
       _slice_view("start")),
    _M("slice-step-ignored", "backend", "off-by-one stride", "slice view ignores the step", _slice_view("step")),
    _M("broadcast-left-aligned", "backend", "wrong broadcast dims", "a lower-rank operand is indexed from the left "
       "where sizes allow", _left_aligned_broadcast),
]}


def activate(name: str) -> Mutant:
    """Inject mutant ``name`` into this process (for good); returns it. Unknown names raise KeyError."""
    if name not in CATALOGUE:
        raise KeyError(f"unknown mutant {name!r}; known: {', '.join(CATALOGUE)}")
    CATALOGUE[name].apply()
    return CATALOGUE[name]


def __getattr__(attr: str) -> Callable[[], None]:
    """``enable_<name>`` (dashes as underscores): a no-argument function activating that mutant (a plugin spec)."""
    if attr.startswith("enable_"):
        name = attr[len("enable_"):].replace("_", "-")
        if name in CATALOGUE:
            return lambda: activate(name) and None
    raise AttributeError(attr)
