"""The :class:`Builder` that grows one random graph, and the exactness tables it keeps.

A Builder keeps a *pool* of available values (graph inputs, constants, results).
Op generators (:mod:`minicomp.testing.opgen`) pick operands from the pool, or ask for
fresh leaves, and :meth:`Builder.add` inserts a node only when the op's type inference
accepts it. Two knobs shape the graphs:

* ``depth`` (0..1): how often :meth:`Builder.pick` takes the newest fitting value
  instead of any fitting value. High depth grows long chains (deep graphs, where
  fusion and rewrites compose); low depth grows wide, shallow graphs.
* leaf values: constants are often *splats* of the values rewrites care about
  (0, 1, -1, 2, 0.5, 3, 0.1; -0.0, NaN and +-inf with special values), half the time, so identity and
  annihilator rewrites (``x * 1``, ``x * 0``, ``x + -0.0``, ``x / 3``) are met, right and wrong.
* chains: with :attr:`Builder.chain` set (the graph generator sets it when it draws the
  same op again), the next :meth:`Builder.pick` returns that value, so the new node
  consumes the previous one: ``add(add(a, b), c)``, ``cast(cast(x))``, ``slice(slice(x))``,
  the shapes composition and reassociation rewrites match.

Exactness: a value is *exact* when every correct implementation computes it
bit-identically (leaves, and exact ops of exact operands). Ops whose result jumps on
a tiny input change only take exact operands, which keeps the differential check at
default tolerances free of false alarms.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value, constant
from minicomp.ir.ops import IRError
from minicomp.ir.types import TensorType
from minicomp.testing.strategies import tensor_values

#: Ops whose result is bit-identical in every correct implementation, given exact operands.
EXACT_OPS = frozenset({
    "neg", "abs", "relu", "relu6", "hardtanh", "clamp", "maximum", "minimum", "where", "floor", "cast",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not", "isnan",
    "amax", "amin", "argmax", "argmin", "max_pool2d", "reshape", "permute", "expand", "slice", "cat",
    "split", "embedding", "upsample_nearest2d", "copy", "full", "constant",
})
#: Ops that are exact only on integer/bool operands (float rounding order may differ).
EXACT_ON_INTS = frozenset({"add", "sub", "mul", "sum", "cumsum"})
#: Ops whose result jumps on tiny input changes: they take exact operands only.
DISCONTINUOUS = frozenset({"floor", "remainder", "fmod", "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin"})

#: Splat values for constants: the identities and annihilators rewrites test for.
#: 3.0 and 0.1 are there because their reciprocals are inexact: ``x / 3`` and ``x * (1/3)`` round differently.
SPLATS_FLOAT = (0.0, 0.0, 1.0, 1.0, -1.0, 2.0, 0.5, 3.0, 0.1)  # (0 and 1, the most rewritten, twice as often)
#: With special values: eager's sign of a zero from min/max(+0.0, -0.0) depends on the tensor's size
#: (see docs/testing.md), so -0.0 splats come only with the other special values.
SPLATS_SPECIAL = (-0.0, float("nan"), float("inf"), float("-inf"))
SPLATS_INT = (0, 1, -1, 2)


class Builder:
    """Grows one random graph; ``draw`` is a hypothesis draw function.

    ``special``: NaN, +-inf and +-0.0 in float leaves; ``magnitudes``: large and tiny
    finite values too (see :func:`~minicomp.testing.strategies.tensor_values`);
    ``depth``: see the module docstring.
    """

    def __init__(self, draw: st.DrawFn, dtypes: tuple[DType, ...], special: bool, *, depth: float = 0.0,
                 magnitudes: bool = False):
        self.draw = draw
        self.dtypes = dtypes
        self.special = special
        self.magnitudes = magnitudes
        self.depth = depth
        self.graph = Graph("random")
        self.pool: list[Value] = []
        self.exact: set[int] = set()
        self.input_values: list[np.ndarray] = []
        self.used: set[int] = set()
        #: A value the next :meth:`pick` it fits returns (then cleared): chains of one op.
        self.chain: Value | None = None

    # -- pool ---------------------------------------------------------------------------
    def pick(self, pred: Callable[[Value], bool] = lambda v: True, exact: bool = False) -> Value | None:
        """A pool value satisfying ``pred`` (and exact, if asked), or None; the newest one with
        probability ``depth``."""
        fits = lambda v: pred(v) and (not exact or id(v) in self.exact)  # noqa: E731
        if self.chain is not None and fits(self.chain):
            chain, self.chain = self.chain, None
            return chain
        cands = [v for v in self.pool if fits(v)]
        if not cands:
            return None
        if self.depth > 0 and self.draw(st.integers(0, 99)) < int(self.depth * 100):
            return cands[-1]
        unused = [v for v in cands if id(v) not in self.used]
        if unused and self.flag():  # values nobody uses yet first: a connected graph, little dead code
            return unused[self.draw(st.integers(0, len(unused) - 1))]
        return cands[self.draw(st.integers(0, len(cands) - 1))]

    def leaf(self, ttype: TensorType, const: bool | None = None, bound: float | None = None,
             positive: bool = False, splat: bool | None = None) -> Value:
        """A fresh graph input or constant of type ``ttype`` (exact), also added to the pool.

        A constant is a splat of an interesting value (:data:`SPLATS_FLOAT`) when
        ``splat``, or (``splat=None``) one time in two, unless ``bound`` or ``positive``
        restricts its values.
        """
        if const is None:
            const = self.draw(st.booleans()) or bool(splat)
        special = self.special and not positive and bound is None
        if splat is None:
            splat = self.flag()
        if const and bound is None and not positive and splat:
            arr = self._splat(ttype)
        else:
            arr = self.draw(tensor_values(ttype, special=special, bound=bound,
                                          magnitudes=self.magnitudes and special))
        if positive:
            arr = (np.abs(arr) + 0.5).astype(arr.dtype)
        if const:
            v = constant(self.graph, arr, ttype.dtype)
        else:
            v = self.graph.add_input(ttype)
            self.input_values.append(arr)
        self.exact.add(id(v))
        self.pool.append(v)
        return v

    def _splat(self, ttype: TensorType) -> np.ndarray:
        dt = ttype.dtype
        if dt is DType.bool:
            value: Any = self.flag()
        elif dt.is_int:
            value = self.choice(SPLATS_INT)
        else:
            value = self.choice(SPLATS_FLOAT + (SPLATS_SPECIAL if self.special else ()))
        return np.full(ttype.shape, value, dtype=dt.np)

    def operand(self, ttype: TensorType, exact: bool = False) -> Value:
        """A pool value of exactly ``ttype`` if there is one (sometimes), else a fresh leaf."""
        found = self.pick(lambda v: v.type == ttype, exact=exact)
        if found is not None and self.draw(st.booleans()):
            return found
        return self.leaf(ttype)

    def raw(self, v: Value | None) -> Value | None:
        """``v``, or (with special values, one time in three) a fresh graph input of its type instead, whose
        NaN, infinities and signed zeros then reach the op directly rather than through ops that absorb them."""
        if v is None or not (self.special and v.type.dtype.is_float) or self.draw(st.integers(0, 2)):
            return v
        return self.leaf(v.type, const=False)

    def same_type(self, v: Value) -> Value:
        """Another value of exactly ``v``'s type: from the pool (sometimes) or a fresh graph input.

        Rewrites that compose or reassociate (``(a + b) + c``, ``maximum(a, b) -> select``)
        only fire when operand types match the result's, which random picks rarely do.
        """
        found = self.pick(lambda w: w.type == v.type and w is not v)
        if found is not None and self.flag():
            return found
        return self.leaf(v.type, const=False)

    def add(self, op: str, operands: list[Value], attrs: dict[str, Any]) -> Node | None:
        """Insert ``op`` if its type inference accepts it; put its results in the pool."""
        try:
            node = self.graph.add(op, operands, attrs)
        except (IRError, ValueError):
            return None
        self.used.update(id(o) for o in operands)
        floats_in = any(o.type.dtype.is_float for o in operands)
        is_exact = all(id(o) in self.exact for o in operands) and (
            op in EXACT_OPS or (op in EXACT_ON_INTS and not floats_in)
            or (op == "div" and attrs.get("rounding_mode") is not None))
        for r in node.results:
            self.pool.append(r)
            if is_exact:
                self.exact.add(id(r))
        return node

    # -- small draws ------------------------------------------------------------------
    def side(self, lo: int = 1, hi: int = 4) -> int:
        return self.draw(st.integers(lo, hi))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def choice(self, items: list | tuple) -> Any:
        return self.draw(st.sampled_from(list(items)))
