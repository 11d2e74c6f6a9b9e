"""AttentionKernel -> Triton: one program per (block of BM query rows, batch), all keys at once.

The program loads its rows of Q and the whole K^T and V of its batch as tiles, forms the
scores with ``tl.dot`` (float32, ``input_precision="ieee"``), applies the kernel's score
expression, takes the softmax along the keys in registers (padding keys masked to -inf),
multiplies by V and runs the epilogue: P never leaves the program. Where the whole row of
keys does not fit the tiles (:func:`attention_fits`), the pass keeps the three kernels.
"""
from __future__ import annotations

from math import prod

from minicomp.codegen.triton import ops
from minicomp.codegen.triton.contraction import _dot
from minicomp.codegen.triton.emit import Body, Context, ExprEmitter
from minicomp.codegen.triton.launch import Config, KernelSource, pow2, warps_for
from minicomp.codegen.triton.loops import emit_store, index_type, program_id, signature, unflatten
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import AttentionKernel

#: Keys one program holds (padded to a power of 2, as every tile dim is).
MAX_KEYS = 1024
#: Bound (elements) on each tile a program holds: the [BM, keys] scores, K^T [d, keys] and
#: V [keys, e] (64 KiB of float32 each, within an H100's 228 KiB of shared memory per block).
MAX_TILE = 16384


def attention_fits(m: int, n: int, d: int, e: int, dtype: DType) -> bool:
    """This backend has an attention kernel for these sizes: float32, 1..MAX_KEYS keys, and
    K^T and V tiles within MAX_TILE elements."""
    if dtype is not DType.f32 or min(m, n, d, e) < 1 or n > MAX_KEYS:
        return False
    bn = pow2(max(n, 16))
    return bn * pow2(max(d, 16)) <= MAX_TILE and bn * pow2(max(e, 16)) <= MAX_TILE


def _blocks(k: AttentionKernel) -> Config:
    bn, bd, be = (pow2(max(x, 16)) for x in (k.n, k.d, k.e))
    bm = max(16, min(64, pow2(k.m), MAX_TILE // bn))
    return Config((("BM", bm), ("BN", bn), ("BD", bd), ("BE", be)), max(4, warps_for(bm * bn)))


def emit_attention(k: AttentionKernel, name: str) -> KernelSource:
    """Triton source of attention kernel ``k`` (see the module docstring)."""
    if k.acc_dtype is not DType.f32 or any(k.inputs[a.buf].type.dtype is not DType.f32 for a in (k.q, k.k, k.v)):
        raise TypeError(f"attention kernel {k.name}: the Triton template takes float32 Q, K and V")
    cfg = _blocks(k)
    head, params = signature(k, name, ["BM", "BN", "BD", "BE"])
    itl = index_type(k)
    nb = len(k.batch)
    body = Body()
    body.line(f"rm = {program_id(itl)} * BM + tl.arange(0, BM)")
    body.line(f"pb = {program_id(itl, 1)}")
    bvars = unflatten(body, "pb", k.batch, 0, set(range(nb)))

    def base(acc) -> str:
        return " + ".join([f"in{acc.buf}", str(acc.offset)] + [f"{bvars[d]} * {acc.strides[d]}" for d in range(nb)])
    (sqm, sqd), (skd, skn), (svn, sve) = k.q.strides[nb:], k.k.strides[nb:], k.v.strides[nb:]
    body.line("rn = tl.arange(0, BN)")
    body.line("rd = tl.arange(0, BD)")
    body.line("re = tl.arange(0, BE)")
    body.line(f"q = tl.load({base(k.q)} + rm[:, None] * {sqm} + rd[None, :] * {sqd}, "
              f"mask=(rm[:, None] < {k.m}) & (rd[None, :] < {k.d}), other=0)")
    body.line(f"kt = tl.load({base(k.k)} + rd[:, None] * {skd} + rn[None, :] * {skn}, "
              f"mask=(rd[:, None] < {k.d}) & (rn[None, :] < {k.n}), other=0)")
    body.line(f"s = {_dot('q', 'kt', DType.f32, DType.f32, DType.f32)}")
    body.line(f"smask = (rm[:, None] < {k.m}) & (rn[None, :] < {k.n})")
    inputs = [p for p, _ in params[:len(k.inputs)]]
    outputs = [p for p, _ in params[len(k.inputs):]]
    score_vars = {**bvars, nb: "rm[:, None]", nb + 1: "rn[None, :]"}
    em = ExprEmitter(body, Context(score_vars, {0: "s"}, inputs, "smask", "[BM, BN]", itl))
    score = em.tensor(k.score)
    body.line(f"sc = tl.where(rn[None, :] < {k.n}, {score}, float(\"-inf\"))")
    body.line("mx = tl.max(sc, 1)")
    body.line(f"ex = tl.where(rn[None, :] < {k.n}, {ops.handler('exp', DType.f32)('sc - mx[:, None]')}, 0.0)")
    body.line("p = ex / tl.sum(ex, 1)[:, None]")
    body.line(f"v = tl.load({base(k.v)} + rn[:, None] * {svn} + re[None, :] * {sve}, "
              f"mask=(rn[:, None] < {k.n}) & (re[None, :] < {k.e}), other=0)")
    body.line(f"acc = {_dot('p', 'v', DType.f32, DType.f32, DType.f32)}")
    body.line(f"mask = (rm[:, None] < {k.m}) & (re[None, :] < {k.e})")
    out_vars = {**bvars, nb: "rm[:, None]", nb + 1: "re[None, :]"}
    em = ExprEmitter(body, Context(out_vars, {0: "acc"}, inputs, "mask", "[BM, BE]", itl))
    body.line("# epilogue")
    for st in k.stores:
        emit_store(em, st, outputs, [b.type.dtype for b in k.outputs], "mask")
    grid = f"(triton.cdiv({k.m}, BM), {max(prod(k.batch), 1)})"
    return KernelSource(name, head + "\n" + body.text(), params, cfg, grid, [], empty=k.m * k.e * prod(k.batch) == 0)
