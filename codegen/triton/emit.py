"""Expression emission: a kernel-description :data:`Expr` tree to SSA lines of Triton code.

:class:`Body` collects indented source lines and hands out fresh names.
:class:`ExprEmitter` turns one expression tree into a sequence of assignments
(one line per node, shared sub-trees emitted once) inside a *context*: which
Triton names hold the loop variables, the reduction results (``Ref``), the input
pointers, the mask of valid lanes and the block shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.expr_walk import post_order
from minicomp.ir.kernel import Cast, Const, Expr, Load, Op, Ref, Var
from minicomp.codegen.triton import ops


@dataclass
class Body:
    """Indented source lines of one function under construction, plus a name counter."""

    lines: list[str] = field(default_factory=list)
    indent: int = 1
    counter: int = 0

    def line(self, text: str) -> None:
        """Append one line of source at the current indentation."""
        self.lines.append("    " * self.indent + text)

    def fresh(self, prefix: str = "t") -> str:
        """A local name not used before in this body (``prefix`` + a counter)."""
        self.counter += 1
        return f"{prefix}{self.counter}"

    def assign(self, expr: str, prefix: str = "t") -> str:
        """Emit ``name = expr`` and return the new name."""
        name = self.fresh(prefix)
        self.line(f"{name} = {expr}")
        return name

    def text(self) -> str:
        """The body's source, one line per :meth:`line`."""
        return "\n".join(self.lines)


def literal(value, dtype: DType) -> str:
    """Python source of a scalar constant in ``dtype``'s register representation."""
    if dtype is DType.bool:
        return "True" if value else "False"
    if dtype.is_int:
        return str(int(value))
    v = float(value)
    if dtype in (DType.f16, DType.bf16):
        v = float(round_to_dtype(np.array([v], dtype=np.float32), dtype).astype(np.float32)[0])
    elif dtype is DType.f32:
        v = float(np.float32(v))
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    return repr(v)


def uses(expr: Expr, kind: type) -> list:
    """All distinct sub-expressions of ``expr`` (each node once) that are instances of ``kind``."""
    return [e for e in post_order(expr) if isinstance(e, kind)]


#: The parameter name of a kernel's error word (a kernel with run-time checks takes it last).
ERRORS = "errors"


@dataclass
class Context:
    """Where an expression is evaluated: names of vars, refs, input pointers, the lane mask."""

    vars: dict[int, str]
    refs: dict[int, str]
    inputs: list[str]
    mask: str
    shape: str  # block shape, e.g. "[BLOCK]" or "[XBLOCK, RBLOCK]"
    index_tl: str = "tl.int32"


class ExprEmitter:
    """Emits expressions into ``body`` in context ``ctx``; common sub-expressions are reused."""

    def __init__(self, body: Body, ctx: Context):
        self.body = body
        self.ctx = ctx
        self.memo: dict[object, str] = {}  # Expr, or ("tensor" | "index", Expr)
        self.literals: set[str] = set()  # texts that are Python literals, not tensors

    def tensor(self, expr: Expr) -> str:
        """A name holding ``expr`` as a tensor of exactly the block shape (for stores and reductions).

        A value may depend on only some block dims (``[1, BN]`` in a matmul epilogue
        that ignores the row) or on none (a constant, shape ``[1]`` or a scalar); it
        is broadcast so that its shape equals the block's and the lane mask's.
        """
        key = ("tensor", expr)
        if key in self.memo:
            return self.memo[key]
        name = self.value(expr)
        tl_t = ops.compute_tl(expr.dtype)
        if name in self.literals:
            text = f"tl.full({self.ctx.shape}, {name}, {tl_t})"
        elif expr.dtype is DType.bool:
            text = f"{name} | tl.full({self.ctx.shape}, 0, tl.int1)"
        elif expr.dtype.is_float:
            # a select, not ``+ (-0.0)``: compiled for CUDA the -0.0 splat became +0.0 and turned
            # every -0.0 result into +0.0 (seen on an H100; the interpreter kept it)
            text = f"tl.where(tl.full({self.ctx.shape}, 1, tl.int1), {name}, {name})"
        else:
            text = f"{name} + tl.full({self.ctx.shape}, 0, {tl_t})"
        out = self.body.assign(text)
        self.memo[key] = out
        return out

    def value(self, expr: Expr) -> str:
        """Source text (a name or literal) holding the value of ``expr``."""
        if expr in self.memo:
            return self.memo[expr]
        # Operands first, children before parents (no recursion: expressions can be thousands of
        # nodes deep); each node's own rule below then finds its operands in the memo.
        if isinstance(expr, (Op, Cast, Load)):
            for n in post_order(expr, lambda n: n in self.memo):
                if n is not expr:
                    self.value(n)
        if isinstance(expr, Const):
            text = literal(expr.value, expr.dtype)
            if expr.dtype is DType.f64 or expr.dtype is DType.i64 and not -2**31 <= int(expr.value) < 2**31:
                text = self.body.assign(f"tl.full([1], {text}, {ops.TL_DTYPE[expr.dtype]})", "c")
            else:
                self.literals.add(text)
            self.memo[expr] = text
            return text
        if isinstance(expr, Var):
            if expr.dim not in self.ctx.vars:
                raise ValueError(f"loop variable {expr.dim} is not available here")
            return self.ctx.vars[expr.dim]
        if isinstance(expr, Ref):
            if expr.stage not in self.ctx.refs:
                raise ValueError(f"Ref({expr.stage}) is not available here")
            return self.ctx.refs[expr.stage]
        if isinstance(expr, Load):
            text = self._load(expr)
        elif isinstance(expr, Cast):
            text = self._cast(expr)
        elif isinstance(expr, Op):
            text = self._op(expr)
        else:
            raise TypeError(f"not an expression: {expr!r}")
        name = self.body.assign(text)
        self.memo[expr] = name
        return name

    def _load(self, e: Load) -> str:
        if not 0 <= e.buf < len(self.ctx.inputs):
            raise ValueError(f"Load from input {e.buf}, kernel has {len(self.ctx.inputs)} inputs")
        index = self.index(e.index)
        text = f"tl.load({self.ctx.inputs[e.buf]} + {index}, mask={self.ctx.mask}, other=0)"
        if e.dtype in (DType.f16, DType.bf16):
            text += ".to(tl.float32)"
        return text

    def index(self, e: Expr) -> str:
        """An index expression as a tensor of exactly the block shape (a masked pointer
        must have the mask's shape, whichever loop variables the index uses)."""
        key = ("index", e)
        if key not in self.memo:
            name = self.value(e)
            if name in self.literals:
                text = f"tl.full({self.ctx.shape}, {name}, {self.ctx.index_tl})"
            else:
                text = f"{name} + tl.full({self.ctx.shape}, 0, {self.ctx.index_tl})"
            self.memo[key] = self.body.assign(text, "i")
        return self.memo[key]

    def _cast(self, e: Cast) -> str:
        a = self.value(e.arg)
        src, dst = e.arg.dtype, e.dtype
        if a in self.literals:  # a Python literal has no .to(): make it a tensor of its dtype first
            a = f"tl.full([1], {a}, {ops.compute_tl(src)})"
        if dst is DType.bool:
            return f"{a} != 0"
        if dst in (DType.f16, DType.bf16):
            return ops.round_to(dst, f"{a}.to(tl.float32)")
        if src is DType.bool and dst.is_int:
            return f"{a}.to(tl.int32).to({ops.TL_DTYPE[dst]})"
        return f"{a}.to({ops.TL_DTYPE[dst]})"

    def _check(self, e: Op) -> str:
        """``check(ok, value, code)``: lanes where ``ok`` is false store ``code`` into the kernel's
        ``errors`` word (:data:`ERRORS`, a one-element i32 buffer); the value passes through.
        Lanes store the same constant, and a failed check of another kind stores another non-zero
        code, so plain masked stores never lose a failure."""
        ok = self.tensor(e.args[0])
        shape, itl, code = self.ctx.shape, self.ctx.index_tl, int(e.args[2].value)
        self.body.line(f"tl.store({ERRORS} + tl.full({shape}, 0, {itl}), tl.full({shape}, {code}, tl.int32), "
                       f"mask={self.ctx.mask} & ({ok} == 0))")
        return self.value(e.args[1])

    def _op(self, e: Op) -> str:
        if e.op == "check":
            return self._check(e)
        operand = e.args[1].dtype if e.op == "where" else e.args[0].dtype
        args = [self.value(a) for a in e.args]
        for i, a in enumerate(e.args):
            # helper functions need tensors; Triton builtins need at least one tensor operand
            if args[i] in self.literals and (e.op in ops.HELPER_OPS or i == 0 and all(t in self.literals for t in args)):
                args[i] = f"tl.full([1], {args[i]}, {ops.compute_tl(a.dtype)})"
        text = ops.handler(e.op, operand)(*args)
        if e.dtype in (DType.f16, DType.bf16):
            text = ops.round_to(e.dtype, f"({text}).to(tl.float32)")
        return text
