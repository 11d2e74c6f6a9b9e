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
* reductions give ``reduce``, a :class:`~minicomp.ir.ops.reduction.ReduceRule`
  (the loop space they need and the Reduce stages they append), beside their
  definitions in :mod:`minicomp.ir.ops.reduction`;
* ops computed element by element by something other than a scalar formula (cat,
  embedding, copy, batch_norm) give ``element(builder, node, value, index) -> Expr``;
  contractions give ``template(builder, node)``, the matmul/conv/pool kernel
  template. Both are named by :func:`lowering_rule` (the code lives in
  :mod:`minicomp.ir.lowering`, which imports this registry, so it is looked up
  on first use).

``role`` (a :class:`Role`) is the one answer to "what does fusion and lowering do
with this op": passes and the lowering ask it (``node.opdef.role``) and never
compare op names. ``kernel_kind`` names the kernel a contraction root makes
(``matmul``, ``conv``, ``pool``); ``fuses=False`` keeps an op in a kernel of its own.

Adding an op means adding one OpDef in one of the modules below (see
docs/adding-an-op.md); the registry test fails if an op lacks a reference or a lowering.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minicomp.ir.types import TensorType


class Category(enum.Enum):
    """The op's family (how docs/ops.md groups ops); what fusion and lowering do with it is its :class:`Role`."""

    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    MOVEMENT = "movement"
    OPAQUE = "opaque"


class Role(enum.Enum):
    """What fusion, lowering and kernel counting do with an op (``OpDef.role``).

    Every decision of that kind reads this field; a rule such as "views make no
    kernel" is written once, against the role, never against a list of op names.
    """

    #: computed element by element (``scalar`` formula or ``element`` rule); fuses with
    #: neighbours of the same shape and may be recomputed inside several kernels
    ELEMENTWISE = "elementwise"
    #: loops over a reduced space (``reduce`` rule); the root of a reduction kernel
    REDUCTION = "reduction"
    #: a kernel template (``template`` rule, ``kernel_kind``); the root of a matmul/conv/pool
    #: kernel with an elementwise epilogue; reads its operands from memory (through views)
    CONTRACTION = "contraction"
    #: no kernel: an index map (``view`` rule) folded into each consumer's indexing
    VIEW = "view"
    #: materializes its operand (``copy``): its own kernel, the root of a ``copy`` fused node
    COPY = "copy"
    #: a literal (``constant``): a buffer of the program, no kernel
    CONSTANT = "constant"
    #: not lowered by itself (``fused`` bodies are lowered as a group; ``external`` runs eagerly)
    OPAQUE = "opaque"

    @property
    def makes_kernel(self) -> bool:
        """Whether a node of this role becomes a kernel of its own when left unfused."""
        return self not in (Role.VIEW, Role.CONSTANT)


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
    # -- fusion and lowering (see Role; None: derived from the category, see __post_init__) --
    role: Role | None = None
    fuses: bool = True  # False: always a kernel of its own (fusion never groups it)
    kernel_kind: str | None = None  # contractions: the kernel a root makes ("matmul", "conv", "pool")
    reduce: Any = None  # reductions: a ReduceRule (minicomp.ir.ops.reduction)
    element: Callable[..., Any] | None = None  # (builder, node, value, index) -> Expr, see lowering_rule
    template: Callable[..., Any] | None = None  # contractions: (builder, node) -> Template
    # (in_type, attrs) -> True when a node whose result type equals its operand's returns that
    # operand unchanged (same-shape reshape, identity permute, full slice, same-dtype cast)
    no_op: Callable[[TensorType, dict[str, Any]], bool] | None = None
    # decompose(node, b) -> Value: the op in simpler registered ops, built with ``b.op(name, *values,
    # **attrs)``, ``b.c(x)`` (a 0-d constant of the compute dtype) and ``b.up(v)`` (v in its compute
    # dtype); the ``decompose`` pass applies it where enabled (``decompose_by_default`` or the option)
    decompose: Callable[..., Any] | None = None
    decompose_by_default: bool = False

    def __post_init__(self) -> None:
        if self.role is None:
            object.__setattr__(self, "role", _default_role(self))
        if self.role is Role.VIEW and self.view is None:
            raise ValueError(f"op {self.name}: role VIEW needs a view rule")

    @property
    def is_view(self) -> bool:
        """No kernel of its own: folds into its consumers' indexing."""
        return self.role is Role.VIEW

    @property
    def has_body(self) -> bool:
        """The op holds a graph (``fused``): lowering turns that body into one kernel."""
        return any(a.kind == "graph" for a in self.attrs.values())

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


def _default_role(op: OpDef) -> Role:
    """The role of an OpDef that names none: its category's (a movement op with a view rule
    is a view; one without computes its elements by an ``element`` rule)."""
    if op.category is Category.MOVEMENT:
        return Role.VIEW if op.view is not None else Role.ELEMENTWISE
    return {Category.ELEMENTWISE: Role.ELEMENTWISE, Category.REDUCTION: Role.REDUCTION,
            Category.CONTRACTION: Role.CONTRACTION}.get(op.category, Role.OPAQUE)


def lowering_rule(module: str, name: str) -> Callable[..., Any]:
    """The function ``name`` of ``minicomp.ir.lowering.<module>``, imported on first call.

    Lowering rules that need the lowering's machinery (buffer addressing, index
    simplification) live there; the OpDef names them with this, because the
    lowering imports the registry and the registry cannot import it while loading.
    """
    fn: list[Callable[..., Any]] = []

    def rule(*args: Any, **kwargs: Any) -> Any:
        if not fn:
            import importlib
            fn.append(getattr(importlib.import_module(f"minicomp.ir.lowering.{module}"), name))
        return fn[0](*args, **kwargs)
    rule.__name__ = rule.__qualname__ = f"{module}.{name}"
    return rule


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


def ops_with(role: Role) -> list[OpDef]:
    """Every registered op of ``role``."""
    return [o for o in _REGISTRY.values() if o.role is role]


# Importing the modules registers their ops.
from minicomp.ir.ops import elementwise, reduction, contraction, movement, misc  # noqa: E402,F401
