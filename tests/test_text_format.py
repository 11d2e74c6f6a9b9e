"""The textual IR: printer and parser are exact inverses; parse errors name line and column."""
from __future__ import annotations

import math
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicomp.ir import DType, Graph, ParseError, TensorType, all_ops, constant, parse, print_graph, verify
from minicomp.ir.dtypes import promote, round_to_dtype
from minicomp.ir.ops import _REGISTRY, Attr, Category, OpDef
from minicomp.ir.parser import parse_attribute
from minicomp.ir.printer import LITERAL_LIMIT, format_attr
from minicomp.ir.types import broadcast_shapes

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ir.md"


# -- stand-ins for ops the registry may not hold yet (it is filled in parallel) ---------------
def _binary(ts, attrs):
    return [TensorType(promote(ts[0].dtype, ts[1].dtype), broadcast_shapes(ts[0].shape, ts[1].shape))]


def _split(ts, attrs):
    d, shape = attrs["dim"], ts[0].shape
    return [TensorType(ts[0].dtype, shape[:d] + (s,) + shape[d + 1:]) for s in attrs["sizes"]]


def _unary(name: str, **attrs: Attr) -> OpDef:
    return OpDef(name, Category.ELEMENTWISE, 1, lambda ts, a: [ts[0].with_order(None)], None, attrs)


#: Follow docs/ops.md; used only for op names the real registry lacks.
STAND_INS = {
    "constant": OpDef("constant", Category.OPAQUE, 0, lambda ts, a: [TensorType(a["dtype"], a["value"].shape)],
                      None, {"value": Attr("array"), "dtype": Attr("dtype")}),
    "add": OpDef("add", Category.ELEMENTWISE, 2, _binary, None),
    "mul": OpDef("mul", Category.ELEMENTWISE, 2, _binary, None),
    "relu": _unary("relu"),
    "gelu": _unary("gelu", approximate=Attr("str", "none")),
    "leaky_relu": _unary("leaky_relu", negative_slope=Attr("float", 0.01)),
    "clamp": _unary("clamp", min=Attr("any", None), max=Attr("any", None)),
    "split": OpDef("split", Category.MOVEMENT, 1, _split, None, {"dim": Attr("int"), "sizes": Attr("ints")},
                   num_results=None),
    "fused": OpDef("fused", Category.OPAQUE, None, lambda ts, a: [v.type for v in a["body"].outputs], None,
                   {"kind": Attr("str"), "body": Attr("any")}),
}


@pytest.fixture(scope="module", autouse=True)
def stand_in_ops():
    """Register the stand-ins the registry lacks, for this module only."""
    missing = {k: v for k, v in STAND_INS.items() if k not in _REGISTRY}
    with mock.patch.dict(_REGISTRY, missing):
        yield


def roundtrip(graph: Graph) -> Graph:
    """Print, parse, print again: the texts are equal; returns the parsed graph."""
    text = str(graph)
    parsed = parse(text)
    assert str(parsed) == text
    assert str(graph.copy()) == text
    return parsed


# -- hand-written graphs ----------------------------------------------------------------------
HAND_WRITTEN = [
    """graph @empty_attrs(%x: f32[2,3]) {
  return %x
}""",
    """graph @chain(%x: f32[2,3], %y: f32[3]) {
  %0 = add %x, %y : f32[2,3]
  %1 = mul %0, %0 : f32[2,3] loc("model.py:12")
  %2 = relu %1 : f32[2,3]
  return %2, %x, %2
}""",
    """graph @weights(%x: f32[1,4]) {
  %w = constant {dtype=f32, value=dense<[0.5,-1.0,2.0,-0.0] : f32[1,4]>} : f32[1,4]
  %s = constant {dtype=f64, value=dense<[nan] : f64[]>} : f64[]
  %i = constant {dtype=i64, value=dense<[-9223372036854775808,9223372036854775807] : i64[2]>} : i64[2]
  %m = constant {dtype=bool, value=dense<[true,false,true] : bool[3]>} : bool[3]
  %e = constant {dtype=f16, value=dense<[] : f16[0,4]>} : f16[0,4]
  %b = constant {dtype=bf16, value=dense<[1.0,inf,-inf] : f32[3]>} : bf16[3]
  %0 = mul %x, %w : f32[1,4]
  return %0
}""",
    """graph @layouts(%x: f32[1,8,4,4]{0,2,3,1}, %"a weird name": i32[]) {
  %layer1.0.out = relu %x : f32[1,8,4,4]{0,2,3,1}
  %0, %1 = split %layer1.0.out {dim=1, sizes=[3,5]} : f32[1,3,4,4], f32[1,5,4,4]
  return %0, %1, %"a weird name"
}""",
    """graph @attrs(%x: f32[4]) {
  %0 = leaky_relu %x {negative_slope=1e-05} : f32[4] loc("a \\"quoted\\" path\\\\file.py:3")
  %1 = gelu %0 {approximate="tanh"} : f32[4]
  %2 = clamp %1 {max=inf, min=-0.0} : f32[4]
  %3 = clamp %2 {max=none, min=-1.0} : f32[4]
  return %3
}""",
    """graph @kernels(%x: f32[1,8], %y: f32[8]) {
  %0 = fused %x, %y {body=graph @k0(%a: f32[1,8], %b: f32[8]) {
    %0 = add %a, %b : f32[1,8]
    %1 = fused %0 {body=graph @inner(%p: f32[1,8]) {
      %0 = relu %p : f32[1,8]
      return %0
    }, kind="pointwise"} : f32[1,8]
    return %1
  }, kind="pointwise"} : f32[1,8]
  return %0
}""",
]


@pytest.mark.parametrize("text", HAND_WRITTEN, ids=lambda t: t.split("(")[0].split("@")[1])
def test_hand_written_text_is_canonical(text):
    graph = parse(text)
    assert str(graph) == text
    roundtrip(graph)
    verify(graph)


def test_parse_preserves_dtypes_attrs_constants_bit_exactly():
    g = parse(HAND_WRITTEN[2])
    w, s, i, m, e, b = (n.attrs["value"] for n in g.nodes[:6])
    assert w.dtype == np.float32 and w.shape == (1, 4) and np.signbit(w[0, 3]) and w[0, 3] == 0
    assert s.dtype == np.float64 and s.shape == () and math.isnan(s)
    assert i.dtype == np.int64 and i.tolist() == [-2**63, 2**63 - 1]
    assert m.dtype == np.bool_ and m.tolist() == [True, False, True]
    assert e.dtype == np.float16 and e.shape == (0, 4)
    assert g.nodes[5].attrs["dtype"] is DType.bf16 and b.dtype == np.float32
    assert [n.attrs["dtype"] for n in g.nodes[:6]] == [DType.f32, DType.f64, DType.i64, DType.bool, DType.f16,
                                                       DType.bf16]
    assert all(not a.flags.writeable for a in (w, s, i, m, e, b))
    assert g.nodes[6].loc is None and g.outputs[0] is g.nodes[6].result


def test_attribute_value_types_survive():
    g = parse(HAND_WRITTEN[4])
    assert g.nodes[0].attrs == {"negative_slope": 1e-05} and type(g.nodes[0].attrs["negative_slope"]) is float
    assert g.nodes[0].loc == 'a "quoted" path\\file.py:3'
    assert g.nodes[2].attrs["max"] == math.inf and math.copysign(1, g.nodes[2].attrs["min"]) == -1
    assert g.nodes[3].attrs["max"] is None
    # float 1.0 and int 1 print differently, and parse back as what they were
    assert format_attr(1.0) == "1.0" and format_attr(1) == "1"
    assert type(parse_attribute("1.0")) is float and type(parse_attribute("1")) is int
    assert parse_attribute("[1,2]") == (1, 2) and parse_attribute("[]") == ()
    assert parse_attribute("bool") is DType.bool and parse_attribute("true") is True
    assert parse_attribute("f32[2,3]{1,0}") == TensorType(DType.f32, (2, 3), (1, 0))


def test_large_constants_are_base64_and_elidable():
    g = Graph("big")
    big = np.arange(LITERAL_LIMIT + 1, dtype=np.float32) - 3.5
    big[0], big[1], big[2] = np.nan, -0.0, np.float32(np.frombuffer(b"\x01\x00\xc0\x7f", np.float32)[0])
    g.set_outputs([constant(g, big, name="w")])
    text = str(g)
    assert 'dense<"' in text and " : f32[17]>" in text
    parsed = roundtrip(g).nodes[0].attrs["value"]
    assert parsed.tobytes() == big.tobytes()  # NaN payloads too
    elided = print_graph(g, elide_constants=True)
    assert "dense<...>" in elided and 'dense<"' not in elided
    with pytest.raises(ParseError, match="elided"):
        parse(elided)


def test_small_constants_print_readably():
    g = Graph("small")
    g.set_outputs([constant(g, np.array([0.1, 1e20, 3.0], np.float32), name="c")])
    assert "dense<[0.1,1e+20,3.0] : f32[3]>" in str(g)
    g = Graph("scalar")
    g.set_outputs([constant(g, np.array(-0.0, np.float64), name="s")])
    assert "%s = constant {dtype=f64, value=dense<[-0.0] : f64[]>} : f64[]" in str(g)
    assert roundtrip(g).nodes[0].attrs["value"].shape == ()


def test_copy_is_deep_and_preserves_names_locs_and_bodies():
    g = parse(HAND_WRITTEN[5])
    c = g.copy()
    assert str(c) == str(g)
    body, cbody = g.nodes[0].attrs["body"], c.nodes[0].attrs["body"]
    assert body is not cbody and body.nodes[0] is not cbody.nodes[0]
    cbody.nodes[0].op = "mul"
    assert "mul" not in str(g)
    # arrays are shared; fresh names continue the same way in both
    w = parse(HAND_WRITTEN[2])
    wc = w.copy()
    assert wc.nodes[0].attrs["value"] is w.nodes[0].attrs["value"]
    assert wc.nodes[6].loc == w.nodes[6].loc
    assert wc.fresh_name() == w.fresh_name()


# -- every op in the registry -----------------------------------------------------------------
F, I64, B = DType.f32, DType.i64, DType.bool


def T(dtype: DType, *shape: int) -> TensorType:
    return TensorType(dtype, shape)


X = T(F, 2, 3)
#: op -> candidate (operand types, attributes); the first that the op accepts is used.
SAMPLES: dict[str, list[tuple[list[TensorType], dict]]] = {
    "leaky_relu": [([X], {"negative_slope": 0.2})],
    "external": [([X], {"target": "aten.sort.default", "args": '{"args": [{"tensor": 0}], "kwargs": {}}',
                        "result_types": (X, T(DType.i64, 2, 3))})],
    "hardtanh": [([X], {"min_val": -0.5, "max_val": 2.0})],
    "gelu": [([X], {"approximate": "tanh"})],
    "clamp": [([X], {"min": -1.0, "max": None})],
    "cast": [([X], {"dtype": DType.bf16})],
    "div": [([X, T(F, 3)], {"rounding_mode": "floor"})],
    "where": [([T(B, 2, 3), X, T(F, 1, 3)], {})],
    "sum": [([X], {"dims": (1,), "keepdim": True})],
    "mean": [([X], {"dims": (0,)})],
    "amax": [([X], {"dims": (1,)})],
    "amin": [([X], {"dims": ()})],
    "argmax": [([X], {"dim": 1})],
    "argmin": [([X], {"dim": None})],
    "var": [([X], {"dims": (1,), "correction": 0.0})],
    "softmax": [([X], {"dim": 1})],
    "log_softmax": [([X], {"dim": 0})],
    "cumsum": [([X], {"dim": 1})],
    "layer_norm": [([X, T(F, 3), T(F, 3)], {"normalized_ndim": 1, "eps": 1e-6})],
    "batch_norm": [([T(F, 2, 3, 4, 4)] + [T(F, 3)] * 4, {"eps": 1e-3})],
    "matmul": [([X, T(F, 3, 4)], {})],
    "linear": [([X, T(F, 4, 3), T(F, 4)], {}), ([X, T(F, 4, 3)], {})],
    "addmm": [([T(F, 4), X, T(F, 3, 4)], {"beta": 0.5, "alpha": 2.0})],
    "conv2d": [([T(F, 1, 2, 5, 5), T(F, 4, 2, 3, 3), T(F, 4)], {"stride": (2, 2), "padding": (1, 1)})],
    "max_pool2d": [([T(F, 1, 2, 6, 6)], {"kernel": (2, 2), "stride": (2, 2)})],
    "avg_pool2d": [([T(F, 1, 2, 6, 6)], {"kernel": (3, 3), "stride": (1, 1), "divisor": None})],
    "reshape": [([X], {"shape": (3, 2)})],
    "permute": [([X], {"dims": (1, 0)})],
    "expand": [([T(F, 1, 3)], {"shape": (2, 3)})],
    "slice": [([X], {"dim": 1, "start": 0, "end": 3, "step": 2})],
    "cat": [([X, T(F, 1, 3), X], {"dim": 0})],
    "split": [([X], {"dim": 1, "sizes": (1, 2)})],
    "embedding": [([T(F, 5, 3), T(I64, 4)], {})],
    "upsample_nearest2d": [([T(F, 1, 2, 3, 3)], {"size": (6, 6)})],
    "full": [([], {"shape": (2, 3), "value": -0.0, "dtype": DType.f16})],
    "arange": [([], {"start": 0.0, "end": 5.0, "step": 1.5, "dtype": F})],
    "constant": [([], {"value": np.array([[1, 2]], np.int32), "dtype": DType.i32})],
}
GENERIC = [([X], {}), ([X, T(F, 3)], {}), ([T(B, 2, 3), T(B, 2, 3)], {}), ([X], {"dim": 1})]


def sample_graph(op: str) -> Graph:
    """A small graph applying ``op`` once (a fused wrapper for ``fused``)."""
    g = Graph(f"sample_{op}")
    if op == "fused":
        body = parse(HAND_WRITTEN[1].replace("@chain", "@body"))
        ins = [g.add_input(v.type, f"in{i}") for i, v in enumerate(body.inputs)]
        node = g.add("fused", ins, {"kind": "pointwise", "body": body})
        g.set_outputs(node.results)
        return g
    errors = []
    for types, attrs in SAMPLES.get(op, []) + GENERIC:
        g = Graph(f"sample_{op}")
        ins = [g.add_input(t) for t in types]
        try:
            node = g.add(op, ins, dict(attrs), loc=f"sample.py:{len(op)}")
        except Exception as e:  # noqa: BLE001 - try the next candidate
            errors.append(f"{[str(t) for t in types]} {attrs}: {e}")
            continue
        g.set_outputs(node.results)
        return g
    pytest.fail(f"no sample builds op '{op}'; add one to SAMPLES in tests/test_text_format.py:\n" + "\n".join(errors))


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_every_registered_op_roundtrips(op):
    g = sample_graph(op)
    verify(g)
    parsed = roundtrip(g)
    verify(parsed)
    assert [str(r.type) for r in parsed.nodes[-1].results] == [str(r.type) for r in g.nodes[-1].results]


# -- property tests ---------------------------------------------------------------------------
_NP = {DType.f32: np.float32, DType.f64: np.float64, DType.f16: np.float16, DType.bf16: np.float32,
       DType.i32: np.int32, DType.i64: np.int64, DType.bool: np.bool_}


@st.composite
def arrays(draw, max_side: int = 6):
    dtype = draw(st.sampled_from(list(DType)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    elements = None
    if dtype.is_float:
        width = {DType.f16: 16, DType.f64: 64}.get(dtype, 32)
        elements = st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    arr = draw(hnp.arrays(_NP[dtype], shape, elements=elements))
    return dtype, round_to_dtype(arr, dtype) if dtype is DType.bf16 else arr


_scalars = (st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.none()
            | st.text() | st.sampled_from(list(DType)))
attr_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)


def same_value(a, b) -> bool:
    """Structural equality where floats and arrays compare bit for bit (canonical NaN allowed)."""
    if isinstance(a, float):
        return type(b) is float and (math.isnan(a) and math.isnan(b) or
                                     (a == b and math.copysign(1, a) == math.copysign(1, b)))
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        if not (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        if a.dtype.kind == "f":
            nan = np.isnan(a)
            return bool((nan == np.isnan(b)).all()) and a[~nan].tobytes() == b[~nan].tobytes()
        return a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


@given(attr_values)
@example(("\"\\\n\t\x00\x7f\u2028é", -0.0, math.inf, -math.inf, math.nan, 1e-320, 2**70))
def test_attribute_roundtrip(value):
    text = format_attr(value)
    back = parse_attribute(text)
    assert same_value(value, back), (value, text, back)
    assert format_attr(back) == text


@given(arrays(max_side=5))
def test_array_attribute_roundtrip(dtype_and_array):
    _, arr = dtype_and_array
    back = parse_attribute(format_attr(arr))
    assert same_value(arr, back)
    assert not back.flags.writeable


@st.composite
def random_graphs(draw):
    names = st.text(min_size=1, max_size=6) | st.from_regex(r"[a-z][a-z0-9_.]{0,5}", fullmatch=True)
    g = Graph(draw(names))
    values = []
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        order = draw(st.permutations(range(len(shape))))
        values.append(g.add_input(TensorType(draw(st.sampled_from(list(DType))), shape, order), draw(names)))
    for _ in range(draw(st.integers(1, 4))):
        dtype, arr = draw(arrays(max_side=draw(st.sampled_from([2, 6]))))
        values.append(constant(g, arr, dtype, name=draw(names)))
    floats = [v for v in values if v.type.dtype.is_float]
    for _ in range(draw(st.integers(0, 3)) if floats else 0):
        src = draw(st.sampled_from(floats))
        slope = draw(st.floats(allow_nan=True, allow_infinity=True))
        loc = draw(st.none() | st.text(max_size=10))
        floats.append(g.add("leaky_relu", [src], {"negative_slope": slope}, loc=loc).result)
        values.append(floats[-1])
    g.set_outputs(draw(st.lists(st.sampled_from(values), min_size=1, max_size=3)))
    return g


@given(random_graphs())
def test_random_graph_roundtrip(g):
    parsed = roundtrip(g)
    assert [v.name for v in parsed.values()] == [v.name for v in g.values()]
    assert [v.type for v in parsed.values()] == [v.type for v in g.values()]
    assert [o.name for o in parsed.outputs] == [o.name for o in g.outputs]
    for a, b in zip(g.nodes, parsed.nodes):
        assert a.loc == b.loc and a.attrs.keys() == b.attrs.keys()
        assert all(same_value(a.attrs[k], b.attrs[k]) for k in a.attrs if not isinstance(a.attrs[k], DType))
        assert all(a.attrs[k] is b.attrs[k] for k in a.attrs if isinstance(a.attrs[k], DType))
    verify(parsed)


# -- parse errors -----------------------------------------------------------------------------
PARSE_ERRORS = [
    ("graph @g(%x: f32[2]) {\n  %0 = add %x, %y : f32[2]\n  return %0\n}", 2, 16, "use of undefined value %y"),
    ("graph @g(%x: f32[2]) {\n  %x = relu %x : f32[2]\n  return %x\n}", 2, 3,
     "value %x defined twice (first defined on line 1)"),
    ("graph @g(%x: f32[2]) {\n  %0 = nosuchop %x : f32[2]\n  return %0\n}", 2, 8,
     "invalid 'nosuchop' node: unknown op 'nosuchop'"),
    ("graph @g(%x: f32[2]) {\n  %0 = leaky_relu %x {slope=1.0} : f32[2]\n  return %0\n}", 2, 8,
     "op 'leaky_relu' has no attribute 'slope'"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu %x f32[2]\n  return %0\n}", 2, 16,
     "expected ':' and the result types, got 'f32'"),
    ("graph @g(%x: f33[2]) {\n  return %x\n}", 1, 14, "expected a dtype"),
    ("graph @g(%x: f32[2]) {\n  // a comment\n  %0, %1 = relu %x : f32[2]\n  return %0\n}", 3, 20,
     "2 result names but 1 result types"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu %x : f32[2] loc(\"a.py\n  return %0\n}", 2, 29,
     "unterminated string literal"),
    ("graph @g(%x: f32[2]) {\n  return %x\n}\ngraph", 4, 1, "expected end of input after the graph, got 'graph'"),
    ("graph @g(%x: f32[2]) {\n  return %x\n", 3, 1, "expected '}' after return, got end of input"),
    ("graph @g(%x: f32[2]) {\n  %c = constant {dtype=f32, value=dense<[1.0,2.0] : f32[3]>} : f32[3]\n"
     "  return %c\n}", 2, 41, "dense<> literal has 2 elements, but f32[3] needs 3"),
    ("graph @g(%x: f32[2]) {\n  %c = constant {dtype=i32, value=dense<[1.5] : i32[1]>} : i32[1]\n"
     "  return %c\n}", 2, 42, "expected an integer in an i32 array, got '1.5'"),
    ("graph @g(%x: f32[2]) {\n  %0 = gelu %x {approximate=\"a\\q\"} : f32[2]\n  return %0\n}", 2, 29,
     "unknown escape '\\q' in string"),
    ("graph @g(%x: f32[2]) {\n  %c = constant {dtype=f32, value=dense<\"!!!\" : f32[2]>} : f32[2]\n"
     "  return %c\n}", 2, 41, "invalid base64 data in dense<>"),
    ("graph @g(%x: f32[2]{1,0}) {\n  return %x\n}", 1, 14, "is not a permutation"),
    ("graph @g(%x: f32[2]) {\n  %0 = relu %x : f32[2] # oops\n  return %0\n}", 2, 25, "unexpected character '#'"),
    ("graph @g(%x: f32[2]) {\n  %0 = leaky_relu %x {negative_slope=} : f32[2]\n  return %0\n}", 2, 38,
     "expected an attribute value, got '}'"),
]


@pytest.mark.parametrize("text,line,col,message", PARSE_ERRORS)
def test_parse_errors_name_line_and_column(text, line, col, message):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert (info.value.line, info.value.col) == (line, col), str(info.value)
    assert str(info.value).startswith(f"line {line} col {col}: ")
    assert message in str(info.value)


def test_parse_with_verify_checks_types():
    text = "graph @g(%x: f32[2]) {\n  %0 = add %x, %x : f32[3]\n  return %0\n}"
    parse(text)  # printable, so parseable
    with pytest.raises(ValueError, match=re.escape("differ from the inferred f32[2]")):
        parse(text, verify=True)


# -- docs/ir.md -------------------------------------------------------------------------------
def test_docs_code_blocks_parse_and_roundtrip():
    blocks = re.findall(r"```(\w*)\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 4
    for tag, block in blocks:
        assert tag == "ir", "every fenced block of docs/ir.md is IR"
        g = parse(block)
        verify(g)
        roundtrip(g)
