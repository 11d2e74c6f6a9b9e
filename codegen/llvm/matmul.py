"""MatmulKernel -> LLVM: the plain path and the fast paths, one emitter per path.

``C[batch..., i, j] = sum_p A[batch..., i, p] * B[batch..., p, j]`` in the accumulator
dtype, then the kernel's epilogue stores (fused pointwise ops) per element. The paths, in
the order :data:`PATHS` (read by :mod:`.dispatch`) tries them:

* ``ptile`` (:mod:`.matmul_panel`) -- a Linear's weight read at call time (B unit stride along
  k): B packed per column block into a stack panel, then row tiles.
* ``dtile`` (:mod:`.matmul_tiles`) -- small f32/f64 products, A and B unit stride along k:
  register tiles of dot products read in place.
* ``rtile`` (:mod:`.matmul_tiles`) -- small f32/f64 products, B unit stride along n (attention's
  ``@ v``, constant weights the layout pass stored ``[k, n]``): register tiles of row updates.
* ``gemv`` (:mod:`.matmul_gemv`) -- at most GEMV_MAX_ROWS rows, A and B unit stride along k.
* ``packed`` (:mod:`.matmul_packed`) -- large products: B packed into panels, a SIMD micro-kernel.
* ``axpy`` (:mod:`.matmul_simple`) -- small products with B contiguous along n: row updates.
* ``plain`` (:mod:`.matmul_simple`) -- one dot product per output element: any dtype, strides,
  broadcast batches and size-0/1 dims. The reference the others are tested against.

Every path computes the same sums (up to floating-point summation order).
"""
from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm import matmul_gemv, matmul_simple
from minicomp.codegen.llvm.kernelfn import kernel_function
from minicomp.codegen.llvm.matmul_common import GemmInfo
from minicomp.codegen.llvm.matmul_packed import MR, emit_packed
from minicomp.codegen.llvm.matmul_panel import panel_items, panel_tile_body, panel_tiles_apply
from minicomp.codegen.llvm.matmul_simple import SIMPLE_ROW_LIMIT
from minicomp.codegen.llvm.matmul_tiles import (DT_COLS, DT_MAX_SHARED_ROWS, DT_ROWS, RT_MAX_B_BYTES, RT_ROWS,
                                                 dot_tile_body, dot_tiles_apply, row_tile_body, row_tile_items,
                                                 row_tiles_apply)
from minicomp.codegen.llvm.parallel import PARALLEL_MIN_WORK, dynamic_for, make_body, parallel_for
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import MatmulKernel

__all__ = ["PATHS", "kn_weight", "DT_COLS", "DT_ROWS", "RT_ROWS"]

#: A path's code at builder ``b`` of the kernel function ``fn``: (b, fn, g, name, noalias, threads).
PathBody = Callable[[ir.IRBuilder, ir.Function, GemmInfo, str, bool, int], None]


def kn_weight(rows: int, m: int, n: int, k: int, dtype: DType) -> bool:
    """Whether a linear of ``rows`` output rows (``m`` per batch) should read its constant weight
    ``W [n, k]`` stored as ``[k, n]`` (the layout pass's ``kn_weight`` option).

    True where the product then takes the row-tile path (:func:`.matmul_tiles.row_tiles_apply`:
    broadcast A, vectors of B along n, no horizontal sums) instead of the dot tiles that read
    W [n, k]. A GEMV (at most GEMV_MAX_ROWS rows) reads W's rows along k and keeps [n, k].
    """
    if dtype not in (DType.f32, DType.f64) or rows <= matmul_gemv.GEMV_MAX_ROWS or m < RT_ROWS or k < 1:
        return False
    return k * n * dtype.itemsize <= RT_MAX_B_BYTES and rows <= DT_MAX_SHARED_ROWS


def _rows(g: GemmInfo) -> int:
    return g.nbatch * g.k.m


def _is_packed(g: GemmInfo) -> bool:
    """Large enough for the packed GEMM (or too wide for the stack rows of the small paths)."""
    k = g.k
    big = k.k > 0 and _rows(g) >= MR and k.n >= g.W and k.m * k.n * k.k >= 32 ** 3
    return big or (k.n > SIMPLE_ROW_LIMIT and k.k > 0)


def _few_rows(g: GemmInfo) -> bool:
    return _rows(g) <= matmul_gemv.GEMV_MAX_ROWS


def _threads(g: GemmInfo, threads: int) -> int:
    """Threads for this product: one below twice PARALLEL_MIN_WORK multiply-adds."""
    k = g.k
    return threads if g.nbatch * k.m * k.n * max(k.k, 1) >= PARALLEL_MIN_WORK * 2 else 1


def _dynamic(suffix: str, body, items) -> PathBody:
    """A path whose items run under :func:`.parallel.dynamic_for` with ``body(g)`` over ``items(g)``."""
    def emit(b, fn, g, name, noalias, threads):
        dynamic_for(b, f"{name}.{suffix}", list(fn.args), noalias, body(g), items(g), _threads(g, threads))
    return emit


def _gemv(b, fn, g, name, noalias, threads):
    k = g.k
    work = g.nbatch * k.m * k.n * max(k.k, 1)
    dynamic_for(b, f"{name}.gemv", list(fn.args), noalias, matmul_gemv.body(g), matmul_gemv.items(g),
                threads if work >= matmul_gemv.GEMV_PARALLEL_WORK else 1)


def _packed(b, fn, g, name, noalias, threads):
    emit_packed(b, fn, g, name, noalias, _threads(g, threads))


def _axpy(b, fn, g, name, noalias, threads):
    nio = g.nin + len(g.k.outputs)
    body = make_body(b.module, f"{name}.axpy", nio, noalias, matmul_simple.axpy_body(g))
    parallel_for(b, body, list(fn.args), _rows(g), _threads(g, threads))


def _plain(b, fn, g, name, noalias, threads):
    nio = g.nin + len(g.k.outputs)
    body = make_body(b.module, f"{name}.dot", nio, noalias, matmul_simple.dot_body(g))
    parallel_for(b, body, list(fn.args), _rows(g) * g.k.n, _threads(g, threads))


def _emitter(path: PathBody):
    """The kernel emitter ``(module, name, k, noalias, threads) -> ir.Function`` of one path:
    ``void name(ptr inputs..., ptr outputs...)``, empty when C has no elements."""
    def emit(module: ir.Module, name: str, k: MatmulKernel, noalias: bool, threads: int) -> ir.Function:
        g = GemmInfo(k)
        fn = kernel_function(module, name, len(k.inputs) + len(k.outputs), noalias)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if _rows(g) * k.n:
            path(b, fn, g, name, noalias, threads)
        b.ret_void()
        return fn
    return emit


def _applies(rule: Callable[[GemmInfo], bool]) -> Callable[[MatmulKernel], bool]:
    return lambda k: rule(GemmInfo(k))


#: (name, applies(kernel), emit(module, name, kernel, noalias, threads)), in the order tried.
#: The tile paths need more rows than a GEMV; dot tiles at least DT_ROWS rows unless the
#: product is big enough to be packed anyway.
PATHS = (
    ("ptile", _applies(lambda g: not _few_rows(g) and panel_tiles_apply(g)),
     _emitter(_dynamic("ptile", panel_tile_body, panel_items))),
    ("dtile", _applies(lambda g: not _few_rows(g) and dot_tiles_apply(g) and (_is_packed(g) or g.k.m >= DT_ROWS)),
     _emitter(_dynamic("dtile", dot_tile_body, lambda g: g.nbatch * -(-g.k.m // DT_ROWS)))),
    ("rtile", _applies(lambda g: not _few_rows(g) and row_tiles_apply(g)),
     _emitter(_dynamic("rtile", row_tile_body, row_tile_items))),
    ("gemv", _applies(lambda g: not _is_packed(g) and _few_rows(g) and g.unit_k_vectors()), _emitter(_gemv)),
    ("packed", _applies(_is_packed), _emitter(_packed)),
    ("axpy", _applies(lambda g: not (g.k.k == 0 or g.k.b.strides[-2] == 1 or g.k.n == 1 or g.k.n > SIMPLE_ROW_LIMIT)),
     _emitter(_axpy)),
    ("plain", lambda k: True, _emitter(_plain)),
)
