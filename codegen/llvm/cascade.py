"""Floating sums over long rows: blocked, then cascaded, so the error stays near eager's.

A plain loop ``acc += v`` over n float32 values can lose about n rounding errors: the
vectorizer's partial sums (one per vector lane, a few vectors) only divide n by 32 or so,
too little for millions of values (docs/reliability.md, "Accuracy of reductions", has the
figures). PyTorch's CPU kernels sum in a cascade instead, and so does this:

1. the inner loop space is cut into *chunks* of about :data:`CHUNK` consecutive points (whole
   inner rows when they are short, blocks of the dim that makes them long otherwise); each
   chunk sums into a fresh accumulator in a loop LLVM vectorizes (``reassoc`` adds);
2. chunk sums are pushed into a cascade of ``levels`` accumulators: level 0 receives every
   chunk, and after every :data:`FANIN`**k chunks level k-1 is added into level k and
   cleared, so no accumulator adds more than FANIN values (a counter decides, once per chunk);
3. the result is level 0 + level 1 + ... in that order.

A value thus meets about CHUNK/32 + FANIN * levels roundings on its way to the result, not
n/32: the error grows with log(n). The cascade's adds carry no fast-math flags (LLVM must
keep their order); only the chunk loop's add is ``reassoc``. Rows of at most CHUNK points
keep the plain loop (one chunk: the code is the same as without a cascade).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from llvmlite import ir

from minicomp.codegen.llvm.control import entry_alloca, for_range
from minicomp.codegen.llvm.types import I64

#: Points per chunk: short enough that each vector lane adds only a few dozen values, long
#: enough that the per-chunk work (a horizontal vector sum, one counter test) is noise.
CHUNK = 2048
#: Values each cascade level adds before it is passed up (a power of two: the test is a mask).
FANIN = 16


@dataclass(frozen=True)
class Plan:
    """How a sum over ``inner`` (row-major) is chunked: inner dim ``dim`` is cut into blocks of
    ``block`` indices (dims after it run whole inside a chunk); ``levels`` cascade levels."""

    inner: tuple[int, ...]
    dim: int
    block: int
    levels: int

    @property
    def blocks(self) -> int:
        """Blocks of the cut dim."""
        return -(-self.inner[self.dim] // self.block)


def plan(inner: tuple[int, ...]) -> Plan | None:
    """The chunking of a sum over ``inner``, or None when the plain loop is already one chunk."""
    if prod(inner) <= CHUNK:
        return None
    dim = max(d for d in range(len(inner)) if prod(inner[d:]) > CHUNK)
    block = max(1, CHUNK // prod(inner[dim + 1:]))
    chunks = prod(inner[:dim]) * -(-inner[dim] // block)
    levels = 1
    while FANIN ** levels < chunks:
        levels += 1
    return Plan(tuple(inner), dim, block, levels)


def emit_sum(b: ir.IRBuilder, p: Plan, outer_vars: list[ir.Value], zero: ir.Constant,
             value: Callable[[list[ir.Value]], ir.Value],
             fold: Callable[[ir.Value, ir.Value], ir.Value]) -> ir.Value:
    """Emit the chunked, cascaded sum of ``value(loop vars)`` over the inner points of ``p``.

    ``zero`` is the sum's identity (register type), ``fold(acc, v)`` the chunk loop's add.
    Returns the total; the builder is left after the loops.
    """
    ty = zero.type
    levels = [entry_alloca(b, ty, name=f"lvl{k}") for k in range(p.levels)]
    chunk = entry_alloca(b, ty, name="chunk")
    count = entry_alloca(b, I64, name="chunks")
    for slot in levels:
        b.store(zero, slot)
    b.store(ir.Constant(I64, 0), count)
    nouter = len(outer_vars)

    def within_chunk(vs: list[ir.Value]) -> None:
        d = len(vs) - nouter
        if d == len(p.inner):
            b.store(fold(b.load(chunk, typ=ty), value(vs)), chunk)
            return
        with for_range(b, 0, p.inner[d], name=f"r{d}") as iv:
            within_chunk(vs + [iv])

    def loops(vs: list[ir.Value]) -> None:
        d = len(vs) - nouter
        if d < p.dim:
            with for_range(b, 0, p.inner[d], name=f"r{d}") as iv:
                loops(vs + [iv])
            return
        with for_range(b, 0, p.blocks, name="blk") as blk:
            lo = b.mul(blk, ir.Constant(I64, p.block))
            hi = b.add(lo, ir.Constant(I64, p.block))
            if p.inner[p.dim] % p.block:
                n = ir.Constant(I64, p.inner[p.dim])
                hi = b.select(b.icmp_signed("<", hi, n), hi, n)
            b.store(zero, chunk)
            with for_range(b, lo, hi, name=f"r{d}") as iv:
                within_chunk(vs + [iv])
            _push(b, levels, count, b.load(chunk, typ=ty), zero)

    loops(list(outer_vars))
    total = b.load(levels[0], typ=ty)
    for slot in levels[1:]:
        total = b.fadd(total, b.load(slot, typ=ty))
    return total


def _push(b: ir.IRBuilder, levels: list[ir.Value], count: ir.Value, v: ir.Value, zero: ir.Constant) -> None:
    """Add chunk sum ``v`` to level 0; after every FANIN**k chunks carry level k-1 into level k."""
    ty = v.type
    b.store(b.fadd(b.load(levels[0], typ=ty), v), levels[0])
    n = b.add(b.load(count, typ=I64), ir.Constant(I64, 1))
    b.store(n, count)

    def carry(k: int) -> None:
        # nested: a multiple of FANIN**k is a multiple of FANIN**(k-1), so each test sits inside
        # the previous one and the common case (no carry) costs one branch
        if k == len(levels):
            return
        full = b.icmp_signed("==", b.and_(n, ir.Constant(I64, FANIN ** k - 1)), ir.Constant(I64, 0))
        with b.if_then(full, likely=False):
            b.store(b.fadd(b.load(levels[k], typ=ty), b.load(levels[k - 1], typ=ty)), levels[k])
            b.store(zero, levels[k - 1])
            carry(k + 1)
    carry(1)
