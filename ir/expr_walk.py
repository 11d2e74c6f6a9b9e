"""Walks over scalar expressions (:mod:`minicomp.ir.kernel`) without recursion.

An expression is a DAG of frozen dataclasses: ``Op(args)``, ``Cast(arg)``, ``Load(index)``
over the leaves ``Var``, ``Const`` and ``Ref``. A chain of a thousand fused elementwise ops
is an expression thousands of nodes deep, and a value used twice (``x * sigmoid(x)``) is
one shared node. Recursive walks overflow Python's stack on the first (issue 14, point 14)
and take exponential time on the second, so every walk here uses an explicit stack and
visits each distinct node (by identity) once:

* :func:`post_order`: the distinct sub-expressions, children before parents, the order
  in which an emitter can compute each node from its already computed operands;
* :func:`install` gives the three inner node classes an equality, a hash (computed once
  per node and kept) and a ``repr`` that work the same way, and print and compare exactly
  as the generated dataclass methods did.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The operands of each inner node class, by class name.
_CHILDREN: dict[str, Callable[[Any], tuple]] = {
    "Op": lambda e: e.args,
    "Cast": lambda e: (e.arg,),
    "Load": lambda e: (e.index,),
}

_EMPTY: tuple = ()


def children(e: Any) -> tuple:
    """The operand expressions of ``e`` (none for a leaf)."""
    get = _CHILDREN.get(type(e).__name__)
    return get(e) if get is not None else _EMPTY


def post_order(e: Any, skip: Callable[[Any], bool] | None = None) -> list:
    """Each distinct node of ``e`` once, operands before the nodes that use them.

    A node for which ``skip(node)`` is true is neither listed nor descended into (an
    emitter passes "already emitted").
    """
    out: list = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(e, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            out.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if skip is not None and skip(node):
            continue
        stack.append((node, True))
        for c in reversed(children(node)):
            if id(c) not in seen:
                stack.append((c, False))
    return out


def _fields(e: Any) -> tuple:
    """The non-expression fields of an inner node (compared and hashed as they are)."""
    name = type(e).__name__
    if name == "Op":
        return (e.op, len(e.args), e.dtype)
    if name == "Load":
        return (e.buf, e.dtype)
    return (e.dtype,)


def expr_hash(self: Any) -> int:
    """A hash consistent with :func:`expr_eq`, computed once per node (post-order, no recursion)."""
    h = self.__dict__.get("_hash")
    if h is not None:
        return h
    for node in post_order(self, lambda n: n.__dict__.get("_hash") is not None or type(n).__name__ not in _CHILDREN):
        kids = tuple(hash(c) for c in children(node))
        object.__setattr__(node, "_hash", hash((type(node).__name__, _fields(node), kids)))
    return self.__dict__["_hash"]


def expr_eq(self: Any, other: Any) -> Any:
    """Structural equality, as the dataclass ``==`` (``0.0 == -0.0``, NaN equal only to itself),
    with an explicit stack; pairs already compared are not compared again."""
    if self is other:
        return True
    if type(other) is not type(self):
        return NotImplemented
    stack = [(self, other)]
    done: set[tuple[int, int]] = set()
    while stack:
        a, b = stack.pop()
        if a is b:
            continue
        if type(a) is not type(b):
            return False
        if type(a).__name__ not in _CHILDREN:
            if not a == b:
                return False
            continue
        ha, hb = a.__dict__.get("_hash"), b.__dict__.get("_hash")
        if ha is not None and hb is not None and ha != hb:
            return False
        key = (id(a), id(b))
        if key in done:
            continue
        done.add(key)
        if _fields(a) != _fields(b):
            return False
        stack.extend(zip(children(a), children(b)))
    return True


def expr_repr(self: Any) -> str:
    """The text the generated dataclass ``repr`` gives, built without recursion (pieces pushed on
    an explicit stack and joined once: no per-node copies of the operands' text)."""
    out: list[str] = []
    stack: list[Any] = [self]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        name = type(item).__name__
        if name == "Op":
            out.append(f"Op(op={item.op!r}, args=(")
            stack.append(("," if len(item.args) == 1 else "") + f"), dtype={item.dtype!r})")
            for i in range(len(item.args) - 1, -1, -1):
                stack.append(item.args[i])
                if i:
                    stack.append(", ")
        elif name == "Cast":
            out.append("Cast(arg=")
            stack += [f", dtype={item.dtype!r})", item.arg]
        elif name == "Load":
            out.append(f"Load(buf={item.buf!r}, index=")
            stack += [f", dtype={item.dtype!r})", item.index]
        else:
            out.append(repr(item))
    return "".join(out)


def _state(self: Any) -> dict:
    """Pickled state without the cached hash (string hashes differ between processes)."""
    return {k: v for k, v in self.__dict__.items() if k != "_hash"}


def install(*classes: type) -> None:
    """Give the inner expression node ``classes`` (Op, Cast, Load) the walks above."""
    for cls in classes:
        cls.__eq__ = expr_eq
        cls.__hash__ = expr_hash
        cls.__repr__ = expr_repr
        cls.__getstate__ = _state
