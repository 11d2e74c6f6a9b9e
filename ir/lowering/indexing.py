"""Index arithmetic for kernel descriptions: building, simplifying, and reading strides.

Index expressions are i64 :data:`~minicomp.ir.kernel.Expr` trees over loop
variables. View rules (``OpDef.view``) produce them with ``floordiv``/``mod``
for reshapes; :func:`simplify` turns every sub-expression that is provably an
affine function of the loop variables back into ``sum(c * Var) + c0`` using the
loop extents, so a reshape of a contiguous buffer costs no division at run time.
:func:`affine` reads the strides of such an expression (for contraction
templates' :class:`~minicomp.ir.kernel.Access`).

The ``e.op == "add"``-style tests below read kernel expressions: they name scalar
primitives of :data:`minicomp.ir.kernel.PRIMITIVES` (the index arithmetic's own
vocabulary), never graph ops, so the op registry has nothing to answer there.
"""
from __future__ import annotations

from collections.abc import Sequence

from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Cast, Const, Expr, Load, Op, Ref, Var

I64 = DType.i64

#: An affine form: ({var dim: coefficient}, constant).
Affine = tuple[dict[int, int], int]


def c64(value: int) -> Const:
    """An i64 constant."""
    return Const(int(value), I64)


def to_i64(e: Expr) -> Expr:
    return e if e.dtype is I64 else Cast(e, I64)


def add(a: Expr, b: Expr) -> Expr:
    """a + b with constant folding."""
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return c64(a.value + b.value)
    return Op("add", (a, b), I64)


def mul(a: Expr, b: Expr) -> Expr:
    """a * b with constant folding."""
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const):
            if x.value == 0:
                return c64(0)
            if x.value == 1:
                return y
    if isinstance(a, Const) and isinstance(b, Const):
        return c64(a.value * b.value)
    return Op("mul", (a, b), I64)


def flat_index(index: Sequence[Expr], strides: Sequence[int], shape: Sequence[int] | None = None) -> Expr:
    """sum(index[d] * strides[d]), skipping size-1 dims when ``shape`` is given."""
    out: Expr = c64(0)
    for d, (i, s) in enumerate(zip(index, strides)):
        if shape is not None and shape[d] == 1:
            continue
        out = add(out, mul(i, c64(s)))
    return out


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for s in reversed(shape):
        strides.append(step)
        step *= max(int(s), 1)
    return tuple(reversed(strides))


# -- affine analysis ------------------------------------------------------------------
# A linear form maps keys to coefficients: an int key is a loop variable; a tuple key
# ("floordiv" | "mod", X, c) is an opaque atom X // c or X mod c (X a canonical Expr).
# Atoms pair up again: c * (X // c) + (X mod c) == X, which is how a reshape of a
# reshape of a contiguous buffer comes back to plain strides.
Form = tuple[dict, int]


def _as_form(e: Expr, extents: Sequence[int]) -> Form | None:
    if isinstance(e, Const) and not isinstance(e.value, bool) and isinstance(e.value, int):
        return {}, int(e.value)
    if isinstance(e, Var):
        return ({e.dim: 1}, 0) if e.dim < len(extents) and extents[e.dim] > 1 else ({}, 0)
    if isinstance(e, Cast) and e.dtype.is_int and e.arg.dtype.is_int:
        return _as_form(e.arg, extents)
    if not isinstance(e, Op) or e.dtype not in (DType.i64, DType.i32):
        return None
    args = [_as_form(a, extents) for a in e.args]
    if any(a is None for a in args):
        return None
    if e.op == "add":
        return _merge(_combine(args[0], args[1], 1))
    if e.op == "sub":
        return _merge(_combine(args[0], args[1], -1))
    if e.op == "neg":
        return {k: -v for k, v in args[0][0].items()}, -args[0][1]
    if e.op == "mul":
        (ta, ca), (tb, cb) = args
        if not ta:
            return _scale(args[1], ca)
        if not tb:
            return _scale(args[0], cb)
        return None
    if e.op in ("floordiv", "mod"):
        (ta, ca), (tb, cb) = args
        if tb or cb <= 0:
            return None
        return _divmod(args[0], cb, extents, e.op)
    return None


def _scale(form: Form, k: int) -> Form:
    return ({t: v * k for t, v in form[0].items()} if k else {}), form[1] * k


def _combine(a: Form, b: Form, sign: int) -> Form:
    terms = dict(a[0])
    for k, v in b[0].items():
        terms[k] = terms.get(k, 0) + sign * v
    return {k: v for k, v in terms.items() if v}, a[1] + sign * b[1]


def _floordiv_key(y: Expr, c: int) -> tuple:
    """The canonical atom of y // c: (X // a) // c is X // (a * c)."""
    if isinstance(y, Op) and y.op == "floordiv" and isinstance(y.args[1], Const):
        return ("floordiv", y.args[0], y.args[1].value * c)
    return ("floordiv", y, c)


def _merge(form: Form) -> Form:
    """Replace c*a*(Y // c) + a*(Y mod c) by a*Y wherever both atoms appear."""
    terms, const = dict(form[0]), form[1]
    changed = True
    while changed:
        changed = False
        for key in list(terms):
            if not isinstance(key, tuple) or key[0] != "mod" or key not in terms:
                continue
            a = terms[key]
            fkey = _floordiv_key(key[1], key[2])
            if terms.get(fkey) == a * key[2]:
                del terms[key], terms[fkey]
                y = _as_form(key[1], _NO_LIMIT)
                terms, const = _combine((terms, const), _scale(y, a), 1)
                changed = True
                break
    return terms, const


class _NoLimit:
    """Extents for re-reading canonical atom arguments: every variable is a real variable."""

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> int:
        return 1 << 62


_NO_LIMIT = _NoLimit()


def _range(terms: dict, const: int, extents: Sequence[int]) -> tuple[int, int]:
    lo = hi = const
    for k, v in terms.items():
        if isinstance(k, tuple):
            if k[0] == "mod":
                a_lo, a_hi = 0, k[2] - 1
            else:
                x_lo, x_hi = _range(*_as_form(k[1], _NO_LIMIT), extents)
                a_lo, a_hi = x_lo // k[2], x_hi // k[2]
        else:
            a_lo, a_hi = 0, extents[k] - 1
        lo += min(v * a_lo, v * a_hi)
        hi += max(v * a_lo, v * a_hi)
    return lo, hi


def _divisors_desc(c: int) -> list[int]:
    """All divisors of c > 0, largest first (trial division; a leftover factor above
    10^5 is treated as prime, which only skips candidates, never adds wrong ones)."""
    factors: dict[int, int] = {}
    n, p = c, 2
    while p * p <= n and p <= 100_000:
        while n % p == 0:
            factors[p] = factors.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        factors[n] = factors.get(n, 0) + 1
    divs = [1]
    for p, k in factors.items():
        divs = [d * p ** e for d in divs for e in range(k + 1)]
    return sorted(divs, reverse=True)


def _divmod(form: Form, c: int, extents: Sequence[int], op: str) -> Form:
    """X // c or X mod c. Terms with coefficients divisible by c come out of the
    division; the rest is exact when its range allows, else an atom (normalized by
    pulling out the largest g | c with rest = g*B + r, 0 <= r < g)."""
    terms, const = form
    out_terms = {k: v // c for k, v in terms.items() if v % c == 0}
    rest = {k: v for k, v in terms.items() if v % c != 0}
    q0, r0 = divmod(const, c)
    sub = _divmod_rest(rest, r0, c, extents, op)
    return sub if op == "mod" else _merge(_combine((out_terms, q0), sub, 1))


def _divmod_rest(terms: dict, const: int, c: int, extents: Sequence[int], op: str) -> Form:
    for g in _divisors_desc(c):
        q_terms = {k: v // g for k, v in terms.items() if v % g == 0}
        r_terms = {k: v for k, v in terms.items() if v % g != 0}
        q_const, r_const = divmod(const, g)
        lo, hi = _range(r_terms, r_const, extents)
        if lo < 0 or hi >= g:
            continue
        if g == c:
            return (q_terms, q_const) if op == "floordiv" else (r_terms, r_const)
        inner = c // g
        b_lo, b_hi = _range(q_terms, q_const, extents)
        if 0 <= b_lo and b_hi < inner:  # B // inner == 0, B mod inner == B
            return ({}, 0) if op == "floordiv" else _combine(_scale((q_terms, q_const), g), (r_terms, r_const), 1)
        atom_x = from_affine((q_terms, q_const))
        if op == "floordiv":
            return {_floordiv_key(atom_x, inner): 1}, 0
        return _combine(({("mod", atom_x, inner): g}, 0), (r_terms, r_const), 1)
    raise AssertionError("g = 1 always divides")


def from_affine(form: Form) -> Expr:
    """The expression ``sum(c * term) + c0`` (variables in dim order, then atoms)."""
    terms, const = form
    out: Expr = c64(const)
    for k in sorted((k for k in terms if not isinstance(k, tuple))):
        out = add(out, mul(Var(k), c64(terms[k])))
    for k in sorted((k for k in terms if isinstance(k, tuple)), key=repr):
        out = add(out, mul(Op(k[0], (k[1], c64(k[2])), I64), c64(terms[k])))
    return out


def linear_form(e: Expr, extents: Sequence[int]) -> Form | None:
    """The linear form of index ``e``: {var dim or floordiv/mod atom: coefficient}, constant."""
    return _as_form(e, extents)


def affine(e: Expr, extents: Sequence[int]) -> Affine | None:
    """The affine form ({var dim: coefficient}, constant) of index ``e`` over loops of
    ``extents``, or None when it is not affine."""
    form = _as_form(e, extents)
    if form is None or any(isinstance(k, tuple) for k in form[0]):
        return None
    return form


def simplify(e: Expr, extents: Sequence[int]) -> Expr:
    """Rewrite integer sub-expressions of ``e`` into canonical linear form (affine where possible)."""
    if isinstance(e, (Var, Const, Ref)):
        return e
    if e.dtype is I64 or e.dtype is DType.i32:
        form = _as_form(e, extents)
        if form is not None:
            out = from_affine(form)
            return out if e.dtype is I64 else Cast(out, e.dtype)
    if isinstance(e, Op):
        args = tuple(simplify(a, extents) for a in e.args)
        if e.op in ("min", "max") and all(isinstance(a, Const) for a in args):
            v = min(a.value for a in args) if e.op == "min" else max(a.value for a in args)
            return Const(v, e.dtype)
        return Op(e.op, args, e.dtype)
    if isinstance(e, Cast):
        return Cast(simplify(e.arg, extents), e.dtype)
    if isinstance(e, Load):
        return Load(e.buf, simplify(e.index, extents), e.dtype)
    return e
