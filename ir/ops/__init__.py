"""The op registry: one :class:`OpDef` per op, holding everything about it.

An OpDef declares the op's operands and attributes, its shape/dtype inference,
its numpy reference (used by the interpreter and by constant folding), its
category for fusion, and how it becomes part of a kernel:

* elementwise ops give ``scalar(*args, **attrs) -> Expr``, a formula over the scalar
  primitives of :mod:`minicomp.ir.kernel` (the one place their meaning is written
  for code generation), and ``dtype_rule(in_dtypes, attrs) -> (operand_dtypes,
  result_dtype)``: operands are cast to ``operand_dtypes`` before ``scalar`` and
  its result (of ``result_dtype.compute``, bool for predicates) is cast to
  ``result_dtype`` (see :func:`minicomp.ir.ops.elementwise.scalar_expr`). The
  generators ``full``/``arange`` (no operands) take ``scalar(*, index, **attrs)``
  with ``index`` the output multi-index (i64 Exprs);
* view ops give ``view(out_index, in_types, attrs, result=0) -> list[Expr]``,
  mapping an output multi-index to the operand's multi-index, so views fold into
  indexing;
* the other categories name a kernel template in :mod:`minicomp.ir.lowering`.

Adding an op means adding one OpDef in one of the modules below; the registry
test fails if an op lacks a reference or a lowering.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minicomp.ir.types import TensorType


class Category(enum.Enum):
    """How fusion treats an op."""

    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    MOVEMENT = "movement"
    OPAQUE = "opaque"


class IRError(ValueError):
    """Malformed IR: bad operands, attributes or types."""


InferFn = Callable[[list[TensorType], dict[str, Any]], list[TensorType]]
RefFn = Callable[..., Any]


@dataclass(frozen=True)
class Attr:
    """An attribute declaration: its kind (for the parser/printer) and default."""

    kind: str  # int, float, bool, str, ints, dtype, array, any
    default: Any = ...  # ... means required

    @property
    def required(self) -> bool:
        return self.default is ...


@dataclass(frozen=True)
class OpDef:
    """Everything minicomp knows about one op."""

    name: str
    category: Category
    arity: int | None  # None: variadic
    infer: InferFn
    reference: RefFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    scalar: Callable[..., Any] | None = None
    view: Callable[..., Any] | None = None
    dtype_rule: Callable[..., Any] | None = None  # elementwise: (in_dtypes, attrs) -> (operand dtypes, result)
    doc: str = ""
    num_results: int | None = 1  # None: decided by inference (split)
    # True: the interpreter also passes ``in_dtypes`` (the operands' IR dtypes), for
    # references whose rounding depends on a dtype the storage array hides (bf16 as f32)
    takes_dtypes: bool = False

    def check_attrs(self, attrs: dict[str, Any]) -> None:
        """Fill defaults in place and reject unknown or missing attributes."""
        for key in attrs:
            if key not in self.attrs:
                raise IRError(f"op '{self.name}' has no attribute '{key}' (known: {sorted(self.attrs)})")
        for key, spec in self.attrs.items():
            if key not in attrs:
                if spec.required:
                    raise IRError(f"op '{self.name}' needs attribute '{key}'")
                attrs[key] = spec.default

    def infer_types(self, types: Sequence[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        if self.arity is not None and len(types) != self.arity:
            raise IRError(f"op '{self.name}' takes {self.arity} operands, got {len(types)}")
        return self.infer(list(types), attrs)


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    """Add an op to the registry (each name once)."""
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IRError(f"unknown op '{name}'") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


def ops_in(category: Category) -> list[OpDef]:
    return [o for o in _REGISTRY.values() if o.category is category]


# Importing the modules registers their ops.
from minicomp.ir.ops import elementwise, reduction, contraction, movement, misc  # noqa: E402,F401
