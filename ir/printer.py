"""The textual IR: print a :class:`~minicomp.ir.graph.Graph` as MLIR-flavoured text.

The text is the exact inverse of :func:`minicomp.ir.parser.parse`: for every graph
``g`` whose attributes are printable, ``str(parse(str(g))) == str(g)``, and the
parsed graph has the same names, dtypes, attributes and constants, bit for bit.
``docs/ir.md`` describes the format; in short::

    graph @mlp(%x: f32[1,4]) {
      %w = constant {dtype=f32, value=dense<[0.5,-1.0,2.0,0.0] : f32[1,4]>} : f32[1,4]
      %0 = mul %x, %w : f32[1,4] loc("model.py:12")
      return %0
    }

Attribute values print as: ints ``3``; floats always with a ``.`` or exponent
(``1.0``, ``1e-05``, ``inf``, ``-inf``, ``nan``, ``-0.0``); bools ``true``/``false``;
strings quoted with escapes; tuples ``[1,2]``; dtypes bare (``f32``); ``None`` as
``none``; tensor types ``f32[2,3]``; nested graphs inline; numpy arrays as
``dense<[...] : f32[2,2]>`` (at most :data:`LITERAL_LIMIT` elements) or
``dense<"base64 of the little-endian bytes" : f32[1024,256]>``. The type inside
``dense<>`` is the array's *storage* type: bf16 constants are float32 arrays.
"""
from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.symbolic import Sym
from minicomp.ir.types import TensorType

#: Arrays with at most this many elements print as a readable literal list.
LITERAL_LIMIT = 16

_BARE_NAME = re.compile(r"[A-Za-z0-9_.]+\Z")
_NP_TO_IR = {np.dtype(np.float32): DType.f32, np.dtype(np.float64): DType.f64, np.dtype(np.float16): DType.f16,
             np.dtype(np.int32): DType.i32, np.dtype(np.int64): DType.i64, np.dtype(np.bool_): DType.bool}
_UINT_OF = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def print_graph(graph: Graph, elide_constants: bool = False) -> str:
    """The text of ``graph`` (no trailing newline).

    With ``elide_constants`` arrays of more than :data:`LITERAL_LIMIT` elements print
    as ``dense<...>``: shorter for humans and pass dumps, but the parser rejects it.
    """
    return _graph_text(graph, "", elide_constants)


def node_summary(node: Node) -> str:
    """One line naming ``node`` for error messages: large arrays and nested bodies elided."""
    return _node_text(node, "", elide=True, brief=True)


def quote_string(text: str) -> str:
    """``text`` as a double-quoted literal that :func:`parse` reads back exactly."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_name(sigil: str, name: str) -> str:
    """``%name`` / ``@name``, quoting names that are not plain ``[A-Za-z0-9_.]+``."""
    if isinstance(name, str) and _BARE_NAME.match(name):
        return sigil + name
    return sigil + quote_string(str(name))


def format_float(value: float) -> str:
    """A Python float, exactly (``repr``): always has a ``.``, an exponent, or is inf/nan."""
    return repr(float(value))


def format_attr(value: Any, indent: str = "", elide: bool = False, brief: bool = False) -> str:
    """The text of one attribute value (see the module docstring for the forms)."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, Sym):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return format_float(value)
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, DType):
        return str(value)
    if isinstance(value, TensorType):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_attr(v, indent, elide, brief) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return format_array(value, elide)
    if isinstance(value, Graph):
        if brief:
            return f"graph {format_name('@', value.name)}(...) {{...}}"
        return _graph_text(value, indent, elide)
    raise TypeError(f"the IR text format cannot print attribute value {value!r} of type {type(value).__name__}")


def format_array(array: np.ndarray, elide: bool = False) -> str:
    """``dense<[...] : T>`` for small arrays, ``dense<"base64" : T>`` for large ones."""
    dt = _NP_TO_IR.get(array.dtype.newbyteorder("="))
    if dt is None:
        raise TypeError(f"the IR text format cannot print arrays of numpy dtype {array.dtype}")
    type_text = str(TensorType(dt, array.shape))
    if array.size <= LITERAL_LIMIT:
        flat = array.reshape(-1)
        return "dense<[" + ",".join(_format_element(x, dt) for x in flat) + "] : " + type_text + ">"
    if elide:
        return "dense<...>"
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return 'dense<"' + base64.b64encode(raw).decode("ascii") + '" : ' + type_text + ">"


def _format_element(x: Any, dt: DType) -> str:
    if dt is DType.bool:
        return "true" if x else "false"
    if dt.is_int:
        return str(int(x))
    text = str(x)  # numpy's shortest text that identifies x among values of its own dtype
    if np.isnan(x):
        return "nan"
    if not any(c in text for c in ".ein"):
        text += ".0"
    back = np.array(float(text), dtype=np.float64).astype(x.dtype)
    uint = _UINT_OF[x.dtype.itemsize]
    if back.view(uint) != np.array(x).view(uint):
        text = repr(float(x))  # exact: every f16/f32 value is a double
    return text


def _value_list(values: list[Value]) -> str:
    return ", ".join(format_name("%", v.name) for v in values)


def _node_text(node: Node, indent: str, elide: bool, brief: bool = False) -> str:
    parts = []
    if node.results:
        parts.append(_value_list(node.results) + " = ")
    parts.append(node.op)
    if node.operands:
        parts.append(" " + _value_list(node.operands))
    if node.attrs:
        items = [f"{key}={format_attr(node.attrs[key], indent, elide, brief)}" for key in sorted(node.attrs)]
        parts.append(" {" + ", ".join(items) + "}")
    types = ", ".join(str(r.type) for r in node.results) if node.results else "()"
    parts.append(" : " + types)
    if node.loc is not None:
        parts.append(" loc(" + quote_string(str(node.loc)) + ")")
    return "".join(parts)


def _graph_text(graph: Graph, indent: str, elide: bool) -> str:
    inner = indent + "  "
    params = ", ".join(f"{format_name('%', v.name)}: {v.type}" for v in graph.inputs)
    lines = [f"graph {format_name('@', graph.name)}({params}) {{"]
    lines.extend(inner + _node_text(n, inner, elide) for n in graph.nodes)
    lines.append(inner + ("return " + _value_list(graph.outputs) if graph.outputs else "return"))
    lines.append(indent + "}")
    return "\n".join(lines)
