"""Parse the textual IR back into a :class:`~minicomp.ir.graph.Graph`, and clone graphs.

:func:`parse` is the exact inverse of :func:`minicomp.ir.printer.print_graph`
(see ``docs/ir.md``). Nodes are built through :meth:`Graph.add` with the printed
result types, so unknown ops and bad attributes are rejected; the parse does not
run the verifier (call :func:`minicomp.ir.verifier.verify`, or pass
``verify=True``), so malformed-but-printable graphs survive a print/parse trip.
Errors are :class:`ParseError` with a line and column.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import re
from typing import Any, NamedTuple

import numpy as np

from minicomp.ir.dtypes import DType
from minicomp.ir.graph import Graph, Node, Value
from minicomp.ir.ops import IRError
from minicomp.ir.symbolic import parse_dim, substitute
from minicomp.ir.types import TensorType


class ParseError(IRError):
    """Text that is not valid IR. ``line`` and ``col`` are 1-based."""

    def __init__(self, message: str, line: int, col: int):
        self.line = line
        self.col = col
        self.detail = message
        super().__init__(f"line {line} col {col}: {message}")


_STR = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_TOKEN = re.compile(rf"""[ \t\r\n]*(?:
  (?P<comment>//[^\n]*)
| (?P<value>%(?:[A-Za-z0-9_.]+|{_STR}))
| (?P<symbol>@(?:[A-Za-z0-9_.]+|{_STR}))
| (?P<string>{_STR})
| (?P<badstring>"[^\n]*)
| (?P<float>-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|inf|nan)(?![A-Za-z0-9_.]))
| (?P<int>-?\d+(?![A-Za-z0-9_.]))
| (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
| (?P<ellipsis>\.\.\.)
| (?P<punct>[()\[\]{{}}<>,:=+*\-])
| (?P<eof>\Z))""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_DTYPES = {d.value: d for d in DType}
_KEYWORDS = {"true", "false", "none", "graph", "dense", *_DTYPES}
_IR_TO_NP = {DType.f32: np.float32, DType.f64: np.float64, DType.f16: np.float16,
             DType.i32: np.int32, DType.i64: np.int64, DType.bool: np.bool_}


class _Tok(NamedTuple):
    kind: str
    text: str
    pos: int


def _unquote(text: str) -> str:
    """The string a quoted literal (with its quotes) denotes."""
    out, i, body = [], 0, text[1:-1]
    if "\\" not in body:
        return body
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        else:
            raise ValueError(f"unknown escape '\\{esc}' in string")
    return "".join(out)


class _Parser:
    """Recursive descent over a token list; one instance per call of :func:`parse`."""

    def __init__(self, text: str):
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.toks = self._lex(text)
        self.i = 0

    # -- tokens -------------------------------------------------------------------------
    def _lex(self, text: str) -> list[_Tok]:
        toks, pos = [], 0
        for m in _TOKEN.finditer(text):  # each match: optional whitespace, then one token
            kind = m.lastgroup
            if m.start() != pos or kind is None:
                break
            start = m.start(kind)
            if kind == "badstring":
                self._fail("unterminated string literal", start)
            if kind == "eof":
                toks.append(_Tok("eof", "", len(text)))
                return toks
            if kind != "comment":
                toks.append(_Tok(kind, m.group(kind), start))
            pos = m.end()
        pos = len(text) - len(text[pos:].lstrip(" \t\r\n"))
        self._fail(f"unexpected character {text[pos]!r}", pos)

    def _where(self, pos: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, pos)
        return line, pos - self.line_starts[line - 1] + 1

    def _fail(self, message: str, pos: int | None = None):
        if pos is None:
            pos = self.toks[self.i].pos
        raise ParseError(message, *self._where(pos))

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _describe(self, tok: _Tok) -> str:
        if tok.kind == "eof":
            return "end of input"
        text = tok.text if len(tok.text) <= 40 else tok.text[:37] + "..."
        return f"'{text}'"

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> _Tok:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            self._fail(f"expected {what or repr(text) if text else what or kind}, got {self._describe(tok)}")
        self.i += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        tok = self.tok
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    def name_of(self, tok: _Tok) -> str:
        body = tok.text[1:]
        return self.unquote(body, tok.pos + 1) if body.startswith('"') else body

    def unquote(self, text: str, pos: int) -> str:
        try:
            return _unquote(text)
        except ValueError as e:
            self._fail(str(e), pos)

    # -- grammar ------------------------------------------------------------------------
    def parse_top(self) -> Graph:
        graph = self.parse_graph()
        if self.tok.kind != "eof":
            self._fail(f"expected end of input after the graph, got {self._describe(self.tok)}")
        return graph

    def parse_graph(self) -> Graph:
        self.expect("ident", "graph", "'graph'")
        graph = Graph(self.name_of(self.expect("symbol", what="graph name '@name'")))
        scope: dict[str, tuple[Value, int]] = {}
        self.expect("punct", "(")
        if not self.accept("punct", ")"):
            while True:
                tok = self.expect("value", what="input '%name'")
                name = self.name_of(tok)
                self._check_new(scope, name, tok)
                self.expect("punct", ":")
                scope[name] = (graph.add_input(self.parse_type(), name), tok.pos)
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",", "',' or ')'")
        self.expect("punct", "{")
        while not self.accept("ident", "return"):
            self.parse_node(graph, scope)
        outputs = []
        if self.tok.kind == "value":
            outputs = self.parse_uses(scope)
        graph.set_outputs(outputs)
        self.expect("punct", "}", "'}' after return")
        return graph

    def _check_new(self, scope: dict, name: str, tok: _Tok) -> None:
        if name in scope:
            line, _ = self._where(scope[name][1])
            self._fail(f"value %{name} defined twice (first defined on line {line})", tok.pos)

    def parse_uses(self, scope: dict) -> list[Value]:
        values = []
        while True:
            tok = self.expect("value", what="a value '%name'")
            name = self.name_of(tok)
            if name not in scope:
                self._fail(f"use of undefined value %{name}", tok.pos)
            values.append(scope[name][0])
            if not self.accept("punct", ","):
                return values

    def parse_node(self, graph: Graph, scope: dict) -> None:
        result_toks = []
        if self.tok.kind == "value":
            while True:
                result_toks.append(self.expect("value", what="result '%name'"))
                if not self.accept("punct", ","):
                    break
            self.expect("punct", "=", "'=' after the result names")
        op_tok = self.expect("ident", what="an op name or 'return'")
        operands = self.parse_uses(scope) if self.tok.kind == "value" else []
        attrs: dict[str, Any] = {}
        if self.tok.kind == "punct" and self.tok.text == "{":
            attrs = self.parse_attr_dict()
        types_tok = self.expect("punct", ":", "':' and the result types")
        types = []
        if self.accept("punct", "("):
            self.expect("punct", ")", "')' (no results)")
        else:
            types.append(self.parse_type())
            while self.accept("punct", ","):
                types.append(self.parse_type())
        if len(types) != len(result_toks):
            self._fail(f"{len(result_toks)} result names but {len(types)} result types", types_tok.pos)
        loc = None
        if self.accept("ident", "loc"):
            self.expect("punct", "(")
            tok = self.expect("string", what="a quoted location")
            loc = self.unquote(tok.text, tok.pos)
            self.expect("punct", ")")
        names = [self.name_of(t) for t in result_toks]
        for name, tok in zip(names, result_toks):
            self._check_new(scope, name, tok)
            scope[name] = (None, tok.pos)  # reserve, so `%a, %a = ...` is caught too
        try:
            node = graph.add(op_tok.text, operands, attrs, types=types, names=names, loc=loc)
        except (IRError, ValueError, TypeError, KeyError) as e:
            self._fail(f"invalid '{op_tok.text}' node: {e}", op_tok.pos)
        for name, value, tok in zip(names, node.results, result_toks):
            scope[name] = (value, tok.pos)

    def parse_type(self) -> TensorType:
        tok = self.expect("ident", what="a type like f32[2,3]")
        if tok.text not in _DTYPES:
            self._fail(f"expected a dtype (one of {', '.join(_DTYPES)}), got '{tok.text}'", tok.pos)
        return self._type_rest(_DTYPES[tok.text], tok.pos)

    def _type_rest(self, dtype: DType, pos: int) -> TensorType:
        self.expect("punct", "[", "'[' and the shape")
        shape = self._dim_list()
        order = None
        if self.tok.kind == "punct" and self.tok.text == "{" and self.toks[self.i + 1].kind == "int":
            self.i += 1
            order = self._int_list("}")
        try:
            return TensorType(dtype, tuple(shape), tuple(order) if order is not None else None)
        except ValueError as e:
            self._fail(f"bad type: {e}", pos)

    def _dim_list(self) -> list:
        """A shape: ints and symbolic sizes (``s0``, ``4*s0+1``, ``floordiv(s0,2)``) up to ']'."""
        dims: list = []
        if self.accept("punct", "]"):
            return dims
        while True:
            dims.append(self._dim())
            if self.accept("punct", "]"):
                return dims
            self.expect("punct", ",", "',' or ']'")

    def _dim(self):
        """One size: the tokens up to a ',', ']' or '}' outside parentheses, read by ``parse_dim``."""
        start, depth, parts = self.tok.pos, 0, []
        while not (depth == 0 and self.tok.kind == "punct" and self.tok.text in ",]}"):
            if self.tok.kind not in ("int", "ident", "punct"):
                self._fail(f"expected a size, got {self._describe(self.tok)}")
            if self.tok.kind == "punct":
                depth += {"(": 1, ")": -1}.get(self.tok.text, 0)
            parts.append(self.tok.text)
            self.i += 1
        if not parts:
            self._fail("expected a size", start)
        try:
            return parse_dim("".join(parts))
        except ValueError as e:
            self._fail(f"bad size: {e}", start)

    def _int_list(self, close: str) -> list[int]:
        values = []
        if self.accept("punct", close):
            return values
        while True:
            values.append(int(self.expect("int", what="an integer").text))
            if self.accept("punct", close):
                return values
            self.expect("punct", ",", f"',' or '{close}'")

    def parse_attr_dict(self) -> dict[str, Any]:
        self.expect("punct", "{")
        attrs: dict[str, Any] = {}
        if self.accept("punct", "}"):
            return attrs
        while True:
            key = self.expect("ident", what="an attribute name")
            if key.text in attrs:
                self._fail(f"attribute '{key.text}' given twice", key.pos)
            self.expect("punct", "=", f"'=' after attribute '{key.text}'")
            attrs[key.text] = self.parse_attr()
            if self.accept("punct", "}"):
                return attrs
            self.expect("punct", ",", "',' or '}' in the attribute list")

    def parse_attr(self) -> Any:
        tok = self.tok
        nxt = self.toks[self.i + 1]
        if tok.kind == "int" and not (nxt.kind == "punct" and nxt.text in "+-*"):
            self.i += 1
            return int(tok.text)
        if tok.kind == "int" or (tok.kind == "ident" and tok.text not in _KEYWORDS):
            return self._dim()  # a symbolic size, as in a shape
        if tok.kind == "float":
            self.i += 1
            return float(tok.text)
        if tok.kind == "string":
            self.i += 1
            return self.unquote(tok.text, tok.pos)
        if tok.kind == "punct" and tok.text == "[":
            self.i += 1
            items = []
            if self.accept("punct", "]"):
                return ()
            while True:
                items.append(self.parse_attr())
                if self.accept("punct", "]"):
                    return tuple(items)
                self.expect("punct", ",", "',' or ']'")
        if tok.kind == "ident":
            if tok.text in ("true", "false", "none"):
                self.i += 1
                return {"true": True, "false": False, "none": None}[tok.text]
            if tok.text in _DTYPES:
                self.i += 1
                if self.tok.kind == "punct" and self.tok.text == "[":
                    return self._type_rest(_DTYPES[tok.text], tok.pos)
                return _DTYPES[tok.text]
            if tok.text == "graph":
                return self.parse_graph()
            if tok.text == "dense":
                return self.parse_dense()
        self._fail(f"expected an attribute value, got {self._describe(tok)}")

    def parse_dense(self) -> np.ndarray:
        self.expect("ident", "dense")
        self.expect("punct", "<", "'<' after dense")
        if self.tok.kind == "ellipsis":
            self._fail("constant data was elided (printed with elide_constants=True); this text cannot be parsed")
        start = self.tok
        if start.kind == "string":
            self.i += 1
            data: Any = start.text[1:-1]
        elif self.accept("punct", "["):
            data = []
            if not self.accept("punct", "]"):
                while True:
                    if self.tok.kind not in ("int", "float", "ident"):
                        self._fail(f"expected an array element, got {self._describe(self.tok)}")
                    data.append(self.tok)
                    self.i += 1
                    if self.accept("punct", "]"):
                        break
                    self.expect("punct", ",", "',' or ']' in the array literal")
        else:
            self._fail(f"expected '[' or a base64 string in dense<>, got {self._describe(start)}")
        self.expect("punct", ":", "':' and the array type in dense<>")
        ttype = self.parse_type()
        self.expect("punct", ">", "'>' closing dense<>")
        if ttype.dtype not in _IR_TO_NP or ttype.order is not None:
            self._fail(f"dense<> arrays are stored as f32, f64, f16, i32, i64 or bool, got {ttype}", start.pos)
        npdt = np.dtype(_IR_TO_NP[ttype.dtype])
        if isinstance(data, str):
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                self._fail("invalid base64 data in dense<>", start.pos)
            if len(raw) != ttype.numel * npdt.itemsize:
                self._fail(f"dense<> data has {len(raw)} bytes, but {ttype} needs {ttype.numel * npdt.itemsize}",
                           start.pos)
            array = np.frombuffer(raw, dtype=npdt.newbyteorder("<")).astype(npdt).reshape(ttype.shape)
        else:
            if len(data) != ttype.numel:
                self._fail(f"dense<> literal has {len(data)} elements, but {ttype} needs {ttype.numel}", start.pos)
            array = np.array([self._element(t, ttype.dtype) for t in data], dtype=npdt).reshape(ttype.shape)
        array.setflags(write=False)
        return array

    def _element(self, tok: _Tok, dtype: DType) -> Any:
        if dtype is DType.bool:
            if tok.text not in ("true", "false"):
                self._fail(f"expected true or false in a bool array, got '{tok.text}'", tok.pos)
            return tok.text == "true"
        if dtype.is_int:
            if tok.kind != "int":
                self._fail(f"expected an integer in an {dtype} array, got '{tok.text}'", tok.pos)
            info = np.iinfo(_IR_TO_NP[dtype])
            if not info.min <= int(tok.text) <= info.max:
                self._fail(f"{tok.text} does not fit in {dtype}", tok.pos)
            return int(tok.text)
        if tok.kind not in ("int", "float"):
            self._fail(f"expected a number in an {dtype} array, got '{tok.text}'", tok.pos)
        with np.errstate(over="ignore"):
            return np.array(float(tok.text), dtype=np.float64).astype(_IR_TO_NP[dtype])


def parse(text: str, *, verify: bool = False) -> Graph:
    """Parse IR text into a new graph; raise :class:`ParseError` (line, col) on bad text.

    With ``verify=True`` the graph is also checked by :func:`minicomp.ir.verifier.verify`.
    """
    graph = _Parser(text).parse_top()
    if verify:
        from minicomp.ir.verifier import verify as run_verifier
        run_verifier(graph)
    return graph


def clone(graph: Graph, sizes: dict[str, int] | None = None) -> Graph:
    """A deep copy of ``graph``'s structure without going through text.

    ``sizes`` (symbol -> value) specializes a symbolic graph: every symbolic size in types
    and attributes becomes its value, giving the static graph for those sizes.

    Value names, attributes (nested ``body`` graphs cloned recursively), ``loc`` and
    the name counter are preserved; numpy arrays are shared (they are never mutated).
    Values used but not defined in ``graph`` are kept as they are, so a malformed
    graph copies into an equally malformed one.
    """
    new = Graph(graph.name)
    new._names = set(graph._names)
    start = next(graph._counter)
    graph._counter = itertools.count(start)  # peeking consumed one number: put it back
    new._counter = itertools.count(start)
    remap: dict[int, Value] = {}

    def typ(t: TensorType) -> TensorType:
        return t if not sizes or not t.symbolic else TensorType(t.dtype, substitute(t.shape, sizes), t.order)

    for v in graph.inputs:
        remap[id(v)] = Value(typ(v.type), v.name)
        new.inputs.append(remap[id(v)])
    for n in graph.nodes:
        attrs = {k: _clone_attr(a, sizes) for k, a in n.attrs.items()}
        node = Node(n.op, [remap.get(id(o), o) for o in n.operands], attrs, [], n.loc)
        node.results = [Value(typ(r.type), r.name, node, i) for i, r in enumerate(n.results)]
        for r, nr in zip(n.results, node.results):
            remap[id(r)] = nr
        new.nodes.append(node)
    new.outputs = [remap.get(id(o), o) for o in graph.outputs]
    return new


def _clone_attr(value: Any, sizes: dict[str, int] | None = None) -> Any:
    if isinstance(value, Graph):
        return clone(value, sizes)
    if isinstance(value, list):
        return [_clone_attr(v, sizes) for v in value]
    if isinstance(value, tuple) and any(isinstance(v, (Graph, list, tuple)) for v in value):
        return tuple(_clone_attr(v, sizes) for v in value)
    if sizes and isinstance(value, TensorType) and value.symbolic:
        return TensorType(value.dtype, substitute(value.shape, sizes), value.order)
    return substitute(value, sizes) if sizes else value


def parse_attribute(text: str) -> Any:
    """Parse the text of one attribute value (the inverse of :func:`~minicomp.ir.printer.format_attr`)."""
    parser = _Parser(text)
    value = parser.parse_attr()
    if parser.tok.kind != "eof":
        parser._fail(f"expected end of input after the attribute, got {parser._describe(parser.tok)}")
    return value
