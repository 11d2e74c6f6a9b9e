"""A numpy evaluator of kernel descriptions and Programs: the test oracle for lowering.

Vectorized over each kernel's whole loop space. The per-call arena is one byte
array with each intermediate viewed at its planned offset, so a planner that lets
two live buffers overlap gives wrong results here.
"""
from __future__ import annotations

import math

import numpy as np

from minicomp.ir.dtypes import DType, round_to_dtype
from minicomp.ir.kernel import AttentionKernel, Cast, Const, ConvKernel, Load, LoopKernel, MatmulKernel, Op, PoolKernel, Reduce, Ref, Store, Var, check_failure
from minicomp.ir.program import Program

_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _store_dtype(dt: DType) -> np.dtype:
    return np.dtype(np.uint16) if dt is DType.bf16 else dt.np


def _read(buf: np.ndarray, dt: DType, index) -> np.ndarray:
    if buf.size == 0 and not isinstance(index, slice):  # nothing to read: the loop space is empty too
        return np.zeros(np.shape(index), np.float32 if dt is DType.bf16 else buf.dtype)
    raw = buf[index]
    if dt is DType.bf16:
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw


def _write(buf: np.ndarray, dt: DType, index, value) -> None:
    value = np.asarray(value)
    if dt is DType.bf16:
        bits = np.asarray(round_to_dtype(value.astype(np.float32), dt), np.float32).view(np.uint32)
        buf[index] = (bits >> 16).astype(np.uint16)
    else:
        buf[index] = value.astype(dt.np)


def cast(x, dt: DType):
    x = np.asarray(x)
    if dt is DType.bool:
        return x != 0
    if dt.is_int and x.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return np.trunc(x).astype(dt.np)
    return round_to_dtype(x, dt) if dt is DType.bf16 else x.astype(dt.np)


def _prim(op: str, a: list, dt: DType):
    f = np
    if op in ("add", "sub", "mul"):
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](a[0], a[1])
    if op == "div":
        if dt.is_int:
            return np.where(a[1] == 0, 0, np.floor_divide(a[0], np.where(a[1] == 0, 1, a[1])))
        return np.divide(a[0], a[1])
    table = {"neg": f.negative, "abs": f.abs, "max": f.maximum, "min": f.minimum, "pow": f.power,
             "exp": f.exp, "log": f.log, "sqrt": f.sqrt, "sin": f.sin, "cos": f.cos, "tanh": f.tanh,
             "floor": f.floor, "ceil": f.ceil, "lt": f.less, "le": f.less_equal, "gt": f.greater,
             "ge": f.greater_equal, "eq": f.equal, "ne": f.not_equal, "isnan": f.isnan,
             "and": f.logical_and, "or": f.logical_or, "xor": f.logical_xor, "not": f.logical_not}
    if op in table:
        return table[op](*a)
    if op == "erf":
        return _ERF(a[0]).astype(np.asarray(a[0]).dtype)
    if op == "mod":
        return np.mod(a[0], a[1]) if dt.is_int else np.fmod(a[0], a[1])
    if op == "floordiv":
        return np.floor_divide(a[0], a[1])
    if op == "where":
        return np.where(a[0], a[1], a[2])
    if op == "check":  # a failed run-time check raises what the compiled program raises
        if not np.all(a[0]):
            raise check_failure(int(a[2]))
        return a[1]
    raise NotImplementedError(op)


def evaluate(e, env: dict):
    """Value of expression ``e``; env: vars (list of arrays), bufs, refs, in_types."""
    if isinstance(e, Var):
        return env["vars"][e.dim]
    if isinstance(e, Const):
        return np.asarray(e.value, dtype=e.dtype.np)
    if isinstance(e, Load):
        buf, dt = env["bufs"][e.buf]
        idx = np.asarray(evaluate(e.index, env), np.int64)
        return _read(buf, dt, idx)
    if isinstance(e, Cast):
        return cast(evaluate(e.arg, env), e.dtype)
    if isinstance(e, Ref):
        return env["refs"][e.stage]
    if isinstance(e, Op):
        args = [np.asarray(evaluate(x, env)) for x in e.args]
        with np.errstate(all="ignore"):
            out = _prim(e.op, args, e.dtype)
        return cast(out, e.dtype) if e.dtype is not DType.bf16 else round_to_dtype(np.asarray(out, np.float32), e.dtype)
    raise TypeError(e)


def _grid(extents) -> list[np.ndarray]:
    n = len(extents)
    return [np.arange(s, dtype=np.int64).reshape([s if i == d else 1 for i in range(n)]) for d, s in enumerate(extents)]


def _do_store(st: Store, env: dict, outs) -> None:
    if any(v.size == 0 for v in env["vars"]):  # an empty loop runs no iteration
        return
    buf, dt = outs[st.buf]
    idx = np.asarray(evaluate(st.index, env), np.int64)
    val = np.asarray(evaluate(st.value, env))
    shape = np.broadcast_shapes(idx.shape, val.shape, *(v.shape for v in env["vars"]))
    _write(buf, dt, np.broadcast_to(idx, shape).ravel(), np.broadcast_to(val, shape).ravel())


def run_kernel(k, ins: list[tuple[np.ndarray, DType]], outs: list[tuple[np.ndarray, DType]]) -> None:
    """Execute kernel ``k`` on flat buffers (array, dtype)."""
    if isinstance(k, LoopKernel):
        return _run_loop(k, ins, outs)
    acc, ext = _contract(k, ins)
    env = {"vars": _grid(ext), "bufs": ins, "refs": {0: acc}}
    for st in k.stores:
        _do_store(st, env, outs)


def _run_loop(k: LoopKernel, ins, outs) -> None:
    no, ni = len(k.outer), len(k.inner)
    full = _grid(k.outer + k.inner)
    outer_only = _grid(k.outer) + [np.zeros([1] * (no + ni), np.int64) for _ in k.inner]
    outer_only = [v.reshape(v.shape + (1,) * (no + ni - v.ndim)) for v in outer_only]
    refs: dict[int, np.ndarray] = {}
    for s, stage in enumerate(k.stages):
        if isinstance(stage, Reduce) and 0 in k.outer:  # no outer point: nothing to reduce
            refs[s] = np.zeros(tuple(k.outer) + (1,) * ni, np.int64 if stage.op.startswith("arg") else stage.dtype.np)
        elif isinstance(stage, Reduce) and 0 in k.inner:  # empty reduction: the identity, nothing loaded
            ident = {"sum": 0, "prod": 1, "max": -np.inf, "min": np.inf, "argmax": 0, "argmin": 0}[stage.op]
            dt = DType.i64 if stage.op in ("argmax", "argmin") else stage.dtype
            refs[s] = np.full(tuple(k.outer) + (1,) * ni, cast(np.asarray(ident), dt) if dt.is_float else 0,
                              dtype=dt.np)
        elif isinstance(stage, Reduce):
            env = {"vars": full, "bufs": ins, "refs": refs}
            val = np.broadcast_to(np.asarray(evaluate(stage.value, env)), tuple(k.outer) + tuple(k.inner))
            axes = tuple(range(no, no + ni))
            flat = val.reshape(tuple(k.outer) + (-1,))
            with np.errstate(all="ignore"):
                if stage.op in ("argmax", "argmin"):
                    r = (np.argmax if stage.op == "argmax" else np.argmin)(flat, axis=-1) if flat.shape[-1] else \
                        np.zeros(k.outer, np.int64)
                else:
                    fn = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}[stage.op]
                    kw = {}
                    if stage.op in ("max", "min"):
                        dt = np.dtype(stage.dtype.np)
                        lo, hi = (-np.inf, np.inf) if dt.kind == "f" else (np.iinfo(dt).min, np.iinfo(dt).max) \
                            if dt.kind in "iu" else (False, True)
                        kw["initial"] = lo if stage.op == "max" else hi
                    r = fn(val.astype(stage.dtype.np), axis=axes, **kw) if ni else val.astype(stage.dtype.np)
            r = cast(np.asarray(r), stage.dtype if stage.op not in ("argmax", "argmin") else DType.i64)
            refs[s] = np.asarray(r).reshape(tuple(k.outer) + (1,) * ni)
        else:
            env = {"vars": full if stage.inner else outer_only, "bufs": ins, "refs": refs}
            _do_store(stage, env, outs)


def _gather(acc, buf_dt, ext):
    buf, dt = buf_dt
    idx = acc.offset + sum(g * s for g, s in zip(_grid(ext), acc.strides))
    return _read(buf, dt, np.broadcast_to(np.asarray(idx, np.int64), ext))


def _attention(k: AttentionKernel, ins):
    """softmax(score(Q @ K^T)) @ V by the kernel's definition, all in its accumulator dtype."""
    acc_np = k.acc_dtype.np
    q = _gather(k.q, ins[k.q.buf], (*k.batch, k.m, k.d)).astype(acc_np)
    kt = _gather(k.k, ins[k.k.buf], (*k.batch, k.d, k.n)).astype(acc_np)
    v = _gather(k.v, ins[k.v.buf], (*k.batch, k.n, k.e)).astype(acc_np)
    with np.errstate(all="ignore"):
        dots = np.matmul(q, kt) if k.d else np.zeros((*k.batch, k.m, k.n), acc_np)
        env = {"vars": _grid((*k.batch, k.m, k.n)), "bufs": ins, "refs": {0: dots}}
        s = np.broadcast_to(np.asarray(evaluate(k.score, env), acc_np), dots.shape)
        e = np.exp(s - np.max(s, axis=-1, keepdims=True, initial=-np.inf))
        p = e / np.sum(e, axis=-1, keepdims=True)
        out = np.matmul(p, v) if k.n else np.zeros((*k.batch, k.m, k.e), acc_np)
    return out.astype(acc_np), (*k.batch, k.m, k.e)


def _contract(k, ins):
    acc_np = k.acc_dtype.np
    if isinstance(k, AttentionKernel):
        return _attention(k, ins)
    if isinstance(k, MatmulKernel):
        a = _gather(k.a, ins[k.a.buf], (*k.batch, k.m, k.k)).astype(acc_np)
        b = _gather(k.b, ins[k.b.buf], (*k.batch, k.k, k.n)).astype(acc_np)
        with np.errstate(all="ignore"):
            c = np.matmul(a, b) if k.k else np.zeros((*k.batch, k.m, k.n), acc_np)
        return cast(c, k.acc_dtype), (*k.batch, k.m, k.n)
    x = _gather(k.x, ins[k.x.buf], (k.n, k.cin if isinstance(k, ConvKernel) else k.c, k.h, k.w)).astype(acc_np)
    ph, pw = k.padding
    sh, sw = k.stride
    dh, dw = k.dilation
    if isinstance(k, ConvKernel):
        w = _gather(k.weight, ins[k.weight.buf], (k.cout, k.cin // k.groups, k.kh, k.kw)).astype(acc_np)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        out = np.zeros((k.n, k.cout, k.oh, k.ow), acc_np)
        g, cpg, opg = k.groups, k.cin // k.groups, k.cout // k.groups
        for i in range(k.kh):
            for j in range(k.kw):
                patch = xp[:, :, i * dh: i * dh + sh * (k.oh - 1) + 1: sh, j * dw: j * dw + sw * (k.ow - 1) + 1: sw]
                for gi in range(g):
                    out[:, gi * opg:(gi + 1) * opg] += np.einsum(
                        "nchw,oc->nohw", patch[:, gi * cpg:(gi + 1) * cpg], w[gi * opg:(gi + 1) * opg, :, i, j])
        return out, (k.n, k.cout, k.oh, k.ow)
    assert isinstance(k, PoolKernel)
    kh, kw = k.kernel
    out = np.full((k.n, k.c, k.oh, k.ow), -np.inf if k.op == "max" else 0, acc_np)
    count = np.zeros((k.oh, k.ow))
    oh_i = np.arange(k.oh)[:, None]
    ow_i = np.arange(k.ow)[None, :]
    for i in range(kh):
        for j in range(kw):
            hi = oh_i * sh - ph + i * dh
            wi = ow_i * sw - pw + j * dw
            valid = (hi >= 0) & (hi < k.h) & (wi >= 0) & (wi < k.w)
            v = x[:, :, np.clip(hi, 0, k.h - 1), np.clip(wi, 0, k.w - 1)]
            if k.op == "max":
                v = np.where(valid, v, -np.inf)
                out = np.where(np.isnan(out), out, np.where(np.isnan(v) | (v > out), v, out))
            else:
                out = out + np.where(valid, v, 0)
                inpad = (hi < k.h + ph) & (wi < k.w + pw)
                count = count + (valid if not k.count_include_pad else inpad)
    if k.op == "avg":
        out = out / (k.divisor if k.divisor else np.maximum(count, 1))
    return out.astype(acc_np), (k.n, k.c, k.oh, k.ow)


def run_program(p: Program, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a Program on numpy inputs (bf16 given as float32); returns the outputs."""
    arena = np.zeros(max(p.arena_bytes, 1) + 64, np.uint8)
    bufs = []
    outputs = []
    for s in p.slots:
        dt = s.type.dtype
        sd = _store_dtype(dt)
        if s.kind == "input":
            arr = np.ascontiguousarray(inputs[s.index])
            arr = (np.asarray(round_to_dtype(arr, dt), np.float32).view(np.uint32) >> 16).astype(np.uint16) \
                if dt is DType.bf16 else arr.astype(sd)
            bufs.append((arr.reshape(-1), dt))
        elif s.kind == "const":
            c = p.constants[s.index]
            arr = (np.asarray(c, np.float32).view(np.uint32) >> 16).astype(np.uint16) if dt is DType.bf16 else c
            bufs.append((np.ascontiguousarray(arr).reshape(-1).astype(sd), dt))
        elif s.kind == "output":
            bufs.append((np.zeros(s.type.numel, sd), dt))
        else:
            n = s.type.numel * sd.itemsize
            assert s.index % 64 == 0 and s.index + n <= p.arena_bytes or n == 0
            bufs.append((arena[s.index: s.index + n].view(sd), dt))
    for call in p.calls:
        k = p.kernels[call.kernel]
        args = [bufs[a] for a in call.args]
        run_kernel(k, args[: len(k.inputs)], args[len(k.inputs):])
    out_slots = {s.index: i for i, s in enumerate(p.slots) if s.kind == "output"}
    aliases = dict(p.aliases)
    for j in range(p.num_outputs):
        slot = out_slots[j] if j in out_slots else aliases[j]
        buf, dt = bufs[slot]
        arr = _read(buf, dt, slice(None)).copy()
        outputs.append(arr.reshape(p.slots[slot].type.shape))
    return outputs
