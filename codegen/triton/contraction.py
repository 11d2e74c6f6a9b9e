"""Contraction kernels -> Triton: matmul with ``tl.dot``, conv2d as implicit GEMM, pooling.

Matmul and conv tile the output in ``[BM, BN]`` blocks, accumulate in float32
(or the kernel's ``acc_dtype``) over ``BK``-wide slices of the reduction, and run
the pointwise epilogue on the accumulator tile before storing it. Float32
operands use ``input_precision="ieee"`` (no TF32), matching PyTorch's default.
"""
from __future__ import annotations

from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import ConvKernel, MatmulKernel, PoolKernel
from minicomp.codegen.triton import ops
from minicomp.codegen.triton.emit import Body, Context, ExprEmitter
from minicomp.codegen.triton.launch import KernelSource, matmul_config, pointwise_config
from minicomp.codegen.triton.loops import emit_store, index_type, program_id, signature, unflatten


def _acc_tl(kernel) -> str:
    return ops.compute_tl(kernel.acc_dtype)


def _dot(a: str, b: str, da: DType, db: DType, acc: DType) -> str:
    """``a @ b`` of two tiles accumulated in ``acc``: tl.dot where Triton supports it."""
    if acc.compute is DType.f32 and da == db and da is DType.f16:
        return f"tl.dot({a}, {b})"
    if acc.compute is DType.f32 and da == db and da is DType.bf16:
        return f"_dot_bf16({a}, {b})"  # see the prelude: the interpreter mis-multiplies bf16 tiles
    if acc.compute is DType.f32 and da.is_float and db.is_float:
        return f"tl.dot({a}.to(tl.float32), {b}.to(tl.float32), input_precision=\"ieee\")"
    t = ops.compute_tl(acc)  # f64 and integer products: a broadcast multiply-reduce
    return f"tl.reduce({a}.to({t})[:, :, None] * {b}.to({t})[None, :, :], 1, _add)"


def _epilogue(body: Body, kernel, params, vars_: dict[int, str], mask: str, itl: str) -> None:
    refs = {0: "acc"}
    ref_types = {r.dtype for s in kernel.stores for r in _refs(s)}
    if ref_types and all(t in (DType.f16, DType.bf16) for t in ref_types):
        body.line(f"acc = {ops.round_to(next(iter(ref_types)), 'acc')}")
    inputs = [p for p, _ in params[:len(kernel.inputs)]]
    outputs = [p for p, _ in params[len(kernel.inputs):]]
    em = ExprEmitter(body, Context(vars_, refs, inputs, mask, "[BM, BN]", itl))
    body.line("# epilogue")
    for st in kernel.stores:
        emit_store(em, st, outputs, [b.type.dtype for b in kernel.outputs], mask)


def _refs(store):
    from minicomp.ir.kernel import Ref
    from minicomp.codegen.triton.emit import uses
    return uses(store.value, Ref) + uses(store.index, Ref)


def emit_matmul(k: MatmulKernel, name: str) -> KernelSource:
    """Batched C = epilogue(A @ B): program (tile, batch) computes one [BM, BN] tile."""
    cfg, alts = matmul_config(k.m, k.n, k.k)
    head, params = signature(k, name, ["BM", "BN", "BK"])
    itl = index_type(k)
    body = Body()
    nb = len(k.batch)
    body.line(f"pid = {program_id(itl)}")
    body.line(f"rm = (pid // (({k.n} + BN - 1) // BN)) * BM + tl.arange(0, BM)")
    body.line(f"rn = (pid % (({k.n} + BN - 1) // BN)) * BN + tl.arange(0, BN)")
    body.line(f"pb = {program_id(itl, 1)}")
    bvars = unflatten(body, "pb", k.batch, 0, set(range(nb)))
    a_base = " + ".join([str(k.a.offset)] + [f"{bvars[d]} * {k.a.strides[d]}" for d in range(nb)])
    b_base = " + ".join([str(k.b.offset)] + [f"{bvars[d]} * {k.b.strides[d]}" for d in range(nb)])
    sam, sak = k.a.strides[nb], k.a.strides[nb + 1]
    sbk, sbn = k.b.strides[nb], k.b.strides[nb + 1]
    da, db = k.inputs[k.a.buf].type.dtype, k.inputs[k.b.buf].type.dtype
    body.line(f"acc = tl.full([BM, BN], 0, {_acc_tl(k)})")
    body.line(f"for k0 in range(0, {k.k}, BK):")
    body.line("    rk = k0 + tl.arange(0, BK)")
    body.line(f"    a = tl.load(in{k.a.buf} + {a_base} + rm[:, None] * {sam} + rk[None, :] * {sak}, "
              f"mask=(rm[:, None] < {k.m}) & (rk[None, :] < {k.k}), other=0)")
    body.line(f"    b = tl.load(in{k.b.buf} + {b_base} + rk[:, None] * {sbk} + rn[None, :] * {sbn}, "
              f"mask=(rk[:, None] < {k.k}) & (rn[None, :] < {k.n}), other=0)")
    body.line(f"    acc += {_dot('a', 'b', da, db, k.acc_dtype)}")
    body.line(f"mask = (rm[:, None] < {k.m}) & (rn[None, :] < {k.n})")
    vars_ = {**bvars, nb: "rm[:, None]", nb + 1: "rn[None, :]"}
    _epilogue(body, k, params, vars_, "mask", itl)
    grid = f"(triton.cdiv({k.m}, BM) * triton.cdiv({k.n}, BN), {max(prod(k.batch), 1)})"
    empty = k.m * k.n * prod(k.batch) == 0
    return KernelSource(name, head + "\n" + body.text(), params, cfg, grid, alts, empty=empty)


def emit_conv(k: ConvKernel, name: str) -> KernelSource:
    """Conv2d as implicit GEMM per group: rows (n, oh, ow), columns cout, reduction (ci, kh, kw)."""
    m, ng, kg = k.n * k.oh * k.ow, k.cout // k.groups, (k.cin // k.groups) * k.kh * k.kw
    cfg, alts = matmul_config(m, ng, kg)
    head, params = signature(k, name, ["BM", "BN", "BK"])
    itl = index_type(k)
    xs, ws = k.x.strides, k.weight.strides
    (sh, sw), (ph, pw), (dh, dw) = k.stride, k.padding, k.dilation
    body = Body()
    body.line(f"pid = {program_id(itl)}")
    body.line(f"g = {program_id(itl, 1)}")
    body.line(f"rm = (pid // (({ng} + BN - 1) // BN)) * BM + tl.arange(0, BM)")
    body.line(f"rn = (pid % (({ng} + BN - 1) // BN)) * BN + tl.arange(0, BN)")
    body.line(f"on = rm // {k.oh * k.ow}")
    body.line(f"oh = (rm // {k.ow}) % {k.oh}")
    body.line(f"ow = rm % {k.ow}")
    body.line(f"co = g * {ng} + rn")
    body.line(f"acc = tl.full([BM, BN], 0, {_acc_tl(k)})")
    body.line(f"for k0 in range(0, {kg}, BK):")
    body.indent += 1
    body.line("rk = k0 + tl.arange(0, BK)")
    body.line(f"ci = rk // {k.kh * k.kw}")
    body.line(f"kh = (rk // {k.kw}) % {k.kh}")
    body.line(f"kw = rk % {k.kw}")
    body.line(f"ih = oh[:, None] * {sh} - {ph} + kh[None, :] * {dh}")
    body.line(f"iw = ow[:, None] * {sw} - {pw} + kw[None, :] * {dw}")
    body.line(f"xm = (rm[:, None] < {m}) & (rk[None, :] < {kg}) & (ih >= 0) & (ih < {k.h}) & (iw >= 0) & (iw < {k.w})")
    body.line(f"a = tl.load(in{k.x.buf} + {k.x.offset} + on[:, None] * {xs[0]} + (g * {k.cin // k.groups} + ci[None, :]) * {xs[1]}"
              f" + ih * {xs[2]} + iw * {xs[3]}, mask=xm, other=0)")
    body.line(f"b = tl.load(in{k.weight.buf} + {k.weight.offset} + co[None, :] * {ws[0]} + ci[:, None] * {ws[1]}"
              f" + kh[:, None] * {ws[2]} + kw[:, None] * {ws[3]}, mask=(rk[:, None] < {kg}) & (rn[None, :] < {ng}), other=0)")
    dx, dwt = k.inputs[k.x.buf].type.dtype, k.inputs[k.weight.buf].type.dtype
    body.line(f"acc += {_dot('a', 'b', dx, dwt, k.acc_dtype)}")
    body.indent -= 1
    body.line(f"mask = (rm[:, None] < {m}) & (rn[None, :] < {ng})")
    vars_ = {0: "on[:, None]", 1: "co[None, :]", 2: "oh[:, None]", 3: "ow[:, None]"}
    _epilogue(body, k, params, vars_, "mask", itl)
    grid = f"(triton.cdiv({m}, BM) * triton.cdiv({ng}, BN), {k.groups})"
    return KernelSource(name, head + "\n" + body.text(), params, cfg, grid, alts, empty=m * ng == 0)


def emit_pool(k: PoolKernel, name: str) -> KernelSource:
    """Max/avg pooling: one lane per output point, a static loop over the window."""
    if k.op not in ("max", "avg"):
        raise ValueError(f"unknown pooling op {k.op!r}")
    numel = k.n * k.c * k.oh * k.ow
    cfg, alts = pointwise_config(numel)
    head, params = signature(k, name, ["BLOCK"])
    itl = index_type(k)
    acc_dt = k.acc_dtype.compute
    xs = k.x.strides
    (sh, sw), (ph, pw), (dh, dw) = k.stride, k.padding, k.dilation
    body = Body()
    body.line(f"offs = {program_id(itl)} * BLOCK + tl.arange(0, BLOCK)")
    body.line(f"mask = offs < {numel}")
    v = unflatten(body, "offs", (k.n, k.c, k.oh, k.ow), 0, {0, 1, 2, 3})
    ident = ops.reduce_identity("max", acc_dt) if k.op == "max" else "0"
    body.line(f"acc = tl.full([BLOCK], {ident}, {ops.TL_DTYPE[acc_dt]})")
    body.line(f"for i in tl.static_range({k.kernel[0]}):")
    body.line(f"    for j in tl.static_range({k.kernel[1]}):")
    body.indent += 2
    body.line(f"ih = {v[2]} * {sh} - {ph} + i * {dh}")
    body.line(f"iw = {v[3]} * {sw} - {pw} + j * {dw}")
    body.line(f"m = mask & (ih >= 0) & (ih < {k.h}) & (iw >= 0) & (iw < {k.w})")
    body.line(f"x = tl.load(in{k.x.buf} + {k.x.offset} + {v[0]} * {xs[0]} + {v[1]} * {xs[1]} + ih * {xs[2]} + iw * {xs[3]}, "
              f"mask=m, other=0).to({ops.TL_DTYPE[acc_dt]})")
    if k.op == "max":
        body.line(f"acc = tl.where(m, {ops.combine_fn('max', acc_dt)}(acc, x), acc)")
    else:
        body.line("acc += x")
    body.indent -= 2
    if k.op == "avg":
        kh, kw = k.kernel
        body.line(f"hs = {v[2]} * {sh} - {ph}")
        body.line(f"ws = {v[3]} * {sw} - {pw}")
        body.line(f"he = tl.minimum(hs + {kh}, {k.h + ph})")
        body.line(f"we = tl.minimum(ws + {kw}, {k.w + pw})")
        if k.divisor != 0:  # nonzero, negative too, overrides the count (as in PyTorch)
            count = str(k.divisor)
        elif k.count_include_pad:
            count = "(he - hs) * (we - ws)"
        else:
            count = f"(tl.minimum(he, {k.h}) - tl.maximum(hs, 0)) * (tl.minimum(we, {k.w}) - tl.maximum(ws, 0))"
        body.line(f"acc = acc / ({count})")
    vars_ = {d: f"{v[d]}" for d in range(4)}
    refs = {0: "acc"}
    inputs = [p for p, _ in params[:len(k.inputs)]]
    outputs = [p for p, _ in params[len(k.inputs):]]
    em = ExprEmitter(body, Context(vars_, refs, inputs, "mask", "[BLOCK]", itl))
    body.line("# epilogue")
    for st in k.stores:
        emit_store(em, st, outputs, [b.type.dtype for b in k.outputs], "mask")
    return KernelSource(name, head + "\n" + body.text(), params, cfg, f"(triton.cdiv({numel}, BLOCK),)",
                        alts, empty=numel == 0)
