"""LoopKernel -> Triton: pointwise kernels and (multi-stage) row reductions.

Pointwise: one flat ``BLOCK`` of outer points per program; loop variables come
back from the flat offset with ``//`` and ``%``; loads and stores are masked.

Reductions: a ``[XBLOCK, RBLOCK]`` tile per program (XBLOCK outer points, RBLOCK
flattened inner points). When the inner size fits in one block, every stage
(softmax: max, sum of exp, store) works on the same registers and shares loads;
otherwise each stage loops over the inner points in chunks of RBLOCK, keeping a
per-lane accumulator that is reduced across lanes at the end.

Aliasing: a call may pass one arena buffer as both an input and an output (an
in-place pair, legal only for pointwise kernels; see
:mod:`minicomp.ir.lowering.inplace`). Triton marks no pointer ``noalias`` and a
pointwise kernel emits every load of that input before the store of that output
(the legality rule: no load of the input in a later stage), each lane reading
exactly the element it writes, so the pair needs no special code here.
"""
from __future__ import annotations

from math import prod

from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Expr, LoopKernel, Reduce, Store, Var
from minicomp.codegen.triton import ops
from minicomp.codegen.triton.emit import Body, Context, ExprEmitter, uses
from minicomp.codegen.triton.launch import KernelSource, pointwise_config, reduction_config

INT32_LIMIT = 2**31 - 1


def index_type(kernel) -> str:
    """tl.int32 when every buffer and the iteration space fit in 31 bits, else tl.int64."""
    sizes = [b.type.numel for b in (*kernel.inputs, *kernel.outputs)]
    sizes.append(prod(getattr(kernel, "outer", ())) * prod(getattr(kernel, "inner", ())))
    return "tl.int32" if max(sizes, default=0) < INT32_LIMIT // 2 else "tl.int64"


def program_id(index_tl: str, axis: int = 0) -> str:
    pid = f"tl.program_id({axis})"
    return pid if index_tl == "tl.int32" else f"{pid}.to(tl.int64)"


def unflatten(body: Body, flat: str, shape: tuple[int, ...], first: int, needed: set[int]) -> dict[int, str]:
    """Emit the loop variables ``first + d`` (only those in ``needed``) of a row-major flat offset."""
    names = {}
    for d, size in enumerate(shape):
        if first + d not in needed:
            continue
        stride = prod(shape[d + 1:])
        text = flat if stride == 1 else f"({flat} // {stride})"
        if d > 0:
            text = f"{text} % {size}"
        names[first + d] = body.assign(text, f"v{first + d}_")
    return names


def used_vars(exprs: list[Expr]) -> set[int]:
    return {v.dim for e in exprs for v in uses(e, Var)}


def store_value(em: ExprEmitter, value: Expr, dtype: DType) -> str:
    """``value`` converted from its register representation to the storage type ``dtype``."""
    name = em.tensor(value)
    if dtype is DType.bool:
        return name if value.dtype is DType.bool else f"({name} != 0)"
    if dtype is DType.bf16 and value.dtype is not DType.bf16:
        name = f"_round_bf16({name}.to(tl.float32))"
    return name if value.dtype == dtype else f"{name}.to({ops.TL_DTYPE[dtype]})"


def emit_store(em: ExprEmitter, st: Store, outputs: list[str], out_dtypes: list[DType], mask: str) -> None:
    if not 0 <= st.buf < len(outputs):
        raise ValueError(f"Store to output {st.buf}, kernel has {len(outputs)} outputs")
    index = em.index(st.index)
    value = store_value(em, st.value, out_dtypes[st.buf])
    em.body.line(f"tl.store({outputs[st.buf]} + {index}, {value}, mask={mask})")


def signature(kernel, name: str, blocks: list[str]) -> tuple[str, list]:
    params = [(f"in{i}", b.type.dtype) for i, b in enumerate(kernel.inputs)]
    params += [(f"out{i}", b.type.dtype) for i, b in enumerate(kernel.outputs)]
    args = [p for p, _ in params] + [f"{b}: tl.constexpr" for b in blocks]
    head = f"@triton.jit\ndef {name}({', '.join(args)}):\n    # {kernel.kind} kernel {kernel.name!r}"
    return head, params


def emit_loop_kernel(kernel: LoopKernel, name: str, max_rblock: int) -> KernelSource:
    """Triton source of a LoopKernel (pointwise, copy or reduction)."""
    if kernel.inner or any(isinstance(s, Reduce) for s in kernel.stages):
        return _emit_reduction(kernel, name, max_rblock)
    return _emit_pointwise(kernel, name)


def _exprs(stages) -> list[Expr]:
    out = []
    for s in stages:
        out += [s.value] if isinstance(s, Reduce) else [s.index, s.value]
    return out


def _emit_pointwise(kernel: LoopKernel, name: str) -> KernelSource:
    numel = prod(kernel.outer)
    cfg, alts = pointwise_config(numel)
    head, params = signature(kernel, name, ["BLOCK"])
    itl = index_type(kernel)
    body = Body()
    body.line(f"offs = {program_id(itl)} * BLOCK + tl.arange(0, BLOCK)")
    body.line(f"mask = offs < {numel}")
    vars_ = unflatten(body, "offs", kernel.outer, 0, used_vars(_exprs(kernel.stages)))
    inputs = [p for p, _ in params[:len(kernel.inputs)]]
    outputs = [p for p, _ in params[len(kernel.inputs):]]
    em = ExprEmitter(body, Context(vars_, {}, inputs, "mask", "[BLOCK]", itl))
    for st in kernel.stages:
        emit_store(em, st, outputs, [b.type.dtype for b in kernel.outputs], "mask")
    return KernelSource(name, head + "\n" + body.text(), params, cfg, f"(triton.cdiv({numel}, BLOCK),)",
                        alts, empty=numel == 0)


def _emit_reduction(kernel: LoopKernel, name: str, max_rblock: int) -> KernelSource:
    rows, inner = prod(kernel.outer), prod(kernel.inner)
    cfg, looped = reduction_config(rows, inner, max_rblock)
    head, params = signature(kernel, name, ["XBLOCK", "RBLOCK"])
    itl = index_type(kernel)
    inputs = [p for p, _ in params[:len(kernel.inputs)]]
    outputs = [p for p, _ in params[len(kernel.inputs):]]
    out_dtypes = [b.type.dtype for b in kernel.outputs]
    needed = used_vars(_exprs(kernel.stages))
    nouter = len(kernel.outer)

    body = Body()
    body.line(f"xoffs = {program_id(itl)} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
    body.line(f"xmask = xoffs < {rows}")
    outer_vars = unflatten(body, "xoffs", kernel.outer, 0, needed)
    refs: dict[int, str] = {}
    em_out = ExprEmitter(body, Context(outer_vars, refs, inputs, "xmask", "[XBLOCK, 1]", itl))

    def open_inner(start: str) -> ExprEmitter:
        body.line(f"roffs = {start}tl.arange(0, RBLOCK)[None, :]")
        body.line(f"rmask = roffs < {inner}")
        body.line("mask = xmask & rmask")
        inner_vars = unflatten(body, "roffs", kernel.inner, nouter, needed)
        return ExprEmitter(body, Context({**outer_vars, **inner_vars}, refs, inputs, "mask",
                                         "[XBLOCK, RBLOCK]", itl))

    shared = None if looped else open_inner("")
    for i, st in enumerate(kernel.stages):
        if isinstance(st, Store) and not st.inner:
            if any(v.dim >= nouter for v in uses(st.index, Var) + uses(st.value, Var)):
                raise ValueError(f"stage {i}: an outer store uses an inner loop variable")
            emit_store(em_out, st, outputs, out_dtypes, "xmask")
            continue
        body.line(f"# stage {i}: {'store' if isinstance(st, Store) else st.op}")
        if not looped:
            if isinstance(st, Store):
                emit_store(shared, st, outputs, out_dtypes, "mask")
            else:
                refs[i] = _reduce_once(shared, st, itl)
            continue
        if isinstance(st, Reduce):
            accs = _acc_init(body, st, itl)
        body.line(f"for r0 in range(0, {inner}, RBLOCK):")
        body.indent += 1
        em = open_inner("r0 + ")
        if isinstance(st, Store):
            emit_store(em, st, outputs, out_dtypes, "mask")
        else:
            _acc_update(em, st, accs, itl)
        body.indent -= 1
        if isinstance(st, Reduce):
            refs[i] = _acc_finish(body, st, accs)
    return KernelSource(name, head + "\n" + body.text(), params, cfg, f"(triton.cdiv({rows}, XBLOCK),)",
                        empty=rows == 0)


def _acc_type(st: Reduce) -> DType:
    """Dtype the reduction runs in (argmax/argmin: the value's; bool folds as int32)."""
    dt = st.value.dtype if st.op in ("argmax", "argmin") else st.dtype
    dt = dt.compute
    return DType.i32 if dt is DType.bool else dt


def _masked(em: ExprEmitter, st: Reduce) -> str:
    """The reduced value converted to the accumulation type, identity in masked-off lanes."""
    acc = _acc_type(st)
    v = em.tensor(st.value)
    if st.value.dtype.compute != acc:
        v = f"{v}.to({ops.TL_DTYPE[acc]})"
    ident = ops.reduce_identity(st.op, acc)
    return em.body.assign(f"tl.where(mask, {v}, {ident})", "m")


def _finish(body: Body, st: Reduce, red: str) -> str:
    """Round / convert a per-row result (shape [XBLOCK]) to the Reduce's dtype as [XBLOCK, 1]."""
    text = f"{red}[:, None]"
    if st.op in ("argmax", "argmin"):
        text = f"{text}.to(tl.int64)"
    elif st.dtype is DType.bool:
        text = f"{text} != 0"
    elif st.dtype in (DType.f16, DType.bf16):
        text = ops.round_to(st.dtype, text)
    return body.assign(text, "r")


def _reduce_once(em: ExprEmitter, st: Reduce, itl: str) -> str:
    body = em.body
    m = _masked(em, st)
    fn = ops.combine_fn(st.op, _acc_type(st))
    if st.op in ("argmax", "argmin"):
        idx = body.assign(f"roffs + tl.full([XBLOCK, RBLOCK], 0, {itl})", "i")
        red = body.assign(f"tl.reduce(({m}, {idx}), 1, {fn})[1]")
    elif st.op == "sum":
        red = body.assign(f"tl.reduce({m}, 1, _add)")
    else:
        red = body.assign(f"tl.reduce({m}, 1, {fn})")
    return _finish(body, st, red)


def _acc_init(body: Body, st: Reduce, itl: str) -> list[str]:
    acc = _acc_type(st)
    ident = ops.reduce_identity(st.op, acc)
    names = [body.assign(f"tl.full([XBLOCK, RBLOCK], {ident}, {ops.TL_DTYPE[acc]})", "acc")]
    if st.op in ("argmax", "argmin"):
        names.append(body.assign(f"tl.full([XBLOCK, RBLOCK], {INT32_LIMIT}, {itl})", "acc"))
    return names


def _acc_update(em: ExprEmitter, st: Reduce, accs: list[str], itl: str) -> None:
    m = _masked(em, st)
    fn = ops.combine_fn(st.op, _acc_type(st))
    if st.op in ("argmax", "argmin"):
        em.body.line(f"{accs[0]}, {accs[1]} = {fn}({accs[0]}, {accs[1]}, {m}, roffs + tl.full([XBLOCK, RBLOCK], 0, {itl}))")
    else:
        em.body.line(f"{accs[0]} = {fn}({accs[0]}, {m})")


def _acc_finish(body: Body, st: Reduce, accs: list[str]) -> str:
    fn = ops.combine_fn(st.op, _acc_type(st))
    if st.op in ("argmax", "argmin"):
        red = body.assign(f"tl.reduce(({accs[0]}, {accs[1]}), 1, {fn})[1]")
    elif st.op == "sum":
        red = body.assign(f"tl.reduce({accs[0]}, 1, _add)")
    else:
        red = body.assign(f"tl.reduce({accs[0]}, 1, {fn})")
    return _finish(body, st, red)
