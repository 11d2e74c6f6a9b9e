"""LoopKernel -> Triton: pointwise kernels and (multi-stage) row reductions.

Pointwise: one flat ``BLOCK`` of outer points per program; loop variables come
back from the flat offset with ``//`` and ``%``; loads and stores are masked.

Reductions: a ``[XBLOCK, RBLOCK]`` tile per program (XBLOCK outer points, RBLOCK
flattened inner points). When the inner size fits in one block, every stage
(softmax: max, sum of exp, store) works on the same registers and shares loads;
otherwise each stage loops over the inner points in chunks of RBLOCK, keeping a
per-lane accumulator that is reduced across lanes at the end. A float sum over more
than FANIN chunks nests its loops so that no accumulator adds more than FANIN values
(a cascade, see :func:`_open_cascade`); sums across lanes are a pairwise tree
(``_row_sum`` in the prelude), so long rows stay as accurate as eager's.

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
from minicomp.ir.kernel import REDUCE_KINDS, Expr, LoopKernel, Reduce, Store, Var, kernel_checks
from minicomp.codegen.triton import ops
from minicomp.codegen.triton.emit import ERRORS, Body, Context, ExprEmitter, uses
from minicomp.codegen.triton.launch import KernelSource, pointwise_config, reduction_config

INT32_LIMIT = 2**31 - 1
#: Chunks of RBLOCK points each level of a looped float sum adds before passing its sum up.
FANIN = 16


def index_type(kernel) -> str:
    """tl.int32 when every buffer and the iteration space fit in 31 bits, else tl.int64."""
    sizes = [b.type.numel for b in (*kernel.inputs, *kernel.outputs)]
    sizes.append(prod(getattr(kernel, "outer", ())) * prod(getattr(kernel, "inner", ())))
    return "tl.int32" if max(sizes, default=0) < INT32_LIMIT // 2 else "tl.int64"


def program_id(index_tl: str, axis: int = 0) -> str:
    """The program's index along ``axis`` as source, widened to int64 when indices need it."""
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
    """The loop variables ``exprs`` read (so only those are computed from the flat offset)."""
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
    """Emit the masked ``tl.store`` of ``st`` (ValueError for an output index out of range)."""
    if not 0 <= st.buf < len(outputs):
        raise ValueError(f"Store to output {st.buf}, kernel has {len(outputs)} outputs")
    index = em.index(st.index)
    value = store_value(em, st.value, out_dtypes[st.buf])
    em.body.line(f"tl.store({outputs[st.buf]} + {index}, {value}, mask={mask})")


def signature(kernel, name: str, blocks: list[str]) -> tuple[str, list]:
    """The kernel's ``@triton.jit`` header and its pointer params: inputs, outputs, then the error
    word (:data:`~.emit.ERRORS`, i32) when the kernel has run-time checks."""
    params = [(f"in{i}", b.type.dtype) for i, b in enumerate(kernel.inputs)]
    params += [(f"out{i}", b.type.dtype) for i, b in enumerate(kernel.outputs)]
    if kernel_checks(kernel):
        params.append((ERRORS, DType.i32))
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
    outputs = [p for p, _ in params[len(kernel.inputs):len(kernel.inputs) + len(kernel.outputs)]]
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
    outputs = [p for p, _ in params[len(kernel.inputs):len(kernel.inputs) + len(kernel.outputs)]]
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
        """Start one RBLOCK-wide step of the inner loop at ``start``: its offsets and masks, and an
        emitter that indexes with them."""
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
        accs = _acc_init(body, st, itl) if isinstance(st, Reduce) else [None]
        subs = _open_cascade(body, st, _cascade_levels(st, inner, dict(cfg.blocks)["RBLOCK"]), inner)
        em = open_inner("r0 + ")
        if isinstance(st, Store):
            emit_store(em, st, outputs, out_dtypes, "mask")
        else:
            _acc_update(em, st, subs[-1:] or accs, itl)
        _close_cascade(body, accs[0], subs)
        if isinstance(st, Reduce):
            refs[i] = _acc_finish(body, st, accs)
    return KernelSource(name, head + "\n" + body.text(), params, cfg, f"(triton.cdiv({rows}, XBLOCK),)",
                        empty=rows == 0)


def _acc_type(st: Reduce) -> DType:
    """Dtype the reduction runs in (argmax/argmin: the value's; bool folds as int32)."""
    dt = st.value.dtype if REDUCE_KINDS[st.op].arg else st.dtype
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
    if REDUCE_KINDS[st.op].arg:
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
    if REDUCE_KINDS[st.op].arg:
        idx = body.assign(f"roffs + tl.full([XBLOCK, RBLOCK], 0, {itl})", "i")
        red = body.assign(f"tl.reduce(({m}, {idx}), 1, {fn})[1]")
    elif st.op == "sum":
        red = body.assign(f"_row_sum({m})")
    else:
        red = body.assign(f"tl.reduce({m}, 1, {fn})")
    return _finish(body, st, red)


def _cascade_levels(st: Reduce | Store, inner: int, rblock: int) -> int:
    """Loops a looped stage nests: 1 (one loop over chunks of RBLOCK points) unless ``st`` is a
    float sum over more than FANIN chunks, which needs enough levels that FANIN**levels
    chunks cover the row (see :func:`_open_cascade`)."""
    if not (isinstance(st, Reduce) and st.op == "sum" and _acc_type(st).is_float):
        return 1
    chunks, levels = -(-inner // rblock), 1
    while FANIN ** levels < chunks:
        levels += 1
    return levels


def _open_cascade(body: Body, st: Reduce | Store, levels: int, inner: int) -> list[str]:
    """Open a looped stage's loops (``r0`` innermost; the body is left indented inside it) and
    return the accumulators of the loops below the top one, outermost first (none for one
    level); the innermost loop's body updates the last one.

    With ``levels`` L > 1 (a long float sum) loop ``r{L-1}`` walks spans of RBLOCK *
    FANIN**(L-1) points and each loop below walks the FANIN sub-spans of its parent's span.
    Each loop below the top sums into a fresh per-lane accumulator that is added to its
    parent's after the loop, so no accumulator adds more than FANIN values: a cascade sum,
    as in PyTorch's CPU kernels, whose error grows with log(inner), not with inner / RBLOCK."""
    subs: list[str] = []
    for j in range(levels - 1, -1, -1):
        if j == levels - 1:
            body.line(f"for r{j} in range(0, {inner}, RBLOCK * {FANIN ** j}):")
        else:
            acc = _acc_type(st)
            subs.append(body.assign(f"tl.full([XBLOCK, RBLOCK], {ops.reduce_identity('sum', acc)}, "
                                    f"{ops.TL_DTYPE[acc]})", f"acc{j}_"))
            body.line(f"for r{j} in range(r{j + 1}, min(r{j + 1} + RBLOCK * {FANIN ** (j + 1)}, {inner}), "
                      f"RBLOCK * {FANIN ** j}):")
        body.indent += 1
    return subs


def _close_cascade(body: Body, top: str | None, subs: list[str]) -> None:
    """Close the loops :func:`_open_cascade` opened, adding each level's sum into its parent's
    (``top``: the stage's own accumulator)."""
    parents = [top, *subs[:-1]]
    for parent, sub in reversed(list(zip(parents, subs))):
        body.indent -= 1
        body.line(f"{parent} = {parent} + {sub}")
    body.indent -= 1


def _acc_init(body: Body, st: Reduce, itl: str) -> list[str]:
    acc = _acc_type(st)
    ident = ops.reduce_identity(st.op, acc)
    names = [body.assign(f"tl.full([XBLOCK, RBLOCK], {ident}, {ops.TL_DTYPE[acc]})", "acc")]
    if REDUCE_KINDS[st.op].arg:
        names.append(body.assign(f"tl.full([XBLOCK, RBLOCK], {INT32_LIMIT}, {itl})", "acc"))
    return names


def _acc_update(em: ExprEmitter, st: Reduce, accs: list[str], itl: str) -> None:
    m = _masked(em, st)
    fn = ops.combine_fn(st.op, _acc_type(st))
    if REDUCE_KINDS[st.op].arg:
        em.body.line(f"{accs[0]}, {accs[1]} = {fn}({accs[0]}, {accs[1]}, {m}, roffs + tl.full([XBLOCK, RBLOCK], 0, {itl}))")
    else:
        em.body.line(f"{accs[0]} = {fn}({accs[0]}, {m})")


def _acc_finish(body: Body, st: Reduce, accs: list[str]) -> str:
    fn = ops.combine_fn(st.op, _acc_type(st))
    if REDUCE_KINDS[st.op].arg:
        red = body.assign(f"tl.reduce(({accs[0]}, {accs[1]}), 1, {fn})[1]")
    elif st.op == "sum":
        red = body.assign(f"_row_sum({accs[0]})")
    else:
        red = body.assign(f"tl.reduce({accs[0]}, 1, {fn})")
    return _finish(body, st, red)
