"""MatmulKernel -> LLVM: pick a code path for the product's shape, dtype and layout.

``C[batch..., i, j] = sum_p A[batch..., i, p] * B[batch..., p, j]`` in the accumulator
dtype, then the kernel's epilogue stores (fused pointwise ops) per element. The paths:

* :mod:`.matmul_packed` -- large products: B packed into panels, a SIMD micro-kernel.
* :mod:`.matmul_tiles` -- small f32/f64 products whose B serves few rows: register tiles
  read in place (dot tiles when A and B are unit stride along k, row tiles when B is
  unit stride along n).
* :mod:`.matmul_gemv` -- at most GEMV_MAX_ROWS rows, A and B unit stride along k (f32/f64).
* :mod:`.matmul_simple` -- everything else small: direct dot-product or row-update loops.

Every path computes the same sums (up to floating-point summation order) for any
strides, broadcast batches and size-0/1 dims. :func:`emit_matmul_kernel` is the one
place where a path is chosen.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import matmul_gemv, matmul_simple
from minicomp.codegen.llvm.kernelfn import kernel_function
from minicomp.codegen.llvm.matmul_common import GemmInfo
from minicomp.codegen.llvm.matmul_packed import MR, emit_packed
from minicomp.codegen.llvm.matmul_simple import SIMPLE_ROW_LIMIT
from minicomp.codegen.llvm.matmul_tiles import (DT_COLS, DT_MAX_SHARED_ROWS, DT_ROWS, RT_MAX_B_BYTES, RT_ROWS,
                                                 dot_tile_body, dot_tiles_apply, row_tile_body, row_tile_items,
                                                 row_tiles_apply)
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, dynamic_for, make_body, parallel_for
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import MatmulKernel

__all__ = ["emit_matmul_kernel", "kn_weight", "DT_COLS", "DT_ROWS", "RT_ROWS"]


def kn_weight(rows: int, m: int, n: int, k: int, dtype: DType) -> bool:
    """Whether a linear of ``rows`` output rows (``m`` per batch) should read its constant weight
    ``W [n, k]`` stored as ``[k, n]`` (the layout pass's ``kn_weight`` option).

    True where the product then takes the row-tile path (:func:`.matmul_tiles.row_tiles_apply`:
    broadcast A, vectors of B along n, no horizontal sums). On the transformer block's shapes
    (64 rows, k = 128) row tiles ran 20-30% faster than the dot tiles that read W [n, k]; a GEMV
    (at most GEMV_MAX_ROWS rows) reads W's rows along k and keeps [n, k].
    """
    if dtype not in (DType.f32, DType.f64) or rows <= matmul_gemv.GEMV_MAX_ROWS or m < RT_ROWS or k < 1:
        return False
    return k * n * dtype.itemsize <= RT_MAX_B_BYTES and rows <= DT_MAX_SHARED_ROWS


def emit_matmul_kernel(module: ir.Module, name: str, k: MatmulKernel, noalias: bool, threads: int) -> ir.Function:
    """Define the kernel function ``void name(ptr inputs..., ptr outputs...)`` for matmul ``k`` in ``module``."""
    g = GemmInfo(k)
    nio = len(k.inputs) + len(k.outputs)
    fn = kernel_function(module, name, nio, noalias)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    work = g.nbatch * k.m * k.n * max(k.k, 1)
    th = threads if work >= PARALLEL_MIN_WORK * 2 else 1  # the pooled helper makes a split cheap
    rows = g.nbatch * k.m
    packed = k.k > 0 and rows >= MR and k.n >= g.W and k.m * k.n * k.k >= 32 ** 3
    if rows * k.n == 0:
        b.ret_void()
        return fn
    if not packed and k.n > SIMPLE_ROW_LIMIT:
        packed = k.k > 0
    args = list(fn.args)
    few_rows = rows <= matmul_gemv.GEMV_MAX_ROWS
    if not few_rows and dot_tiles_apply(g) and (packed or k.m >= DT_ROWS):
        dynamic_for(b, f"{name}.dtile", args, noalias, dot_tile_body(g), g.nbatch * -(-k.m // DT_ROWS), th)
    elif not few_rows and row_tiles_apply(g):
        dynamic_for(b, f"{name}.rtile", args, noalias, row_tile_body(g), row_tile_items(g), th)
    elif not packed and few_rows and g.unit_k_vectors():
        dynamic_for(b, f"{name}.gemv", args, noalias, matmul_gemv.body(g), matmul_gemv.items(g),
                    threads if work >= matmul_gemv.GEMV_PARALLEL_WORK else 1)
    elif not packed and (k.k == 0 or k.b.strides[-2] == 1 or k.n == 1 or k.n > SIMPLE_ROW_LIMIT):
        body = make_body(module, f"{name}.dot", nio, noalias, matmul_simple.dot_body(g))
        parallel_for(b, body, args, rows * k.n, th)
    elif not packed:
        body = make_body(module, f"{name}.axpy", nio, noalias, matmul_simple.axpy_body(g))
        parallel_for(b, body, args, rows, th)
    else:
        emit_packed(b, fn, g, name, noalias, th)
    b.ret_void()
    return fn
