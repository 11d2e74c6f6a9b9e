"""Structured control flow helpers over IRBuilder: counted loops and entry-block allocas."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from llvmlite import ir

from minicomp.codegen.llvm.types import I64, PTR


def as_i64(v: int | ir.Value) -> ir.Value:
    """An i64 value from a Python int or an existing i64 value."""
    return ir.Constant(I64, v) if isinstance(v, int) else v


@contextlib.contextmanager
def for_range(b: ir.IRBuilder, start: int | ir.Value, stop: int | ir.Value, step: int = 1,
              name: str = "i") -> Iterator[ir.Value]:
    """``for (i = start; i < stop; i += step)``: the body is emitted inside the ``with``.

    After the block the builder sits after the loop. The induction variable is a
    canonical i64 phi (what LLVM's vectorizer expects).
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
    b.branch(header)
    b.position_at_end(exit_)


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
