"""Structured control flow helpers over IRBuilder: counted loops, accumulating loops, entry-block allocas."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from llvmlite import ir

from minicomp.codegen.llvm.types import I64, PTR


def as_i64(v: int | ir.Value) -> ir.Value:
    """An i64 value from a Python int or an existing i64 value."""
    return ir.Constant(I64, v) if isinstance(v, int) else v


class _LoopID(ir.values.MDValue):
    """A distinct, self-referential loop-ID node ``!N = distinct !{!N, props...}`` (``!llvm.loop``).

    llvmlite's ``Module.add_metadata`` uniques nodes by operands and cannot build the
    self-reference LLVM requires of a loop ID, hence this subclass (identity equality).
    """

    def __init__(self, module: ir.Module, props: list[ir.values.MDValue]) -> None:
        super().__init__(module, [], name=str(len(module.metadata)))
        self.operands = (self, *props)

    def descr(self, buf: list[str]) -> None:
        buf.append("distinct ")
        super().descr(buf)

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__


def loop_id(module: ir.Module, *, unroll: bool = True, vectorize: bool = True) -> ir.values.MDValue | None:
    """A fresh ``!llvm.loop`` node that disables LLVM's unrolling (``unroll=False``; full
    unrolling included) and/or vectorization and interleaving (``vectorize=False``) of the
    loop it is attached to; None when both are allowed (nothing to attach)."""
    props = []
    if not unroll:
        props.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")]))
    if not vectorize:
        props.append(module.add_metadata([ir.MetaDataString(module, "llvm.loop.vectorize.enable"),
                                          ir.Constant(ir.IntType(1), 0)]))
    return _LoopID(module, props) if props else None


@contextlib.contextmanager
def for_range(b: ir.IRBuilder, start: int | ir.Value, stop: int | ir.Value, step: int = 1,
              name: str = "i", *, unroll: bool = True, vectorize: bool = True) -> Iterator[ir.Value]:
    """``for (i = start; i < stop; i += step)``: the body is emitted inside the ``with``.

    After the block the builder sits after the loop. The induction variable is a
    canonical i64 phi (what LLVM's vectorizer expects). ``unroll=False`` /
    ``vectorize=False`` mark the loop so that LLVM leaves it rolled / scalar (for
    cold loops whose unrolled copies would only cost compile time; see :func:`loop_id`).
    """
    start, stop = as_i64(start), as_i64(stop)
    pre = b.block
    header = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    exit_ = b.append_basic_block(f"{name}.exit")
    b.branch(header)
    b.position_at_end(header)
    iv = b.phi(I64, name=name)
    iv.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", iv, stop), body, exit_)
    b.position_at_end(body)
    yield iv
    nxt = b.add(iv, ir.Constant(I64, step), name=f"{name}.next", flags=("nsw",))
    iv.add_incoming(nxt, b.block)
    latch = b.branch(header)
    md = loop_id(b.module, unroll=unroll, vectorize=vectorize)
    if md is not None:
        latch.set_metadata("llvm.loop", md)
    b.position_at_end(exit_)


def carried_loop(b: ir.IRBuilder, name: str, stop: int | ir.Value, step: int, inits: Sequence[ir.Value],
                 body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], *, unroll: bool = True) -> list[ir.Value]:
    """``i = 0; do { vals = body(i, vals); i += step } while (i < stop)``: the register-tile loop.

    ``vals`` start as ``inits`` and are carried in phis (accumulators stay in registers);
    returns their values after the last iteration, with the builder after the loop. The
    body runs at least once: callers guarantee ``stop >= step``. ``unroll=False`` keeps
    LLVM from unrolling a body that is unrolled already (see :func:`loop_id`).
    """
    pre = b.block
    loop = b.append_basic_block(f"{name}.loop")
    done = b.append_basic_block(f"{name}.done")
    b.branch(loop)
    b.position_at_end(loop)
    iv = b.phi(I64, name="p")
    iv.add_incoming(ir.Constant(I64, 0), pre)
    carried = [b.phi(v.type) for v in inits]
    for phi, v in zip(carried, inits):
        phi.add_incoming(v, pre)
    new = body(iv, carried)
    nxt = b.add(iv, ir.Constant(I64, step))
    iv.add_incoming(nxt, b.block)
    for phi, v in zip(carried, new):
        phi.add_incoming(v, b.block)
    latch = b.cbranch(b.icmp_signed("<", nxt, as_i64(stop)), loop, done)
    md = loop_id(b.module, unroll=unroll)
    if md is not None:
        latch.set_metadata("llvm.loop", md)
    b.position_at_end(done)
    return list(new)


def outlined(b: ir.IRBuilder, name: str, args: Sequence[ir.Value],
             emit: Callable[[ir.IRBuilder, list[ir.Value]], None]) -> None:
    """Emit ``emit(builder, params)`` as the body of an internal, never-inlined function
    ``void name(args...)`` and call it at ``b`` with ``args``.

    For cold-ish code next to a register-tile loop (a matmul's fused epilogue): LLVM hoists
    loop-invariant constants (an erf's polynomial coefficients) to the top of a function,
    where they would hold vector registers through the tile loop and force its accumulators
    to spill. A parameter receiving a ``noalias`` argument of the caller is ``noalias`` too.
    """
    module = b.module
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [a.type for a in args]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        for param, a in zip(fn.args, args):
            if isinstance(a, ir.Argument) and "noalias" in a.attributes:
                param.add_attribute("noalias")
        inner = ir.IRBuilder(fn.append_basic_block("entry"))
        emit(inner, list(fn.args))
        inner.ret_void()
    b.call(fn, list(args))


def splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType) -> ir.Value:
    """The vector of type ``vt`` with every lane ``x`` (insertelement + zero-mask shuffle)."""
    undef = ir.Constant(vt, ir.Undefined)
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count)
    return b.shuffle_vector(b.insert_element(undef, x, ir.Constant(I64, 0)), undef, mask)


def entry_alloca(b: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    """An ``alloca`` in the function's entry block (promotable to a register by SROA)."""
    fn = b.function
    with b.goto_block(fn.entry_basic_block):
        first = fn.entry_basic_block.instructions
        if first:
            b.position_before(first[0])
        slot = b.alloca(ty, name=name)
    slot.type = PTR  # opaque pointer: llvmlite would otherwise print a typed `T*`
    return slot


def if_then(b: ir.IRBuilder, cond: ir.Value):
    """``if cond: ...`` as a context manager (thin alias of IRBuilder.if_then)."""
    return b.if_then(cond)
