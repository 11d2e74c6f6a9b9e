"""In-place kernel calls: when a kernel may write an output over the bytes of one of its inputs.

(String tests here name kernel kinds, slot kinds and scalar primitives of
:mod:`minicomp.ir.kernel`, never graph ops.)

The memory plan may give a kernel's output the arena bytes of an input that dies
at that kernel. That is correct only when every element of the input is read
before it is overwritten and never read again. :func:`inplace_problem` checks
this on the kernel itself (the lowering's authority, whatever the passes
predicted): a pointwise :class:`LoopKernel` (no inner loops, every stage a
point store) whose aliased output is stored by one stage, at an index that is
one-to-one over the loop space, and which loads the input only at exactly that
index and only in stages up to that store. Then point ``p`` reads element
``e(p)`` and writes element ``e(p)``; no other point touches ``e(p)``, so any
split of the points across threads or vector lanes is safe.

:func:`call_aliases` tells a backend which arguments of a kernel share bytes,
so it can read the aliased input through the output pointer (and keep the
``noalias`` promise for every pointer it dereferences).
"""
from __future__ import annotations

from collections.abc import Iterator

from minicomp.ir.dtypes import DType
from minicomp.ir.expr_walk import post_order
from minicomp.ir.kernel import Cast, Const, Expr, Kernel, Load, LoopKernel, Op, Store, Var
from minicomp.ir.program import Program, Slot


def sub_exprs(e: Expr) -> Iterator[Expr]:
    """``e`` and all its subexpressions (index expressions of loads included), each distinct
    node once (an iterative walk: expressions can be thousands of nodes deep)."""
    return iter(post_order(e))


def same_expr(a: Expr, c: Expr) -> bool:
    """Structural equality that tells -0.0 from 0.0 and 1 from 1.0 (dataclass == does not).

    Iterative, each pair of nodes compared once."""
    stack, done = [(a, c)], set()
    while stack:
        x, y = stack.pop()
        if x is y or (id(x), id(y)) in done:
            continue
        done.add((id(x), id(y)))
        if type(x) is not type(y):
            return False
        if isinstance(x, Const):
            if not (x.dtype is y.dtype and type(x.value) is type(y.value) and repr(x.value) == repr(y.value)):
                return False
        elif isinstance(x, Op):
            if not (x.op == y.op and x.dtype is y.dtype and len(x.args) == len(y.args)):
                return False
            stack.extend(zip(x.args, y.args))
        elif isinstance(x, Cast):
            if x.dtype is not y.dtype:
                return False
            stack.append((x.arg, y.arg))
        elif isinstance(x, Load):
            if not (x.buf == y.buf and x.dtype is y.dtype):
                return False
            stack.append((x.index, y.index))
        elif x != y:
            return False
    return True


def affine(e: Expr) -> tuple[int, dict[int, int]] | None:
    """``e`` as ``c0 + sum(c[d] * Var(d))`` over i64 values, or None when it is not that form."""
    if isinstance(e, Var):
        return (0, {e.dim: 1}) if e.dtype is DType.i64 else None
    if isinstance(e, Const):
        return (e.value, {}) if e.dtype is DType.i64 and type(e.value) is int else None
    if not (isinstance(e, Op) and e.dtype is DType.i64 and e.op in ("add", "sub", "mul")):
        return None
    parts = [affine(a) for a in e.args]
    if any(p is None for p in parts):
        return None
    (c0, t0), (c1, t1) = parts
    if e.op == "mul":
        if t0 and t1:
            return None
        k, (c, t) = (c1, (c0, t0)) if not t1 else (c0, (c1, t1))
        return c * k, {d: v * k for d, v in t.items()}
    sign = 1 if e.op == "add" else -1
    terms = dict(t0)
    for d, v in t1.items():
        terms[d] = terms.get(d, 0) + sign * v
    return c0 + sign * c1, terms


def one_to_one(index: Expr, extents: tuple[int, ...]) -> bool:
    """True when ``index`` takes a different value at every point of the loop space (sufficient test)."""
    aff = affine(index)
    if aff is None:
        return False
    terms = []
    for d, n in enumerate(extents):
        c = abs(aff[1].get(d, 0))
        if n > 1:
            if c == 0:
                return False
            terms.append((c, n))
    reach = 0
    for c, n in sorted(terms):
        if c <= reach:
            return False
        reach += c * (n - 1)
    return True


def inplace_problem(k: Kernel, inp: int, out: int) -> str | None:
    """Why output ``out`` of ``k`` may not overwrite input ``inp`` in place; None when it may."""
    if not (isinstance(k, LoopKernel) and k.kind == "pointwise" and not k.inner
            and all(isinstance(s, Store) and not s.inner for s in k.stages)):
        return f"kernel {k.name} is not a pointwise loop kernel"
    if not (0 <= inp < len(k.inputs) and 0 <= out < len(k.outputs)):
        return f"kernel {k.name} has no input {inp} or output {out}"
    src, dst = k.inputs[inp].type, k.outputs[out].type
    if src.numel != dst.numel:
        return "input and output differ in element count (the input is broadcast)"
    if src.dtype.itemsize != dst.dtype.itemsize:
        return "input and output differ in element sizes"
    writes = [s for s, st in enumerate(k.stages) if st.buf == out]
    if len(writes) != 1:
        return "the output is stored by more than one stage"
    store = k.stages[writes[0]]
    if not one_to_one(store.index, k.outer):
        return "the store index is not one-to-one over the loop space"
    for s, st in enumerate(k.stages):
        for e in (*sub_exprs(st.index), *sub_exprs(st.value)):
            if not (isinstance(e, Load) and e.buf == inp):
                continue
            if s > writes[0]:
                return "the input is read after the output is stored"
            if not same_expr(e.index, store.index):
                return "the input is read at another index than the output is written"
    return None


def slots_overlap(a: Slot, b: Slot) -> bool:
    """Whether two slots may share bytes at run time (arena byte ranges, or the same input/output)."""
    if a.kind != b.kind:
        return False
    if a.kind != "arena":
        return a.index == b.index
    return a.index < b.index + b.type.nbytes and b.index < a.index + a.type.nbytes and \
        a.type.nbytes > 0 and b.type.nbytes > 0


def call_aliases(program: Program, kernel: int) -> dict[int, int] | None:
    """The in-place pairs {input number: output number} shared by every call of ``kernel``.

    ``{}`` when every call passes pairwise disjoint buffers; None when some call
    passes overlapping buffers that are not a legal in-place pair (see
    :func:`inplace_problem`), or when calls disagree: then a backend must assume
    any two pointers may alias.
    """
    k = program.kernels[kernel]
    nin = len(k.inputs)
    found: dict[int, int] | None = None
    for c in program.calls:
        if c.kernel != kernel:
            continue
        slots = [program.slots[s] for s in c.args]
        pairs: dict[int, int] = {}
        for i in range(len(slots)):
            for j in range(i):
                if not slots_overlap(slots[i], slots[j]):
                    continue
                exact = slots[i].index == slots[j].index and slots[i].type.nbytes == slots[j].type.nbytes
                if (not (exact and j < nin <= i) or j in pairs or i - nin in pairs.values()
                        or inplace_problem(k, j, i - nin) is not None):
                    return None
                pairs[j] = i - nin
        if found is not None and pairs != found:
            return None
        found = pairs
    return found if found is not None else {}
