"""dce, cse, constant-fold and canonicalize: text IR in, text IR out, and exact values on special inputs."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from minicomp.ir import interpret, parse, verify
from minicomp.passes import PassContext, PassManager, get_pass

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 3e38, 1e-45], dtype=np.float32)


def run(name: str, text: str, **options) -> str:
    g = parse(textwrap.dedent(text))
    out = PassManager([get_pass(name)]).run(g, PassContext(options=options))
    return str(out)


def ir(text: str) -> str:
    return str(parse(textwrap.dedent(text)))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind != "f":
        return a.dtype == b.dtype and np.array_equal(a, b)
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize]
    an, bn = np.isnan(a), np.isnan(b)
    return a.dtype == b.dtype and np.array_equal(an, bn) and \
        np.array_equal(np.where(an, 0, a).view(u), np.where(bn, 0, b).view(u))


def exact_after(name: str, text: str, inputs) -> str:
    """Run pass ``name``; assert outputs are bit-identical on ``inputs``; return the new IR text."""
    g = parse(textwrap.dedent(text))
    want = interpret(g, *inputs)
    out = PassManager([get_pass(name)]).run(g.copy(), PassContext())
    verify(out)
    for w, o in zip(want, interpret(out, *inputs)):
        assert same_bits(w, o), (w, o)
    return str(out)


def test_dce_removes_unused_nodes():
    assert run("dce", """
        graph @g(%x: f32[4]) {
          %a = exp %x : f32[4]
          %b = neg %x : f32[4]
          return %b
        }""") == ir("""
        graph @g(%x: f32[4]) {
          %b = neg %x : f32[4]
          return %b
        }""")


def test_cse_merges_identical_nodes_and_constants():
    assert run("cse", """
        graph @g(%x: f32[4]) {
          %c = constant {dtype=f32, value=dense<[2.0] : f32[]>} : f32[]
          %d = constant {dtype=f32, value=dense<[2.0] : f32[]>} : f32[]
          %a = mul %x, %c : f32[4]
          %b = mul %x, %d : f32[4]
          %s = add %a, %b : f32[4]
          return %s
        }""") == ir("""
        graph @g(%x: f32[4]) {
          %c = constant {dtype=f32, value=dense<[2.0] : f32[]>} : f32[]
          %a = mul %x, %c : f32[4]
          %s = add %a, %a : f32[4]
          return %s
        }""")


def test_cse_keeps_constants_differing_in_zero_sign():
    text = """
        graph @g(%x: f32[4]) {
          %c = constant {dtype=f32, value=dense<[0.0] : f32[]>} : f32[]
          %d = constant {dtype=f32, value=dense<[-0.0] : f32[]>} : f32[]
          %a = add %x, %c : f32[4]
          %b = add %x, %d : f32[4]
          %s = sub %a, %b : f32[4]
          return %s
        }"""
    assert run("cse", text) == ir(text)


def test_constant_fold():
    out = run("constant-fold", """
        graph @g(%x: f32[2]) {
          %c = constant {dtype=f32, value=dense<[1.0,4.0] : f32[2]>} : f32[2]
          %s = sqrt %c : f32[2]
          %y = mul %x, %s : f32[2]
          return %y
        }""")
    assert "sqrt" not in out and "[1.0,2.0]" in out


def test_constant_fold_respects_size_limit():
    text = """
        graph @g() {
          %c = constant {dtype=f32, value=dense<[1.0] : f32[]>} : f32[]
          %e = expand %c {shape=[100,100]} : f32[100,100]
          return %e
        }"""
    assert "expand" in run("constant-fold", text)
    assert "expand" not in run("constant-fold", text, fold_limit=10**4)


def _unary_graph(op: str, const: str, swap: bool = False, dtype: str = "f32", attrs: str = "") -> str:
    a, b = ("%c", "%x") if swap else ("%x", "%c")
    storage = "f32" if dtype == "bf16" else dtype  # bf16 constants are stored as f32 arrays
    return f"""
        graph @g(%x: {dtype}[9]) {{
          %c = constant {{dtype={dtype}, value=dense<[{const}] : {storage}[]>}} : {dtype}[]
          %y = {op} {a}, {b}{attrs} : {dtype}[9]
          return %y
        }}"""


@pytest.mark.parametrize("op,const,swap", [("mul", "1.0", False), ("mul", "1.0", True), ("div", "1.0", False),
                                           ("add", "-0.0", False), ("add", "-0.0", True), ("sub", "0.0", False)])
def test_identity_elements_fold_exactly(op, const, swap):
    out = exact_after("canonicalize", _unary_graph(op, const, swap), [SPECIAL])
    assert op not in out.split("{", 1)[1]


@pytest.mark.parametrize("op,const", [("add", "0.0"), ("sub", "-0.0"), ("mul", "-1.0"), ("div", "-1.0")])
def test_non_identities_are_kept(op, const):
    # x + 0.0 is +0.0 for x = -0.0; x - (-0.0) likewise: not identities
    out = exact_after("canonicalize", _unary_graph(op, const), [SPECIAL])
    assert f"{op} %x, %c" in out


def test_int_add_zero_and_self_subtract():
    xs = [np.array([0, -3, 7, 2**31 - 1, -2**31, 1, 2, 3, 4], dtype=np.int32)]
    assert "add" not in exact_after("canonicalize", _unary_graph("add", "0", dtype="i32"), xs).split("{", 1)[1]
    out = exact_after("canonicalize", """
        graph @g(%x: i32[9]) {
          %y = sub %x, %x : i32[9]
          return %y
        }""", xs)
    assert "sub" not in out and "full" in out


def test_float_self_subtract_is_kept():
    out = exact_after("canonicalize", """
        graph @g(%x: f32[9]) {
          %y = sub %x, %x : f32[9]
          return %y
        }""", [SPECIAL])
    assert "sub %x, %x" in out


def test_double_negation_noop_views_and_casts():
    out = exact_after("canonicalize", """
        graph @g(%x: f32[3,3]) {
          %a = neg %x : f32[3,3]
          %b = neg %a : f32[3,3]
          %c = cast %b {dtype=f32} : f32[3,3]
          %d = reshape %c {shape=[3,3]} : f32[3,3]
          %e = expand %d {shape=[3,3]} : f32[3,3]
          %f = permute %e {dims=[0,1]} : f32[3,3]
          %h = slice %f {dim=1, start=0, end=3} : f32[3,3]
          return %h
        }""", [SPECIAL.reshape(3, 3)])
    assert out == ir("""
        graph @g(%x: f32[3,3]) {
          return %x
        }""")


def test_view_composition():
    out = exact_after("canonicalize", """
        graph @g(%x: f32[2,3,4]) {
          %a = permute %x {dims=[2,0,1]} : f32[4,2,3]
          %b = permute %a {dims=[1,2,0]} : f32[2,3,4]
          %c = reshape %b {shape=[6,4]} : f32[6,4]
          %d = reshape %c {shape=[24]} : f32[24]
          return %d
        }""", [np.arange(24, dtype=np.float32).reshape(2, 3, 4)])
    assert "permute" not in out and out.count("reshape") == 1


@pytest.mark.parametrize("cond,kept", [("true", "%a"), ("false", "%b")])
def test_where_with_constant_condition(cond, kept):
    out = exact_after("canonicalize", f"""
        graph @g(%a: f32[9], %b: f32[9]) {{
          %c = constant {{dtype=bool, value=dense<[{cond}] : bool[]>}} : bool[]
          %y = where %c, %a, %b : f32[9]
          return %y
        }}""", [SPECIAL, SPECIAL[::-1].copy()])
    assert "where" not in out and f"return {kept}" in out


def test_broadcasting_identity_is_not_folded():
    # x * 1 where the constant broadcasts x to a larger shape changes the type: keep it
    out = exact_after("canonicalize", """
        graph @g(%x: f32[1]) {
          %c = constant {dtype=f32, value=dense<[1.0,1.0] : f32[2]>} : f32[2]
          %y = mul %x, %c : f32[2]
          return %y
        }""", [np.array([np.nan], np.float32)])
    assert "mul" in out


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

RULES = [("mul", "1.0", False), ("mul", "1.0", True), ("div", "1.0", False), ("add", "-0.0", False),
         ("add", "-0.0", True), ("sub", "0.0", False)]


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("op,const,swap", RULES)
# width-16 floats are drawn by filtering inside hypothesis itself; under load that trips the
# filter health check although every drawn value is valid.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_identity_rules_bit_exact_on_any_floats(dtype, op, const, swap, data):
    from minicomp.ir import DType
    np_dt = DType.parse(dtype).np
    width = {"f16": 16, "bf16": 32, "f32": 32, "f64": 64}[dtype]
    xs = data.draw(st.lists(st.floats(width=width, allow_nan=True, allow_infinity=True), min_size=9, max_size=9))
    x = np.array(xs, dtype=np_dt)
    if dtype == "bf16":
        from minicomp.ir.dtypes import DType as D, round_to_dtype
        x = round_to_dtype(x, D.bf16)
    out = exact_after("canonicalize", _unary_graph(op, const, swap, dtype=dtype), [x])
    assert op not in out.split("{", 1)[1]


@settings(max_examples=25, deadline=None)
@given(xs=st.lists(st.floats(width=32), min_size=9, max_size=9))
def test_double_negation_bit_exact_on_any_floats(xs):
    exact_after("canonicalize", """
        graph @g(%x: f32[9]) {
          %a = neg %x : f32[9]
          %b = neg %a : f32[9]
          return %b
        }""", [np.array(xs, np.float32)])
