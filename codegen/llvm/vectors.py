"""Small vector idioms the register-tile kernels share: masked loads and in-register transposes."""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm.intrinsics import declare, type_suffix
from minicomp.codegen.llvm.types import I32, PTR


def masked_load(b: ir.IRBuilder, ptr: ir.Value, vt: ir.VectorType, lanes: int, align: int) -> ir.Value:
    """The first ``lanes`` elements at ``ptr`` as a ``vt`` vector (the others 0, never read from memory),
    so a tile can read the last partial block of a row without touching memory past its end."""
    mask_t = ir.VectorType(ir.IntType(1), vt.count)
    fn = declare(b.module, f"llvm.masked.load.{type_suffix(vt)}.p0", vt, [PTR, I32, mask_t, vt])
    mask = ir.Constant(mask_t, [int(lane < lanes) for lane in range(vt.count)])
    zero = ir.Constant(vt, [ir.Constant(vt.element, 0.0)] * vt.count)
    return b.call(fn, [ptr, ir.Constant(I32, align), mask, zero])


def transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The columns of the W x W matrix whose rows are ``rows`` (W vectors of W lanes, W a power
    of 2): log2(W) rounds of shuffles, round t swapping the t x t blocks off the diagonal of
    every 2t x 2t block (row i keeps lanes with bit t clear and takes row i + t's, and back).

    Copying a block of a row-major matrix into column-major order this way reads and writes
    whole vectors; an element-by-element copy would gather or scatter."""
    w = len(rows)
    v = list(rows)
    mask_t = ir.VectorType(ir.IntType(32), w)
    t = 1
    while t < w:
        lo = ir.Constant(mask_t, [lane if not lane & t else w + lane - t for lane in range(w)])
        hi = ir.Constant(mask_t, [lane + t if not lane & t else w + lane for lane in range(w)])
        for i in range(w):
            if not i & t:
                v[i], v[i + t] = b.shuffle_vector(v[i], v[i + t], lo), b.shuffle_vector(v[i], v[i + t], hi)
        t *= 2
    return v
