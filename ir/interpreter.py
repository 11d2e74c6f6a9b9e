"""The reference interpreter: runs a graph on numpy arrays, one op reference at a time.

Values are logical (row-major) numpy arrays whatever their layout; bf16 values
are float32 arrays rounded to bfloat16 after every op, as PyTorch computes them.
The interpreter never imports torch.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from minicomp.ir.dtypes import round_to_dtype
from minicomp.ir.graph import Graph, Node
from minicomp.ir.ops import IRError, get_op
from minicomp.ir.symbolic import bind, substitute


def evaluate_node(node: Node, arrays: Sequence[np.ndarray], sizes: dict[str, int] | None = None) -> list[np.ndarray]:
    """Run ``node``'s op reference on its operand arrays; one array per result.

    ``sizes`` gives the symbolic sizes' values (see :func:`interpret`).
    Each result is stored as its result type's dtype (bf16 rounded) and checked
    against the inferred shape, so a reference bug surfaces here as an IRError.
    Runtime errors of the op itself (integer division by zero, out-of-range
    embedding ids) propagate as ZeroDivisionError / IndexError.
    """
    opdef = get_op(node.op)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. numpy's "mean of empty slice"
        extra = {"in_dtypes": tuple(o.type.dtype for o in node.operands)} if opdef.takes_dtypes else {}
        attrs = substitute(node.attrs, sizes) if sizes else node.attrs
        out: Any = opdef.reference(*[np.asarray(a) for a in arrays], **attrs, **extra)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if len(outs) != len(node.results):
        raise IRError(f"reference of '{node.op}' gave {len(outs)} results, the node has {len(node.results)}")
    results = []
    for value, array in zip(node.results, outs):
        array = round_to_dtype(np.asarray(array), value.type.dtype)
        if array.shape != (substitute(value.type.shape, sizes) if sizes else value.type.shape):
            raise IRError(f"reference of '{node.op}' gave shape {array.shape}, the type of %{value.name} "
                          f"is {value.type}")
        results.append(array)
    return results


def _check_input(i: int, value, array: Any) -> np.ndarray:
    t = value.type
    array = np.asarray(array)
    if not t.symbolic and array.shape != t.shape:
        raise ValueError(f"input {i} (%{value.name}) has shape {array.shape}, the graph expects {t}")
    if array.dtype != t.dtype.np:
        raise ValueError(f"input {i} (%{value.name}) has dtype {array.dtype}, the graph expects {t} "
                         f"(stored as numpy {t.dtype.np})")
    return round_to_dtype(array, t.dtype)


def interpret(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    """Evaluate ``graph`` on numpy ``inputs``; returns one fresh array per graph output.

    Inputs must match the graph inputs in number, shape and numpy storage dtype
    (bf16 inputs are float32 arrays, rounded to bfloat16 here); a mismatch raises
    ValueError naming the input. A symbolic graph runs at the sizes its inputs have
    (:func:`~minicomp.ir.symbolic.bind` reads them and checks the relations).
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph '{graph.name}' takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[int, np.ndarray] = {id(v): _check_input(i, v, x) for i, (v, x) in enumerate(zip(graph.inputs, inputs))}
    sizes = bind([v.type.shape for v in graph.inputs], [env[id(v)].shape for v in graph.inputs],
                 [f"input {i} (%{v.name})" for i, v in enumerate(graph.inputs)])
    for node in graph.nodes:
        try:
            args = [env[id(o)] for o in node.operands]
        except KeyError:
            raise IRError(f"{node!r} uses a value that is not defined before it") from None
        for value, array in zip(node.results, evaluate_node(node, args, sizes)):
            env[id(value)] = array
    try:
        return [np.array(env[id(v)], copy=True) for v in graph.outputs]
    except KeyError:
        raise IRError(f"graph '{graph.name}' outputs a value that no node defines") from None
