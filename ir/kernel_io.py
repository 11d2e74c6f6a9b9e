"""A lowered :class:`~minicomp.ir.program.Program` as JSON text plus raw constant arrays.

:func:`program_to_json` and :func:`program_from_json` are exact inverses: every
kernel dataclass, scalar expression, :class:`TensorType` and :class:`DType`
comes back equal, and every float bit for bit (``-0.0``, infinities and NaN
payloads included). Nothing is pickled. The JSON looks like::

    {"format": "minicomp.program/1",
     "exprs": [{"$": "Var", "dim": 0, "dtype": {"$": "DType", "v": "i64"}}, ...],
     "program": {"$": "Program", "kernels": [...], ...},
     "constants": [{"dtype": "<f4", "shape": [4, 3]}, ...]}

Scalar expressions (``Var``, ``Const``, ``Load``, ``Op``, ``Cast``, ``Ref``) live
in one table, children before parents, and are referenced as ``{"$e": index}``:
a subexpression shared by several parents is written once and shared again
after loading (the text grows linearly, never exponentially, with a DAG).
Constant *data* is not in the text: it travels as the returned list of numpy
arrays (the caller stores their raw bytes), described by dtype and shape.
"""
from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

from minicomp.ir import kernel as K
from minicomp.ir import program as P
from minicomp.ir.program import Program
from minicomp.ir.dtypes import DType
from minicomp.ir.expr_walk import post_order
from minicomp.ir.types import TensorType

FORMAT = "minicomp.program/1"

_EXPR_TYPES = (K.Var, K.Const, K.Load, K.Op, K.Cast, K.Ref)
#: Every dataclass this format knows, by tag (the class name).
_CLASSES: dict[str, type] = {c.__name__: c for m in (K, P) for c in vars(m).values()
                             if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == m.__name__}
_CLASSES["TensorType"] = TensorType


class _Encoder:
    """Turns Program values into JSON-ready values, collecting expressions into a table."""

    def __init__(self) -> None:
        self.exprs: list[Any] = []
        self._index: dict[int, int] = {}  # id(expr) -> table index; exprs are kept alive by the program

    def value(self, v: Any) -> Any:
        if isinstance(v, (np.bool_, np.integer, np.floating)):
            v = v.item()  # stored as the equal Python scalar
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return _float(float(v))
        if isinstance(v, tuple):
            return [self.value(x) for x in v]
        if isinstance(v, DType):
            return {"$": "DType", "v": v.value}
        if isinstance(v, _EXPR_TYPES):
            return {"$e": self.expr(v)}
        if dataclasses.is_dataclass(v) and type(v).__name__ in _CLASSES:
            return self.record(v)
        raise TypeError(f"cannot serialize {type(v).__name__} value {v!r} in a Program")

    def record(self, v: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"$": type(v).__name__}
        for f in dataclasses.fields(v):
            out[f.name] = self.value(getattr(v, f.name))
        return out

    def expr(self, e: Any) -> int:
        idx = self._index.get(id(e))
        if idx is None:
            # children first (their indices are smaller), without recursion: post_order lists the
            # nodes not yet in the table, operands before users, so record() finds each operand's index
            for n in post_order(e, lambda n: id(n) in self._index):
                rec = self.record(n)
                self._index[id(n)] = len(self.exprs)
                self.exprs.append(rec)
            idx = self._index[id(e)]
        return idx


def _float(x: float) -> Any:
    """Finite floats as JSON numbers (``repr`` round-trips exactly, -0.0 too); others as their bits."""
    if x == x and x not in (float("inf"), float("-inf")):
        return x
    return {"$": "float", "bits": struct.pack("<d", x).hex()}


def program_to_json(program: Program) -> tuple[str, list[np.ndarray]]:
    """``(text, constants)``: the program without its constant data, and that data.

    ``constants`` are C-contiguous copies of ``program.constants`` in order; store
    their raw bytes and pass arrays of the same dtype and shape to
    :func:`program_from_json`. Raises TypeError for a value the format does not know.
    """
    enc = _Encoder()
    body = {"$": "Program"}
    for f in dataclasses.fields(program):
        if f.name != "constants":
            body[f.name] = enc.value(getattr(program, f.name))
    arrays = [np.array(c, order="C") for c in program.constants]  # (0-d stays 0-d)
    meta = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    text = json.dumps({"format": FORMAT, "exprs": enc.exprs, "program": body, "constants": meta},
                      separators=(",", ":"), allow_nan=False)
    return text, arrays


def program_text(program: Program) -> str:
    """A deterministic text of everything in ``program`` that determines its machine code: the
    JSON of :func:`program_to_json` with the constants' dtypes and shapes but not their data.

    A subexpression shared by several parents is written once, so the text grows linearly with
    the expression DAG (a ``repr`` of the kernels writes it once per use: exponential for a
    chain of ``x * sigmoid(x)``).
    """
    enc = _Encoder()
    body = {"$": "Program"}
    for f in dataclasses.fields(program):
        if f.name != "constants":
            body[f.name] = enc.value(getattr(program, f.name))
    meta = [{"dtype": np.asarray(c).dtype.str, "shape": list(np.shape(c))} for c in program.constants]
    return json.dumps({"format": FORMAT, "exprs": enc.exprs, "program": body, "constants": meta},
                      separators=(",", ":"), allow_nan=False)


class _Decoder:
    def __init__(self, exprs: list[Any]) -> None:
        self.exprs: list[Any] = []
        for rec in exprs:
            self.exprs.append(self.value(rec))

    def value(self, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return tuple(self.value(x) for x in v)
        if not isinstance(v, dict):
            raise ValueError(f"unexpected JSON value {v!r}")
        if "$e" in v:
            idx = v["$e"]
            if not isinstance(idx, int) or not 0 <= idx < len(self.exprs):
                raise ValueError(f"bad expression reference {idx!r}")
            return self.exprs[idx]
        tag = v.get("$")
        if tag == "DType":
            return DType.parse(v["v"])
        if tag == "float":
            return struct.unpack("<d", bytes.fromhex(v["bits"]))[0]
        cls = _CLASSES.get(tag)
        if cls is None:
            raise ValueError(f"unknown record type {tag!r}")
        fields = {k: self.value(x) for k, x in v.items() if k != "$"}
        try:
            return cls(**fields)
        except TypeError as err:
            raise ValueError(f"bad {tag} record: {err}") from None


def program_from_json(text: str, constants: list[np.ndarray]) -> Program:
    """The Program that :func:`program_to_json` wrote as ``text``, with ``constants`` as its data.

    Raises ValueError when the text is not this format or the constants do not
    match the recorded dtypes and shapes (the arrays are used as given, not copied).
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not a program JSON document: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    meta = doc["constants"]
    if len(meta) != len(constants):
        raise ValueError(f"program has {len(meta)} constant(s), got {len(constants)}")
    for i, (m, a) in enumerate(zip(meta, constants)):
        if a.dtype.str != m["dtype"] or list(a.shape) != m["shape"]:
            raise ValueError(f"constant {i} is {a.dtype.str}{list(a.shape)}, expected {m['dtype']}{m['shape']}")
    dec = _Decoder(doc["exprs"])
    body = doc["program"]
    if not isinstance(body, dict) or body.get("$") != "Program":
        raise ValueError("document has no Program")
    fields = {k: dec.value(v) for k, v in body.items() if k != "$"}
    return Program(constants=tuple(constants), **fields)

