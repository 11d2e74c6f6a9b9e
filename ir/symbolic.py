"""Symbolic sizes: a dimension that is named (``s0``) instead of fixed, as MLIR's ``?`` with a name.

A :class:`Sym` is an integer expression over size symbols, kept in one normal form: a
polynomial with integer coefficients whose atoms are symbols or opaque ``floordiv``/``mod``
terms. Arithmetic with ints and other Syms gives a Sym (or an ``int`` when the result is
constant), so shape rules written with Python arithmetic work unchanged on symbolic shapes.

What a compiled program assumes about each symbol is written here once (:data:`MIN_SIZE`):
every symbol is at least 2. Sizes 0 and 1 change broadcasting and emptiness, so a call where
a dynamic dim is 0 or 1 runs a specialization for that size (the driver keeps them), and
comparisons such as ``s0 == 1`` are decided (False) instead of guessed.

A question the assumptions cannot answer (``s0 == s1``, ``s0 > 7``) raises
:class:`SymbolicError`; so does asking for a static ``int`` (``range(s0)``, ``int(s0)``). Code
that needs a static size fails loudly there and never takes a wrong branch.
"""
from __future__ import annotations

import re
from functools import reduce
from typing import Iterable, Mapping, Union

#: Every symbol's smallest value in a symbolic program (0 and 1 get their own specialization).
MIN_SIZE = 2


class SymbolicError(ValueError):
    """A question about a symbolic size that the program's assumptions cannot decide."""


# An atom is a symbol name (str) or an opaque term ("floordiv" | "mod", Sym, int divisor).
Atom = Union[str, tuple]
Monomial = tuple  # sorted tuple of atoms (repeats for powers); () is the constant term


def _atom_key(a: Atom) -> str:
    return a if isinstance(a, str) else f"~{a[0]}({a[1]},{a[2]})"


class Sym:
    """An integer expression over size symbols (immutable, hashable, normal form)."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, int]):
        self.terms = {m: c for m, c in sorted(terms.items(), key=lambda mc: (not mc[0], [_atom_key(a) for a in mc[0]])) if c}
        self._hash = hash(tuple(self.terms.items()))

    # -- building --------------------------------------------------------------------------
    @staticmethod
    def symbol(name: str) -> "Sym":
        if not re.fullmatch(r"[a-z]\w*", name):
            raise ValueError(f"bad size symbol name {name!r}")
        return Sym({(name,): 1})

    @staticmethod
    def _of(x: "Dim") -> "Sym":
        if isinstance(x, Sym):
            return x
        if isinstance(x, bool) or not isinstance(x, int):
            try:
                x = x.__index__()
            except (AttributeError, TypeError):
                raise TypeError(f"not a size: {x!r}") from None
        return Sym({(): int(x)})

    def _norm(self) -> "Dim":
        if not self.terms:
            return 0
        if list(self.terms) == [()]:
            return self.terms[()]
        return self

    def __add__(self, other: "Dim") -> "Dim":
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        terms = dict(self.terms)
        for m, c in Sym._of(other).terms.items():
            terms[m] = terms.get(m, 0) + c
        return Sym(terms)._norm()

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return Sym({m: -c for m, c in self.terms.items()})._norm()

    def __sub__(self, other: "Dim") -> "Dim":
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        return self + (-Sym._of(other))

    def __rsub__(self, other: "Dim") -> "Dim":
        return (-self) + other

    def __mul__(self, other: "Dim") -> "Dim":
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        terms: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Sym._of(other).terms.items():
                m = tuple(sorted(m1 + m2, key=_atom_key))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Sym(terms)._norm()

    __rmul__ = __mul__

    def __floordiv__(self, other: "Dim") -> "Dim":
        if isinstance(other, Sym):
            q = exact_quotient(self, other)
            if q is None:
                raise SymbolicError(f"({self}) // ({other}) is not a polynomial")
            return q
        if not isinstance(other, int):
            return NotImplemented
        if other == 1:
            return self
        if other <= 0:
            raise SymbolicError(f"({self}) // {other}: symbolic division by a non-positive number")
        if all(c % other == 0 for c in self.terms.values()):
            return Sym({m: c // other for m, c in self.terms.items()})._norm()
        return Sym({(("floordiv", self, other),): 1})

    def __rfloordiv__(self, other: "Dim") -> "Dim":
        return Sym._of(other) // self

    def __mod__(self, other: "Dim") -> "Dim":
        if not isinstance(other, int):
            if isinstance(other, Sym) and exact_quotient(self, other) is not None:
                return 0
            raise SymbolicError(f"({self}) % ({other}) with a symbolic divisor")
        if other <= 0:
            raise SymbolicError(f"({self}) % {other}: symbolic remainder by a non-positive number")
        if all(c % other == 0 for c in self.terms.values()):
            return 0
        return Sym({(("mod", self, other),): 1})

    def __rmod__(self, other: "Dim") -> "Dim":
        raise SymbolicError(f"{other} % ({self}) with a symbolic divisor")

    # -- questions -------------------------------------------------------------------------
    def symbols(self) -> set[str]:
        """The size symbols this expression mentions (inside opaque terms too)."""
        out: set[str] = set()
        for m in self.terms:
            for a in m:
                out |= {a} if isinstance(a, str) else a[1].symbols()
        return out

    def lower_bound(self) -> int | None:
        """The smallest value under the assumptions (every symbol >= MIN_SIZE), or None when
        this form cannot tell (a negative coefficient on a non-constant term)."""
        total = 0
        for m, c in self.terms.items():
            if not m:
                total += c
                continue
            if c < 0:
                return None
            low = 1
            for a in m:
                atom_low = MIN_SIZE if isinstance(a, str) else _opaque_low(a)
                if atom_low is None:
                    return None
                low *= atom_low
            total += c * low
        return total

    def _diff_bounds(self, other: "Dim") -> tuple[int | None, int | None]:
        """Lower and upper bound of ``self - other`` under the assumptions (None: unbounded/unknown)."""
        diff = self - other
        if isinstance(diff, int):
            return diff, diff
        neg = (-diff).lower_bound() if isinstance(-diff, Sym) else None
        return diff.lower_bound(), (None if neg is None else -neg)

    def _decide(self, other: "Dim", question: str, lo_ok, hi_no) -> bool:
        lo, hi = self._diff_bounds(other)
        if lo is not None and lo_ok(lo):
            return True
        if hi is not None and hi_no(hi):
            return False
        raise SymbolicError(f"cannot decide {self} {question} {other} for every size (symbols >= {MIN_SIZE})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (int, Sym)) or isinstance(other, bool):
            return NotImplemented
        if isinstance(other, Sym) and self.terms == other.terms:
            return True
        lo, hi = self._diff_bounds(other)
        if (lo is not None and lo > 0) or (hi is not None and hi < 0):
            return False
        raise SymbolicError(f"cannot decide {self} == {other} for every size (symbols >= {MIN_SIZE})")

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __lt__(self, other: "Dim") -> bool:
        return not self._decide(other, ">=", lambda lo: lo >= 0, lambda hi: hi < 0)

    def __le__(self, other: "Dim") -> bool:
        return not self._decide(other, ">", lambda lo: lo > 0, lambda hi: hi <= 0)

    def __gt__(self, other: "Dim") -> bool:
        return self._decide(other, ">", lambda lo: lo > 0, lambda hi: hi <= 0)

    def __ge__(self, other: "Dim") -> bool:
        return self._decide(other, ">=", lambda lo: lo >= 0, lambda hi: hi < 0)

    def __bool__(self) -> bool:
        return self != 0

    def __hash__(self) -> int:
        return self._hash

    def __index__(self) -> int:
        raise SymbolicError(f"the size {self} is symbolic here, but this needs a static size")

    __int__ = __index__

    # -- values ----------------------------------------------------------------------------
    def evaluate(self, env: Mapping[str, int]) -> int:
        """The value for the given symbol values (KeyError names a missing symbol)."""
        total = 0
        for m, c in self.terms.items():
            v = c
            for a in m:
                v *= env[a] if isinstance(a, str) else _opaque_value(a, env)
            total += v
        return total

    def __str__(self) -> str:
        parts = []
        for m, c in self.terms.items():
            if not m:
                parts.append(str(c))
                continue
            body = "*".join(a if isinstance(a, str) else _opaque_str(a) for a in m)
            parts.append(body if c == 1 else f"-{body}" if c == -1 else f"{c}*{body}")
        text = "+".join(parts).replace("+-", "-")
        return text

    def __repr__(self) -> str:
        return f"Sym({self})"

    def __reduce__(self):
        return (parse_dim, (str(self),))


def _opaque_value(a: tuple, env: Mapping[str, int]) -> int:
    v = a[1].evaluate(env)
    return v // a[2] if a[0] == "floordiv" else v % a[2]


def _opaque_low(a: tuple) -> int | None:
    """Lower bound of a floordiv/mod term whose dividend is known non-negative (else None)."""
    inner = a[1].lower_bound()
    if inner is None or inner < 0:
        return None
    return inner // a[2] if a[0] == "floordiv" else 0


def _opaque_str(a: tuple) -> str:
    return f"{a[0]}({a[1]},{a[2]})"


Dim = Union[int, Sym]


def exact_quotient(num: Dim, den: Dim) -> Dim | None:
    """``num / den`` when ``den`` divides ``num`` exactly as polynomials (one-term ``den``), else None."""
    num, den = Sym._of(num), Sym._of(den)
    if len(den.terms) != 1:
        return 1 if num.terms == den.terms else None
    (dm, dc), = den.terms.items()
    terms = {}
    for m, c in num.terms.items():
        rest = list(m)
        for a in dm:
            if a not in rest:
                return None
            rest.remove(a)
        if c % dc:
            return None
        terms[tuple(rest)] = c // dc
    return Sym(terms)._norm()


def same_dims(a, b) -> bool:
    """Structural equality of two shapes (never raises: ``s0`` and ``s1`` are different sizes)."""
    return len(a) == len(b) and all(type(x) is type(y) and (x.terms == y.terms if isinstance(x, Sym) else x == y)
                                    for x, y in zip(a, b))


def is_static(x: object) -> bool:
    """True for a plain ``int`` size (not a :class:`Sym`)."""
    return not isinstance(x, Sym)


def shape_symbols(shape: Iterable[Dim]) -> set[str]:
    """Every symbol mentioned in ``shape``."""
    return set().union(*(d.symbols() for d in shape if isinstance(d, Sym))) if shape else set()


def evaluate(x: Dim, env: Mapping[str, int]) -> int:
    """The value of a size (an ``int`` as it is)."""
    return x.evaluate(env) if isinstance(x, Sym) else int(x)


def substitute(value, env: Mapping[str, int]):
    """``value`` with every Sym inside (tuples, lists, dicts) replaced by its value."""
    if isinstance(value, Sym):
        return value.evaluate(env)
    if isinstance(value, tuple):
        return tuple(substitute(v, env) for v in value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def has_symbols(value) -> bool:
    """True when a Sym occurs in ``value`` (tuples, lists, dicts searched)."""
    if isinstance(value, Sym):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_symbols(v) for v in value)
    if isinstance(value, dict):
        return any(has_symbols(v) for v in value.values())
    return False


def sym_max(a: Dim, b: Dim) -> Dim:
    """max(a, b), decided under the assumptions (raises SymbolicError when it cannot be)."""
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return a if a >= b else b


def prod(xs: Iterable[Dim]) -> Dim:
    return reduce(lambda a, b: a * b, xs, 1)


# -- text -------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+)|([a-z]\w*)|(//|[-+*%(),]))")


def parse_dim(text: str) -> Dim:
    """The size written as ``text`` (``128``, ``s0``, ``4*s0+1``, ``floordiv(s0+1,2)``, also
    ``(s0+1)//2`` and ``%``): the inverse of ``str``."""
    toks = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad size expression {text!r} at {pos}")
        num, name, punct = m.groups()
        toks.append(int(num) if num is not None else name or punct)
        pos = m.end()
    value, rest = _sum(toks)
    if rest:
        raise ValueError(f"bad size expression {text!r}: unexpected {rest[0]!r}")
    return value


def _sum(toks: list) -> tuple[Dim, list]:
    sign = 1
    if toks and toks[0] == "-":
        sign, toks = -1, toks[1:]
    value, toks = _product(toks)
    value = value * sign
    while toks and toks[0] in ("+", "-"):
        op = toks[0]
        rhs, toks = _product(toks[1:])
        value = value + rhs if op == "+" else value - rhs
    return value, toks


def _product(toks: list) -> tuple[Dim, list]:
    value, toks = _atom(toks)
    while toks and toks[0] in ("*", "//", "%"):
        op = toks[0]
        rhs, toks = _atom(toks[1:])
        value = value * rhs if op == "*" else value // rhs if op == "//" else value % rhs
    return value, toks


def _atom(toks: list) -> tuple[Dim, list]:
    if not toks:
        raise ValueError("size expression ends early")
    t = toks[0]
    if isinstance(t, int):
        return t, toks[1:]
    if t == "(":
        value, rest = _sum(toks[1:])
        if not rest or rest[0] != ")":
            raise ValueError("missing ')' in size expression")
        return value, rest[1:]
    if t == "-":
        value, rest = _atom(toks[1:])
        return -value, rest
    if t in ("floordiv", "mod") and toks[1:2] == ["("]:
        num, rest = _sum(toks[2:])
        if not rest or rest[0] != ",":
            raise ValueError(f"{t}(...) takes two operands")
        den, rest = _sum(rest[1:])
        if not rest or rest[0] != ")":
            raise ValueError(f"missing ')' after {t}(...)")
        return (num // den if t == "floordiv" else num % den), rest[1:]
    if isinstance(t, str) and re.fullmatch(r"[a-z]\w*", t):
        return Sym.symbol(t), toks[1:]
    raise ValueError(f"unexpected {t!r} in size expression")


# -- binding sizes at a call ---------------------------------------------------------------
def bind(declared: Iterable[tuple], actual: Iterable[tuple], names: Iterable[str] | None = None) -> dict[str, int]:
    """The value of every symbol, read from the inputs' actual shapes, after checking every
    relation the declared shapes state (a static dim equal, ``2*s0`` twice the ``s0`` read
    elsewhere). Each symbol must appear alone as some input dim. Raises ValueError naming
    the input and dim of the first disagreement."""
    declared, actual = list(declared), list(actual)
    names = list(names) if names is not None else [f"input {i}" for i in range(len(declared))]
    env: dict[str, int] = {}
    for name, decl, shape in zip(names, declared, actual):
        if len(decl) != len(shape):
            raise ValueError(f"{name} has {len(shape)} dims, the program expects {len(decl)} ({_shape_str(decl)})")
        for d, (want, got) in enumerate(zip(decl, shape)):
            if isinstance(want, Sym) and len(want.terms) == 1 and want.terms.get((next(iter(want.symbols())),)) == 1:
                sym = next(iter(want.symbols()))
                if env.setdefault(sym, int(got)) != int(got):
                    raise ValueError(f"{name} dim {d} is {got}, but {sym} = {env[sym]} from an earlier input "
                                     f"(the program expects {_shape_str(decl)})")
    for name, decl, shape in zip(names, declared, actual):
        for d, (want, got) in enumerate(zip(decl, shape)):
            try:
                value = evaluate(want, env)
            except KeyError as e:
                raise ValueError(f"{name} dim {d} is {want}: symbol {e.args[0]} is not any input's dim") from None
            if value != int(got):
                raise ValueError(f"{name} has shape {tuple(shape)}, the program expects {_shape_str(decl)}"
                                 + (f" with {_env_str(env)}" if env else ""))
    return env


def _shape_str(shape) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _env_str(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
