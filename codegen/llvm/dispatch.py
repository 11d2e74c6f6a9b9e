"""Which code each kernel gets: one table, per kernel kind, of the paths that can compile it.

Every kind has a **plain** path: a direct loop nest that reads the kernel description as
written, obviously right and not fast. Some kinds have **fast** paths beside it (register
tiles, packing, blocking). :data:`TABLE` lists them per kind, fast paths first, plain last;
each entry is ``(name, applies(kernel) -> bool, emit(module, symbol, kernel, noalias, threads))``.

The rules, in :func:`choose`:

1. The first path in table order whose ``applies`` holds compiles the kernel. ``applies`` is
   the path's selection rule: the shapes, dtypes and layouts it handles *and* is the best
   choice for among the paths after it (e.g. the dot tiles give way to the packed GEMM when
   the product is big and its copy of B would serve many rows).
2. The plain path is last and applies to every kernel of its kind; so every kernel compiles.
3. A fast path computes what the plain path computes (up to floating-point summation
   order) for every kernel it accepts: ``tests/test_codegen_paths.py`` runs each fast path
   and the plain path on the same kernels and compares them, the plain path as the oracle.

For debugging, the environment variable ``MINICOMP_CODEGEN_PATHS`` overrides rule 1:
``plain`` sends every kernel to its kind's plain path (if a wrong result goes away, a fast
path is wrong); ``kind=path,...`` (e.g. ``matmul=dtile``) uses that path wherever it
applies and the usual choice elsewhere. An unknown kind or path name raises ValueError.
It changes the generated code, so the program cache keys on it (``minicomp.program_cache``).

Loop kernels (pointwise, reductions, row-wise) and pooling have one path each: a loop nest
LLVM vectorizes, already the plain form.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from llvmlite import ir

from minicomp.codegen.llvm import attention, attention_plain, conv, conv_gemm, loops, matmul, pool
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import AttentionKernel, ConvKernel, Kernel, LoopKernel, MatmulKernel, PoolKernel

#: ``emit(module, symbol, kernel, noalias, threads) -> ir.Function``: define the kernel's function.
Emitter = Callable[[ir.Module, str, Kernel, bool, int], ir.Function]
#: One path: ``(name, applies(kernel), emit)``.
Path = tuple[str, Callable[[Kernel], bool], Emitter]

ENV = "MINICOMP_CODEGEN_PATHS"


def _always(_k: Kernel) -> bool:
    return True


def _attention_fast(k: AttentionKernel) -> bool:
    """The blocked kernel: Q, K and V stored in its f32/f64 accumulator dtype, its stack blocks fitting."""
    dt = k.acc_dtype
    stored = all(k.inputs[a.buf].type.dtype is dt for a in (k.q, k.k, k.v))
    return dt in (DType.f32, DType.f64) and stored and attention.attention_fits(k.m, k.n, k.d, k.e, dt)


#: Kernel kind -> (kernel class, its paths in the order tried; the plain path last).
TABLE: dict[str, tuple[type, tuple[Path, ...]]] = {
    "loop": (LoopKernel, (("plain", _always, loops.emit_loop_kernel),)),
    "matmul": (MatmulKernel, matmul.PATHS),
    "conv": (ConvKernel, (("implicit-gemm", conv_gemm.applies, conv_gemm.emit),
                          ("plain", _always, conv.emit_conv_kernel))),
    "pool": (PoolKernel, (("plain", _always, pool.emit_pool_kernel),)),
    "attention": (AttentionKernel, (("blocked", _attention_fast, attention.emit_attention_kernel),
                                    ("plain", _always, attention_plain.emit_plain_attention))),
}


def kind_of(k: Kernel) -> str:
    """The :data:`TABLE` key of kernel ``k``; TypeError for a kernel this backend cannot compile."""
    for kind, (cls, _paths) in TABLE.items():
        if type(k) is cls:
            return kind
    raise TypeError(f"LLVM backend cannot compile kernel {type(k).__name__}")


def forced_paths(text: str | None = None) -> dict[str, str] | None:
    """The override of ``MINICOMP_CODEGEN_PATHS`` (or ``text``): kind -> path name, or None.
    ``plain`` maps every kind to its plain path. ValueError for a malformed value or unknown names."""
    text = os.environ.get(ENV, "") if text is None else text
    text = text.strip()
    if not text:
        return None
    if text == "plain":
        return {kind: "plain" for kind in TABLE}
    forced = {}
    for item in text.split(","):
        kind, sep, name = (part.strip() for part in item.partition("="))
        if not sep or kind not in TABLE:
            raise ValueError(f"{ENV}={text!r}: expected 'plain' or kind=path,... with a kind in {sorted(TABLE)}")
        names = [p[0] for p in TABLE[kind][1]]
        if name not in names:
            raise ValueError(f"{ENV}={text!r}: {kind} has no path {name!r}; its paths: {names}")
        forced[kind] = name
    return forced


def choose(k: Kernel, forced: dict[str, str] | None = None) -> Path:
    """The path that compiles ``k``: the forced one where it applies, else the first that applies."""
    kind = kind_of(k)
    paths = TABLE[kind][1]
    want = (forced or {}).get(kind)
    for path in paths:
        if path[0] == want and path[1](k):
            return path
    for path in paths:
        if path[1](k):
            return path
    raise AssertionError(f"no {kind} path applies to {k.name}: the plain path must apply to every kernel")


def path_names(kind: str) -> list[str]:
    """The path names of ``kind``, in the order tried."""
    return [p[0] for p in TABLE[kind][1]]
