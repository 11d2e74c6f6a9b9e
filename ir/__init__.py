"""minicomp's graph IR: types, ops, graphs, text format, verifier, interpreter, kernels.

The public names::

    from minicomp.ir import Graph, Value, Node, TensorType, DType    # the IR itself
    from minicomp.ir import get_op, all_ops                           # the op registry
    from minicomp.ir import parse, print_graph, ParseError            # the text format
    from minicomp.ir import verify, VerifyError                       # the verifier
    from minicomp.ir import interpret                                 # reference interpreter

``interpret`` is imported lazily (on first use of the name).
"""
from __future__ import annotations

from typing import Any

from minicomp.ir.dtypes import DType
from minicomp.ir.types import TensorType
from minicomp.ir.graph import Graph, Node, Value, constant
from minicomp.ir.ops import IRError, all_ops, get_op
from minicomp.ir.printer import print_graph
from minicomp.ir.parser import ParseError, clone, parse
from minicomp.ir.verifier import VerifyError, verify

__all__ = ["Graph", "Value", "Node", "TensorType", "DType", "constant", "parse", "print_graph", "clone",
           "ParseError", "verify", "VerifyError", "IRError", "get_op", "all_ops"]
# ``interpret`` is public too, but kept out of __all__ so that ``import *`` stays cheap.


def __getattr__(name: str) -> Any:
    if name == "interpret":
        from minicomp.ir.interpreter import interpret
        return interpret
    raise AttributeError(f"module 'minicomp.ir' has no attribute {name!r}")
