"""Random valid minicomp graphs as a hypothesis strategy, and the :class:`Case` they come in.

:func:`graphs` grows a DAG op by op over the op registry (the NNSmith approach):
it keeps a pool of available values, picks an op, picks operands from the pool
whose types fit (see :mod:`minicomp.testing.opgen`), and inserts the node only
when the op's type inference accepts it. Op choice is balanced over the registry
(uniform, not biased toward the first name as hypothesis's ``sampled_from`` is):
each op's weight falls with how often it was drawn already in the graph. Some
values become outputs: every value nobody uses, plus a few more.
"""
from __future__ import annotations

import collections
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph
from minicomp.ir.ops import all_ops
from minicomp.testing import torch_ref
from minicomp.testing.builder import Builder
from minicomp.testing.opgen import GENERATORS, generatable
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


class Coverage:
    """What a run exercised: op, dtype and fusion-kind counts (see :meth:`summary`).

    Passed to :func:`graphs` (``coverage=``) it counts every graph drawn. It does not
    steer the draws: hypothesis requires that the same choices give the same graph,
    so op balance comes from :func:`graphs`'s per-graph weights instead.
    """

    def __init__(self) -> None:
        self.ops: collections.Counter = collections.Counter()
        self.dtypes: collections.Counter = collections.Counter()
        self.fusion_kinds: collections.Counter = collections.Counter()
        self.graphs = 0

    def add_graph(self, graph: Graph) -> None:
        """Count the op nodes and the dtypes of values in ``graph``."""
        self.graphs += 1
        for n in graph.nodes:
            if n.op != "constant":
                self.ops[n.op] += 1
                self.dtypes.update(str(r.type.dtype) for r in n.results)

    def add_compiled(self, graph: Graph) -> None:
        """Count the fusion kinds (``fused`` nodes' ``kind``) of a graph after the pass pipeline."""
        self.fusion_kinds.update(str(n.attrs.get("kind")) for n in graph.nodes if n.op == "fused")

    def summary(self, ops: Sequence[str] | None = None) -> str:
        """A few lines: graphs and nodes seen, ops never drawn, dtype and fusion-kind counts."""
        every = list(ops) if ops is not None else default_ops()
        missing = [op for op in every if not self.ops[op]]
        rare = ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items(), key=lambda kv: kv[1])[:5])
        return "\n".join([
            f"coverage: {self.graphs} graphs, {sum(self.ops.values())} op nodes, "
            f"{len(every) - len(missing)}/{len(every)} ops drawn; rarest: {rare or '-'}",
            f"  never drawn: {', '.join(missing) or 'none'}",
            f"  dtypes: {', '.join(f'{k} {v}' for k, v in self.dtypes.most_common()) or '-'}",
            f"  fusion kinds: {', '.join(f'{k} {v}' for k, v in self.fusion_kinds.most_common()) or '-'}"])


#: How often the op just inserted is drawn again (chains of one op are what many rewrites match).
REPEAT = 0.3


def _pick_op(rng: random.Random, names: list[str], here: collections.Counter) -> str:
    """An op, weighted toward those drawn least so far in this graph (uniform over the registry at first)."""
    return rng.choices(names, [1.0 / (1 + here[op]) ** 2 for op in names])[0]


@st.composite
def graphs(draw: st.DrawFn, ops: Sequence[str] | None = None, max_nodes: int = 8,
           dtypes: Sequence[DType] = (DType.f32,), special_values: bool = False,
           max_inputs: int = 3, *, min_nodes: int = 1, depth: float = 0.3, magnitudes: bool = False,
           max_numel: int = 96, swarm: int = 0, extra_outputs: float = 1 / 6,
           coverage: Coverage | None = None) -> Case:
    """A random valid graph with ``min_nodes``..``max_nodes`` op nodes (plus leaves) and its inputs.

    ``ops`` limits the ops drawn (default: :func:`default_ops`), each drawn with a
    weight that falls with the times it was drawn already in this graph (a
    :class:`Coverage` passed as ``coverage`` counts what was drawn); ``dtypes`` are the dtypes of graph inputs and
    cast targets (comparisons and argmax still make bool and i64 values);
    ``special_values`` mixes NaN, +-inf and -0.0 into float inputs and constants,
    ``magnitudes`` (with it) large and tiny finite values; ``depth`` (0..1) favours
    chains over wide graphs; ``max_numel`` bounds an input's size (one dim may
    grow up to 32 when the bound allows: larger dims exercise vector loops and tails).
    ``swarm`` (> 0): each graph draws its ops from a random subset of that many ops
    (*swarm testing*, Groce et al., ISSTA 2012): the few ops of a graph meet
    themselves and each other often, so the pairs rewrites match (``add`` of ``add``,
    ``cast`` of ``cast``, ``slice`` of ``slice``, ``x / constant``) are common, while over
    many graphs every op is still drawn. ``extra_outputs``: the odds that a value some
    node uses is an output as well (at most :data:`MAX_EXTRA` such): a backend bug in a value that
    later ops mask (``abs(-0.0)`` then ``+ 1``) shows only at an output.
    Guarantees: every node passed its op's type inference, the graph has at least
    one output, and ``inputs`` matches ``graph.inputs`` in count, shape and dtype.
    """
    names = sorted(ops) if ops is not None else default_ops()
    unknown = [op for op in names if op not in GENERATORS]
    if unknown:
        raise ValueError(f"no random-graph generator for ops {unknown}; known: {sorted(GENERATORS)}")
    if not 1 <= min_nodes <= max_nodes:
        raise ValueError(f"need 1 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    rng = draw(st.randoms(use_true_random=True))
    if 0 < swarm < len(names):
        names = sorted(rng.sample(names, swarm))
    b = Builder(draw, tuple(dtypes), special_values, depth=depth, magnitudes=magnitudes)
    allow_empty = draw(st.integers(0, 7)) == 0
    big = max_numel >= 32 and draw(st.integers(0, 3)) == 0
    for _ in range(draw(st.integers(1, max_inputs))):
        ttype = draw(tensor_types(dtypes, max_rank=4, max_side=32 if big else 4, allow_empty=allow_empty,
                                  max_numel=max_numel))
        b.leaf(ttype, const=False)
    target = rng.randint(min_nodes, max_nodes)
    inserted, here = 0, collections.Counter()
    last = None
    for _ in range(6 * target):
        if inserted == target:
            break
        # now and then the same op again, fed the last result: add(add(..)), cast(cast(..)), slice(slice(..))
        repeat = last is not None and rng.random() < REPEAT
        op = last.op if repeat else _pick_op(rng, names, here)
        here[op] += 1
        b.chain = last.results[0] if repeat else None  # the repeated op consumes the previous node
        made = GENERATORS[op](b, op)
        b.chain, last = None, None
        if made is not None:
            node = b.add(op, *made)
            inserted += node is not None
            last = None if repeat else node  # (pairs, not runs: a run of one op would crowd out the others)
    b.graph.set_outputs(_outputs(draw, b, extra_outputs))
    if coverage is not None:
        coverage.add_graph(b.graph)
    return Case(b.graph, b.input_values)


#: Most outputs a random graph gets: every result nobody uses is an output (dead nodes test nothing).
MAX_OUTPUTS = 32
#: Most outputs a random graph gets besides its unused values.
MAX_EXTRA = 8


def _outputs(draw: st.DrawFn, b: Builder, odds: float) -> list:
    """Every result nobody uses, plus up to :data:`MAX_EXTRA` more values, each with ``odds`` (at most
    :data:`MAX_OUTPUTS`, at least one)."""
    used = {id(o) for n in b.graph.nodes for o in n.operands}
    results = [r for n in b.graph.nodes if n.op != "constant" for r in n.results]
    outputs = [r for r in results if id(r) not in used]
    extra = [v for v in results + b.graph.inputs if id(v) not in {id(o) for o in outputs}]
    added = 0
    for v in extra:
        if added < MAX_EXTRA and draw(st.integers(0, 99)) < int(odds * 100):
            outputs.append(v)
            added += 1
    if not outputs:
        outputs = [b.graph.inputs[0]]
    return outputs[-MAX_OUTPUTS:]
