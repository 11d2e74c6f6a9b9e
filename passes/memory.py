"""Memory planning: liveness-based buffer reuse in one arena, plus in-place updates.

The plan is stored in ``graph.meta["memory_plan"]`` (a plain dict, so the
lowering reads it without importing passes)::

    {
      "alignment": 64,
      "arena_bytes": int,            # size of the per-call scratch arena
      "total_bytes": int,            # sum of all intermediate buffers (what no reuse would need)
      "offsets": {value name: byte offset in the arena},   # every intermediate kernel result
      "inplace": {result name: operand name},  # result written over the operand's buffer
                                               # (same offset; elementwise kernels only)
      "order": [result names in execution order],
    }

Intermediates are results of kernels (non-view, non-constant nodes) that are
not graph outputs. View results own no memory: they alias their source, so a
view keeps its source's buffer live. Graph inputs, outputs and constants are
outside the arena. Two buffers share bytes only if their live ranges (from the
defining kernel to the last kernel that reads them, directly or through views)
do not overlap; an elementwise kernel may write its result into the buffer of an
operand that dies at that kernel when sizes match (``inplace``).
"""
from __future__ import annotations

from dataclasses import dataclass

from minicomp.ir.graph import Graph, Node, Value
from minicomp.passes.manager import VIEW_OPS, Pass, PassContext, is_kernel, register_pass

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _pointwise(node: Node) -> bool:
    if node.op == "fused":
        return node.attrs["kind"] == "pointwise"
    try:
        return node.opdef.category.value == "elementwise" and bool(node.operands)
    except Exception:
        return False


def plan_memory(graph: Graph, inplace: bool = True) -> dict:
    """Compute the memory plan of ``graph`` (see the module docstring for its format).

    Buffers are placed largest first, each at the lowest 64-byte aligned offset that
    overlaps no already placed buffer with an intersecting live range (first fit
    decreasing); an in-place result shares its operand's slot, whose range grows.
    """
    kernels = [n for n in graph.nodes if is_kernel(n)]
    step = {id(n): i for i, n in enumerate(kernels)}
    outputs = {id(v) for v in graph.outputs}

    def root(v: Value) -> Value:
        while v.producer is not None and v.producer.op in VIEW_OPS:
            v = v.producer.operands[0]
        return v

    last_use: dict[int, int] = {}
    for n in kernels:
        for o in n.operands:
            r = root(o)
            last_use[id(r)] = max(last_use.get(id(r), -1), step[id(n)])
    for v in graph.outputs:  # an output that is a view of an intermediate keeps it alive to the end
        last_use[id(root(v))] = len(kernels)

    slots: list[list] = []  # [start, end, size, [names]]
    slot_of: dict[int, list] = {}
    inplace_map: dict[str, str] = {}
    total = 0
    for n in kernels:
        s = step[id(n)]
        for r in n.results:
            if id(r) in outputs:
                continue
            size = _align(max(r.type.nbytes, 1))
            total += size
            end = last_use.get(id(r), s)
            target = None
            if inplace and len(n.results) == 1:
                for o in n.operands:
                    slot = slot_of.get(id(o))
                    if slot is not None and last_use.get(id(o)) == s and slot[2] >= size \
                            and o.name not in inplace_map.values() and _inplace_ok(n, o, root):
                        target = slot
                        inplace_map[r.name] = o.name
                        break
            if target is None:
                target = [s, end, size, []]
                slots.append(target)
            target[1] = max(target[1], end)
            target[3].append(r.name)
            slot_of[id(r)] = target
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, size)
    offsets: dict[str, int] = {}
    arena = 0
    for start, end, size, names in sorted(slots, key=lambda t: (-t[2], t[0])):
        busy = sorted((o, o + z) for (s0, e0, o, z) in placed if s0 <= end and start <= e0)
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        placed.append((start, end, off, size))
        arena = max(arena, off + size)
        for name in names:
            offsets[name] = off
    return {"alignment": ALIGN, "arena_bytes": arena, "total_bytes": total, "offsets": offsets,
            "inplace": inplace_map, "order": [r.name for n in kernels for r in n.results]}


def _inplace_ok(node: Node, buf: Value, root) -> bool:
    """Can ``node`` write its result over ``buf`` (an operand dying here)?

    Only for elementwise kernels reading ``buf`` directly (no view), at exactly the
    result's shape and dtype size, so element i is read before element i is written
    and never read again.
    """
    if not _pointwise(node):
        return False
    out = node.results[0]
    uses = [i for i, o in enumerate(node.operands) if root(o) is buf]
    if not uses or any(node.operands[i] is not buf for i in uses):
        return False
    if buf.type.shape != out.type.shape or buf.type.dtype.itemsize != out.type.dtype.itemsize \
            or buf.type.order != out.type.order:
        return False
    if node.op != "fused":
        return True
    body = node.attrs["body"]
    if any(n.op in VIEW_OPS for n in body.nodes):
        return False
    for i in uses:
        v = body.inputs[i]
        for user in body.nodes:
            if any(o is v for o in user.operands) and (user.op in VIEW_OPS or user.results[0].type.shape != out.type.shape):
                return False
    return len(body.outputs) == 1


@register_pass("plan-memory")
@dataclass(frozen=True)
class PlanMemory(Pass):
    """Stores a liveness-based arena plan in ``graph.meta["memory_plan"]``; the graph is unchanged.

    In-place updates are planned only with ``options["inplace"] = True`` (off by
    default: the lowering adopts a plan only when no two buffers of one kernel call
    share bytes, and falls back to its own allocator otherwise).

    Guarantees: buffers whose lifetimes overlap never share bytes; every offset is
    64-byte aligned; ``arena_bytes <= total_bytes``.
    """

    name: str = "plan-memory"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        plan = plan_memory(graph, inplace=bool(ctx.option("inplace", False)))
        meta = getattr(graph, "meta", None)
        if meta is None:
            meta = {}
            graph.meta = meta
        meta["memory_plan"] = plan
        for res, op in plan["inplace"].items():
            ctx.record("inplace", f"%{res} overwrites %{op}", "elementwise kernel; the operand dies here")
        reused = _reuse_pairs(plan)
        for a, b in reused:
            ctx.record("reuse", f"%{b} reuses the bytes of %{a}", "the first buffer is dead before the second is written")
        ctx.record("memory", f"arena {plan['arena_bytes']} bytes",
                   f"sum of all intermediates {plan['total_bytes']} bytes")


def _reuse_pairs(plan: dict) -> list[tuple[str, str]]:
    seen: dict[int, str] = {}
    pairs = []
    for name in plan["order"]:
        if name not in plan["offsets"] or name in plan["inplace"]:
            continue
        off = plan["offsets"][name]
        if off in seen:
            pairs.append((seen[off], name))
        seen[off] = name
    return pairs
