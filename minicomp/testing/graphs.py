"""Random valid minicomp graphs as a hypothesis strategy, and the :class:`Case` they come in.

:func:`graphs` grows a DAG op by op over the op registry (the NNSmith approach):
it keeps a pool of available values, picks an op, picks operands from the pool
whose types fit (see :mod:`minicomp.testing.opgen`), and inserts the node only
when the op's type inference accepts it. Some values become outputs: every
value nobody uses, plus a few more.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph
from minicomp.ir.ops import all_ops
from minicomp.testing import torch_ref
from minicomp.testing.opgen import Builder, GENERATORS, generatable
from minicomp.testing.strategies import tensor_types, to_torch


@dataclass
class Case:
    """A graph plus concrete input values: one test case for a compiler.

    ``inputs[i]`` is a numpy array for ``graph.inputs[i]`` (float32 storage for bf16).
    """

    graph: Graph
    inputs: list[np.ndarray] = field(default_factory=list)

    def torch_fn(self) -> Callable[..., tuple]:
        """The graph as a PyTorch eager function (from :mod:`minicomp.testing.torch_ref`)."""
        return torch_ref.torch_fn(self.graph)

    def to_torch_inputs(self) -> list:
        """The inputs as torch CPU tensors of the graph's dtypes (bf16 as ``torch.bfloat16``)."""
        return [to_torch(a, v.type.dtype) for a, v in zip(self.inputs, self.graph.inputs)]

    def ir(self) -> str:
        """The graph in minicomp's text IR (a plain listing if the printer is unavailable)."""
        try:
            return str(self.graph)
        except Exception:  # noqa: BLE001 - the printer may reject a graph; never hide the case
            lines = [f"{[str(v.type) for v in self.graph.inputs]} ->"]
            lines += [f"  {[r.name for r in n.results]} = {n.op}({[o.name for o in n.operands]}) {n.attrs}"
                      for n in self.graph.nodes]
            lines.append(f"  return {[v.name for v in self.graph.outputs]}")
            return "\n".join(lines)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.inputs)
        return f"Case(inputs=[{shapes}], graph=\n{self.ir()}\n)"


def default_ops() -> list[str]:
    """Every registered op that random graphs can generate, sorted by name."""
    return sorted(op for op in all_ops() if generatable(op))


@st.composite
def graphs(draw: st.DrawFn, ops: Sequence[str] | None = None, max_nodes: int = 8,
           dtypes: Sequence[DType] = (DType.f32,), special_values: bool = False,
           max_inputs: int = 3) -> Case:
    """A random valid graph with 1..``max_nodes`` op nodes (plus leaves) and its inputs.

    ``ops`` limits the ops drawn (default: :func:`default_ops`); ``dtypes`` are the
    dtypes of graph inputs and cast targets (comparisons and argmax still make bool
    and i64 values); ``special_values`` mixes NaN, +-inf and -0.0 into float inputs.
    Guarantees: every node passed its op's type inference, the graph has at least
    one output, and ``inputs`` matches ``graph.inputs`` in count, shape and dtype.
    """
    names = sorted(ops) if ops is not None else default_ops()
    unknown = [op for op in names if op not in GENERATORS]
    if unknown:
        raise ValueError(f"no random-graph generator for ops {unknown}; known: {sorted(GENERATORS)}")
    b = Builder(draw, tuple(dtypes), special_values)
    allow_empty = draw(st.integers(0, 7)) == 0
    for _ in range(draw(st.integers(1, max_inputs))):
        ttype = draw(tensor_types(dtypes, max_rank=4, max_side=4, allow_empty=allow_empty, max_numel=96))
        b.leaf(ttype, const=False)
    target = draw(st.integers(1, max_nodes))
    inserted = 0
    for _ in range(4 * target):
        if inserted == target:
            break
        op = draw(st.sampled_from(names))
        made = GENERATORS[op](b, op)
        if made is not None and b.add(op, *made) is not None:
            inserted += 1
    used = {id(o) for n in b.graph.nodes for o in n.operands}
    results = [r for n in b.graph.nodes if n.op != "constant" for r in n.results]
    outputs = [r for r in results if id(r) not in used]
    extra = [v for v in results + b.graph.inputs if id(v) not in {id(o) for o in outputs}]
    for v in extra:
        if len(outputs) < 4 and draw(st.integers(0, 5)) == 0:
            outputs.append(v)
    if not outputs:
        outputs = [b.graph.inputs[0]]
    b.graph.set_outputs(outputs[:6])
    return Case(b.graph, b.input_values)
