"""A whole graph -> a :class:`~minicomp.ir.program.Program` of kernel calls.

Each ``fused`` node becomes one kernel (when its body fits no template it is
split back into one kernel per op); every other non-view node becomes one
kernel. Views fold into the indexing of their consumers; a view that reaches a
graph output, or a contraction operand that is not an affine view of a buffer,
is materialized by a copy kernel. Intermediates live in a per-call arena whose
offsets come from ``graph.meta["memory_plan"]["offsets"]`` when a memory-planning
pass left a plan that covers every intermediate and never overlaps two buffers
live in the same kernel call, except legal in-place pairs (checked on the
lowered kernel: :mod:`~minicomp.ir.lowering.inplace`); otherwise from the
``arena_planner`` (default :func:`first_fit_arena`) and ``notes`` says why.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from minicomp.ir.graph import Graph, Node, Value, view_source
from minicomp.ir.kernel import Kernel
from minicomp.ir.program import Call, Program, Slot
from minicomp.ir.lowering.builder import CannotFuse, LoweringError, NeedMaterialize
from minicomp.ir.lowering.inplace import inplace_problem
from minicomp.ir.lowering.kernels import lower_group
from minicomp.ir.ops import Role

ALIGN = 64

#: (first call, last call, bytes) per intermediate -> (byte offsets, arena size).
ArenaPlanner = Callable[[Sequence[tuple[int, int, int]]], tuple[list[int], int]]


def first_fit_arena(intervals: Sequence[tuple[int, int, int]]) -> tuple[list[int], int]:
    """Liveness-based first fit: buffers whose call ranges overlap never share bytes.

    Offsets are multiples of 64. Buffers are placed largest first at the lowest
    offset that does not collide with an already placed, overlapping buffer.
    """
    order = sorted(range(len(intervals)), key=lambda i: (-intervals[i][2], intervals[i][0]))
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, size)
    offsets = [0] * len(intervals)
    total = 0
    for i in order:
        start, end, size = intervals[i]
        size = -(-max(size, 1) // ALIGN) * ALIGN
        busy = sorted((o, o + s) for (a, b, o, s) in placed if a <= end and start <= b)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, -(-hi // ALIGN) * ALIGN)
        offsets[i] = offset
        placed.append((start, end, offset, size))
        total = max(total, offset + size)
    return offsets, total


@dataclass
class _Unit:
    nodes: list[Node]
    stores: list[Value]
    fused: Node | None = None


@dataclass
class _State:
    alias: dict[int, Value] = field(default_factory=dict)
    materialized: set[int] = field(default_factory=set)

    def canon(self, v: Value) -> Value:
        while id(v) in self.alias:
            v = self.alias[id(v)]
        return v

    def is_materialized(self, v: Value) -> bool:
        return v.producer is None or v.producer.opdef.role is Role.CONSTANT or id(v) in self.materialized


def _units_of(node: Node, st: _State) -> list[_Unit]:
    """The kernel units of a top-level node (none for constants and views)."""
    if not node.opdef.role.makes_kernel:
        return []
    if node.opdef.has_body:  # a fused node: its body is one kernel
        body: Graph = node.attrs["body"]
        for inner, outer in zip(body.inputs, node.operands):
            st.alias[id(inner)] = outer
        for outer, inner in zip(node.results, body.outputs):
            st.alias[id(outer)] = inner
        return [_Unit(list(body.nodes), list(body.outputs), node)]
    return [_Unit([node], list(node.results))]


def lower_node(node: Node) -> Kernel:
    """One node (or ``fused`` node) as one kernel reading its operands from buffers."""
    return _lower_alone(node)[0]


def _lower_alone(node: Node) -> tuple[Kernel, list[Value]]:
    """``node``'s kernel, every operand read from a buffer, and the values its inputs hold."""
    st = _State()
    units = _units_of(node, st)
    if len(units) != 1:
        raise LoweringError(f"'{node.op}' is not a kernel node (views and constants fold into consumers)")
    unit = units[0]
    inside = {id(n) for n in unit.nodes}
    stores = [v for v in (st.canon(s) for s in unit.stores) if v.producer is not None and id(v.producer) in inside]
    return lower_group(unit.nodes, stores, st.canon,
                       lambda v: id(v.producer) not in inside if v.producer is not None else True)


def inplace_refusal(node: Node, operand: Value) -> str | None:
    """Why ``node``'s kernel may not write its result over the buffer of ``operand``; None when it may.

    The one rule for in-place updates, asked by the memory planner (``plan-memory``) when
    it plans them: :func:`~minicomp.ir.lowering.inplace.inplace_problem` on the kernel the
    lowering makes of ``node``. ``operand`` must be read directly (a view would make the
    kernel read another buffer's elements at other indices)."""
    if len(node.results) != 1:
        return "the kernel has several results"
    if all(o is not operand for o in node.operands) or \
            any(o is not operand and view_source(o)[0] is operand for o in node.operands):
        return f"%{operand.name} is read through a view"
    try:
        kernel, ins = _lower_alone(node)
    except LoweringError as e:
        return f"the kernel does not lower on its own: {e}"
    where = [i for i, v in enumerate(ins) if v is operand]
    if len(where) != 1:
        return f"%{operand.name} is not one input buffer of the kernel"
    return inplace_problem(kernel, where[0], 0)


def body_problem(body: Graph) -> str | None:
    """Why the body of a would-be ``fused`` node cannot be one kernel, or None when it can.

    Fusion asks this before it forms a group (so :func:`lower_graph` never has to split a
    fused node fusion made): the body is lowered exactly as :func:`lower_node` lowers the
    fused node, its inputs read from buffers."""
    inside = {id(n) for n in body.nodes}
    outs = [v for v in body.outputs
            if v.producer is not None and id(v.producer) in inside and v.producer.opdef.role is not Role.CONSTANT]
    outs = list({id(v): v for v in outs}.values())
    try:
        lower_group(list(body.nodes), outs, lambda v: v,
                    lambda v: v.producer is None or id(v.producer) not in inside)
    except LoweringError as e:  # CannotFuse, NeedMaterialize: the lowering would split the group
        return str(e)
    return None


def lower_graph(graph: Graph, arena_planner: ArenaPlanner = first_fit_arena,
                notes: list[str] | None = None) -> Program:
    """Lower ``graph`` to a Program: kernels, buffer slots, calls and the arena size.

    ``notes`` (if given) receives one line per fused node that had to be split
    into several kernels, per view materialized for a contraction, and one when
    the graph's memory plan is not safe for the lowered kernels (and is not used).
    """
    st = _State()
    notes = notes if notes is not None else []
    pending: list[_Unit] = []
    for node in graph.nodes:
        pending.extend(_units_of(node, st))
    for u in pending:
        st.materialized.update(id(st.canon(v)) for v in u.stores)
    if any(v.type.order is not None for v in graph.inputs):
        raise LoweringError("graph inputs must have the default (row-major) layout: callers pass dense tensors")
    outputs = [_row_major(st.canon(o), pending) for o in graph.outputs]
    for v in outputs:  # views reaching an output get a copy kernel
        if not st.is_materialized(v) and id(v) not in {id(s) for u in pending for s in map(st.canon, u.stores)}:
            pending.append(_Unit([], [v]))  # other kernels keep folding the view (they run earlier)

    kernels: list[Kernel] = []
    reads: list[list[Value]] = []
    writes: list[list[Value]] = []
    while pending:
        unit = pending.pop(0)
        inside = {id(n) for n in unit.nodes}
        stores = []
        for s in unit.stores:
            c = st.canon(s)
            if (c.producer is not None and id(c.producer) in inside and c.producer.opdef.role is not Role.CONSTANT) \
                    or not unit.nodes:
                if all(c is not x for x in stores):
                    stores.append(c)
        if not stores:
            continue
        try:
            kernel, ins = lower_group(unit.nodes, stores, st.canon, st.is_materialized, len(kernels))
        except NeedMaterialize as e:
            v = st.canon(e.value)
            if v.producer is not None and id(v.producer) in inside or st.is_materialized(v):
                notes.append(_split_note(unit, str(e)))
                pending[:0] = _split(unit, st)
            else:
                notes.append(f"copy kernel for %{v.name}: not an affine view of a buffer")
                st.materialized.add(id(v))
                pending[:0] = [_Unit([], [v]), unit]
            continue
        except CannotFuse as e:
            notes.append(_split_note(unit, str(e)))
            pending[:0] = _split(unit, st)
            continue
        kernels.append(kernel)
        reads.append(ins)
        writes.append(stores)
    return _assemble(graph, outputs, kernels, reads, writes, st, arena_planner, notes)


def _row_major(v: Value, pending: list[_Unit]) -> Value:
    """``v``, or a row-major copy of it when its layout is not (outputs are dense tensors)."""
    if v.type.order is None:
        return v
    node = Node("copy", [v], {}, [])
    node.results = [Value(v.type.with_order(None), f"{v.name}_rowmajor", node, 0)]
    pending.append(_Unit([node], list(node.results)))
    return node.results[0]


def _split_note(unit: _Unit, why: str) -> str:
    if unit.fused is None:
        return why
    return f"fused node %{unit.fused.results[0].name} ({unit.fused.attrs['kind']}) split into one kernel per op: {why}"


def _split(unit: _Unit, st: _State) -> list[_Unit]:
    """A fused unit that fits no template, as one unit per op."""
    if unit.fused is None or len(unit.nodes) <= 1:
        names = ", ".join(n.op for n in unit.nodes) or "copy"
        raise LoweringError(f"cannot lower {names}: no kernel template fits")
    parts = []
    for n in unit.nodes:
        parts.extend(_units_of(n, st))
    for u in parts:
        st.materialized.update(id(st.canon(v)) for v in u.stores)
    return parts


def _assemble(graph, outputs, kernels, reads, writes, st: _State, planner: ArenaPlanner,
              notes: list[str] | None = None) -> Program:
    slots: list[Slot] = []
    slot_of: dict[int, int] = {}
    constants: list[np.ndarray] = []
    for i, v in enumerate(graph.inputs):
        slot_of[id(v)] = len(slots)
        slots.append(Slot("input", i, v.type))
    aliases: list[tuple[int, int]] = []
    out_first: dict[int, int] = {}
    produced = {id(v) for ws in writes for v in ws}
    for j, v in enumerate(outputs):
        if id(v) in out_first:
            aliases.append((j, slot_of[id(v)]))
        elif id(v) in produced:
            out_first[id(v)] = j
            slot_of[id(v)] = len(slots)
            slots.append(Slot("output", j, v.type))
    arena_vals: list[Value] = []

    def slot(v: Value) -> int:
        if id(v) not in slot_of:
            if v.producer is not None and v.producer.opdef.role is Role.CONSTANT:
                slot_of[id(v)] = len(slots)
                slots.append(Slot("const", len(constants), v.type))
                constants.append(np.ascontiguousarray(v.producer.attrs["value"]).reshape(v.type.shape))  # 0-d stays 0-d
            elif v.producer is None:
                raise LoweringError(f"%{v.name} is not an input of this graph")
            else:
                slot_of[id(v)] = len(slots)
                slots.append(Slot("arena", -1, v.type))
                arena_vals.append(v)
        return slot_of[id(v)]

    calls = []
    for k, (ins, outs) in enumerate(zip(reads, writes)):
        calls.append(Call(k, tuple(slot(v) for v in ins) + tuple(slot(v) for v in outs)))
    for j, v in enumerate(outputs):
        if id(v) not in produced and all(a[0] != j for a in aliases):
            if v.producer is not None and v.producer.opdef.role is not Role.CONSTANT:
                raise LoweringError(f"graph output %{v.name} is produced by no kernel")
            aliases.append((j, slot(v)))
    slots, arena = _place_arena(graph, slots, arena_vals, slot_of, calls, planner, kernels, notes)
    return Program(tuple(kernels), tuple(slots), tuple(calls), arena, len(graph.inputs), len(outputs),
                   tuple(constants), tuple(sorted(aliases)))


def _place_arena(graph, slots, arena_vals, slot_of, calls, planner, kernels=(), notes=None):
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for c_i, call in enumerate(calls):
        for s in call.args:
            first.setdefault(s, c_i)
            last[s] = c_i
    ids = [slot_of[id(v)] for v in arena_vals]
    intervals = [(first.get(s, 0), last.get(s, 0), slots[s].type.nbytes) for s in ids]
    offsets, total = planner(intervals)
    plan = ((getattr(graph, "meta", None) or {}).get("memory_plan") or {}).get("offsets") or {}
    if arena_vals and all(v.name in plan for v in arena_vals):
        planned = [int(plan[v.name]) for v in arena_vals]
        why = _plan_problem(intervals, planned, ids, calls, kernels)
        if why is None:
            offsets = planned
            total = max(o + n for o, (_, _, n) in zip(offsets, intervals))
            total = -(-total // ALIGN) * ALIGN
        elif notes is not None:
            notes.append(f"memory plan not used ({why}); buffers placed by the lowering's allocator")
    slots = list(slots)
    for s, off in zip(ids, offsets):
        slots[s] = Slot("arena", int(off), slots[s].type)
    return slots, int(total)


def _plan_problem(intervals: Sequence[tuple[int, int, int]], offsets: Sequence[int], ids: Sequence[int],
                  calls: Sequence[Call], kernels: Sequence[Kernel]) -> str | None:
    """Why the planned ``offsets`` are unsafe, or None.

    Two buffers live in the same call may share bytes only as a legal in-place pair:
    the same offset and size, the first read for the last time by the call that
    writes the second, as its input and output, in a kernel that reads that input
    exactly where it writes that output (:func:`~minicomp.ir.lowering.inplace.inplace_problem`).
    """
    if any(o % ALIGN for o in offsets):
        return "an offset is not 64-byte aligned"
    for i, (a0, a1, an) in enumerate(intervals):
        for j in range(i):
            b0, b1, bn = intervals[j]
            if not (a0 <= b1 and b0 <= a1 and offsets[i] < offsets[j] + bn and offsets[j] < offsets[i] + an):
                continue
            if offsets[i] != offsets[j] or an != bn:
                return "two live buffers partly overlap"
            (src, dst), c = ((j, i), a0) if b1 == a0 else ((i, j), b0) if a1 == b0 else ((i, i), -1)
            if src == dst:
                return "two buffers live across several calls share bytes"
            call = calls[c]
            k = kernels[call.kernel] if call.kernel < len(kernels) else None
            nin = len(k.inputs) if k is not None else 0
            ins = [p for p, s in enumerate(call.args[:nin]) if s == ids[src]]
            outs = [p for p, s in enumerate(call.args[nin:]) if s == ids[dst]]
            if k is None or len(ins) != 1 or len(outs) != 1:
                return "buffers sharing bytes are not an input and an output of one call"
            why = inplace_problem(k, ins[0], outs[0])
            if why is not None:
                return f"in-place update refused: {why}"
    return None
