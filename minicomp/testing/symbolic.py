"""Random graphs with symbolic dims: a hypothesis strategy, and how to run one at any size.

:func:`symbolic_graphs` draws a random static graph (:func:`~minicomp.testing.graphs.graphs`) and
*generalizes* it: every input dim equal to a chosen size ``v`` becomes the symbol ``s0``, and
the graph is rebuilt op by op through type inference with that symbol (size attributes such
as ``reshape``'s ``shape`` follow). The result is kept only when it is a true generalization:
specialized back at ``s0 = v`` (:func:`minicomp.ir.parser.clone` with sizes) it prints exactly as
the drawn graph. Graphs whose ops pin the size (a constant of that length, a slice ending at it)
do not generalize and are redrawn.

A :class:`SymbolicCase` gives inputs at any size ``n`` (:meth:`SymbolicCase.inputs_at`): the drawn
inputs resized along the symbolic dims, each new slice a scaled copy of a drawn slice, so value
constraints the generators imposed (positive operands, in-range embedding ids, NaN and inf)
still hold. Its reference at size ``n`` is the static graph specialized to ``n``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from minicomp.ir.graph import Graph, Value
from minicomp.ir.parser import clone
from minicomp.ir.printer import print_graph
from minicomp.ir.symbolic import Sym
from minicomp.ir.types import TensorType
from minicomp.testing.graphs import Case, graphs

#: Attributes that hold sizes (they follow the symbol when they name the generalized size).
SIZE_ATTRS = ("shape", "sizes", "size")
#: Sizes a symbolic case is run at by default: 0 and 1 (the driver's specializations), small
#: primes, and one large enough for vector loops, tails and parallel splits.
DEFAULT_SIZES = (0, 1, 2, 3, 5, 7, 64)


def generalize(graph: Graph, value: int, name: str = "s0") -> Graph | None:
    """``graph`` with every input dim equal to ``value`` made the symbol ``name``, or None when
    that is not a generalization of ``graph`` (see the module docstring)."""
    sym = Sym.symbol(name)
    new = Graph(graph.name)
    remap: dict[int, Value] = {}
    for v in graph.inputs:
        shape = tuple(sym if d == value else d for d in v.type.shape)
        remap[id(v)] = new.add_input(TensorType(v.type.dtype, shape, v.type.order), v.name)
    for n in graph.nodes:
        attrs = {k: (_lift(a, value, sym) if k in SIZE_ATTRS else a) for k, a in n.attrs.items()}
        try:
            node = new.add(n.op, [remap[id(o)] for o in n.operands], attrs, names=[r.name for r in n.results])
        except Exception:  # noqa: BLE001 - SymbolicError, IRError...: the op pins the size, not general
            return None
        for r, nr in zip(n.results, node.results):
            remap[id(r)] = nr
    new.set_outputs([remap[id(o)] for o in graph.outputs])
    if not any(v.type.symbolic for v in new.inputs):
        return None
    try:
        same = print_graph(clone(new, {name: value})) == print_graph(graph)
    except Exception:  # noqa: BLE001 - a graph the printer refuses is not a usable case
        return None
    return new if same else None


def _lift(attr, value: int, sym: Sym):
    if isinstance(attr, tuple):
        return tuple(sym if a == value and isinstance(a, int) and not isinstance(a, bool) else a for a in attr)
    return attr


@dataclass
class SymbolicCase:
    """A symbolic graph, the size it was drawn at, and the drawn inputs (at that size)."""

    graph: Graph
    drawn_size: int
    drawn_inputs: list[np.ndarray]
    symbol: str = "s0"
    sizes: tuple[int, ...] = field(default=DEFAULT_SIZES)

    def static(self, n: int) -> Graph:
        """The graph specialized to ``s0 = n`` (the reference a symbolic compile must match)."""
        return clone(self.graph, {self.symbol: n})

    def inputs_at(self, n: int) -> list[np.ndarray]:
        """Inputs for size ``n``: the drawn inputs resized along their symbolic dims."""
        out = []
        for v, arr in zip(self.graph.inputs, self.drawn_inputs):
            for d, dim in enumerate(v.type.shape):
                if isinstance(dim, Sym):
                    arr = _resize(arr, d, n)
            out.append(np.array(arr, order="C"))  # (ascontiguousarray makes 0-d arrays 1-d)
        return out

    def case_at(self, n: int) -> Case:
        """The static :class:`Case` at size ``n``."""
        return Case(self.static(n), self.inputs_at(n))


def _resize(arr: np.ndarray, axis: int, n: int) -> np.ndarray:
    """``arr`` with ``n`` slices along ``axis``: slice j is drawn slice ``(3*j + 1) % size``, scaled
    toward zero a little (floats) so repeated slices differ; signs, NaN, inf and -0.0 survive."""
    size = arr.shape[axis]
    if n == size or size == 0:
        return arr if n == size else np.zeros(arr.shape[:axis] + (n,) + arr.shape[axis + 1:], arr.dtype)
    pick = np.take(arr, (3 * np.arange(n) + 1) % size, axis=axis)
    if arr.dtype.kind == "f" and n:
        shape = [1] * arr.ndim
        shape[axis] = n
        scale = (1.0 - 0.25 * (np.arange(n) % 7) / 7.0).reshape(shape).astype(arr.dtype)
        with np.errstate(all="ignore"):
            pick = (pick * scale).astype(arr.dtype)
    return pick


@st.composite
def symbolic_graphs(draw: st.DrawFn, sizes: tuple[int, ...] = DEFAULT_SIZES, **graph_kwargs) -> SymbolicCase:
    """A random graph with a symbolic dim ``s0`` (see the module docstring); ``graph_kwargs`` go to
    :func:`~minicomp.testing.graphs.graphs`. Draws that do not generalize are rejected (``assume``)."""
    case = draw(graphs(**graph_kwargs))
    dims = sorted({d for v in case.graph.inputs for d in v.type.shape if d >= 2})
    assume(dims)
    value = draw(st.sampled_from(dims))
    general = generalize(case.graph, value)
    assume(general is not None)
    return SymbolicCase(general, value, list(case.inputs), sizes=tuple(sizes))

