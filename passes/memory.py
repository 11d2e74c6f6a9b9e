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
      "inplace_refused": [[result, operand, why], ...],  # dying operands of elementwise
                                               # kernels that could not be overwritten
      "order": [result names in execution order],
    }

Intermediates are results of kernels (non-view, non-constant nodes) that are
not graph outputs. View results own no memory: they alias their source, so a
view keeps its source's buffer live. Graph inputs, outputs and constants are
outside the arena. Two buffers share bytes only if their live ranges (from the
defining kernel to the last kernel that reads them, directly or through views)
do not overlap; an elementwise kernel may write its result into the buffer of an
operand that dies at that kernel (``inplace``) when it reads every element of that
operand exactly where it writes the same element of its result. Whether it does is
the lowering's rule, asked once per candidate pair
(:func:`minicomp.ir.lowering.inplace_refusal`: the node's kernel, checked by
:func:`~minicomp.ir.lowering.inplace.inplace_problem`); this pass only decides which
dying operands to ask about and where buffers go. Graph inputs, outputs and
constants are never overwritten: they are not in the arena. The lowering uses the
plan as it is; it places buffers itself only when the plan does not describe the
program it lowered (a pass changed the graph after ``plan-memory``, or a copy kernel
was added), and says so in its notes.
"""
from __future__ import annotations

from dataclasses import dataclass

from minicomp.ir.graph import Graph, Node, Value, view_source
from minicomp.ir.lowering import first_fit_arena, inplace_refusal
from minicomp.ir.ops import Role
from minicomp.passes.manager import Pass, PassContext, is_kernel, register_pass

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _pointwise(node: Node) -> bool:
    if node.opdef.has_body:
        return node.attrs["kind"] == "pointwise"
    return node.opdef.role is Role.ELEMENTWISE and bool(node.operands)


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
        return view_source(v)[0]

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
    refused: list[list[str]] = []
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
            if inplace and _pointwise(n):
                for o in {id(root(x)): root(x) for x in n.operands}.values():
                    slot = slot_of.get(id(o))
                    if slot is None or last_use.get(id(o)) != s or o.name in inplace_map.values():
                        continue  # not an arena intermediate dying here, or already overwritten
                    why = inplace_refusal(n, o) or (None if slot[2] >= size else "the buffer is smaller")
                    if why is None:
                        target = slot
                        inplace_map[r.name] = o.name
                        break
                    refused.append([r.name, o.name, why])
            if target is None:
                target = [s, end, size, []]
                slots.append(target)
            target[1] = max(target[1], end)
            target[3].append(r.name)
            slot_of[id(r)] = target
    # placement is the lowering's first-fit allocator (one algorithm, used by both layers)
    places, arena = first_fit_arena([(start, end, size) for start, end, size, _ in slots])
    offsets: dict[str, int] = {}
    for (_, _, _, names), off in zip(slots, places):
        for name in names:
            offsets[name] = off
    return {"alignment": ALIGN, "arena_bytes": arena, "total_bytes": total, "offsets": offsets,
            "inplace": inplace_map, "inplace_refused": refused,
            "order": [r.name for n in kernels for r in n.results]}


@register_pass("plan-memory")
@dataclass(frozen=True)
class PlanMemory(Pass):
    """Stores a liveness-based arena plan in ``graph.meta["memory_plan"]``; the graph is unchanged.

    In-place updates are planned unless ``options["inplace"]`` is False. Each one
    (and each dying operand of an elementwise kernel that could not be overwritten,
    with the reason) is recorded as an "inplace" decision; buffer reuse as "reuse".

    Guarantees: buffers whose lifetimes overlap never share bytes, except an in-place
    pair (same offset and size; the operand dies at the kernel writing the result);
    every offset is 64-byte aligned; ``arena_bytes <= total_bytes``.
    """

    name: str = "plan-memory"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        plan = plan_memory(graph, inplace=bool(ctx.option("inplace", True)))
        meta = getattr(graph, "meta", None)
        if meta is None:
            meta = {}
            graph.meta = meta
        meta["memory_plan"] = plan
        for res, op in plan["inplace"].items():
            ctx.record("inplace", f"%{res} overwrites %{op}",
                       f"elementwise kernel reads each element of %{op} where it writes %{res}; %{op} dies here")
        for res, op, why in plan["inplace_refused"]:
            ctx.record("inplace", f"%{res} not written over %{op}", why)
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
