"""``external`` nodes written in text IR are checked, not trusted (issue 14, point 6).

An ``external`` node runs a PyTorch op between natively compiled parts
(:mod:`minicomp.fallback`). Text IR can name any target with any ``result_types``:
the declared types are checked against what the target returns (at compile time on
meta tensors where the op has a meta kernel, and on every call), mutating targets are
refused (by name in the verifier, by schema when the target is resolved), and a
result that shares memory with an operand never reaches the caller as an alias.
"""
from __future__ import annotations

import json

import pytest
import torch

import minicomp
from minicomp.errors import CompileError
from minicomp.frontend.external import resolve
from minicomp.ir import parse
from minicomp.ir.ops.misc import mutating_target
from minicomp.ir.verifier import VerifyError, verify


def _args(*args) -> str:
    """The ``args`` attribute text (JSON, quoted for text IR) of a call with tensor 0 and ``args``."""
    return json.dumps(json.dumps({"args": [{"tensor": 0}, *args], "kwargs": {}}))


def _graph(target: str, args: str, rt: str, *, then_mul: bool = True) -> str:
    body = f"  %1 = mul %0, %0 : {rt}\n  return %1" if then_mul else "  return %0"
    return (f"graph @g(%x: f32[2,3]) {{\n"
            f"  %0 = external %x {{args={args}, result_types=[{rt}], target=\"{target}\"}} : {rt}\n"
            f"{body}\n}}")


def test_declared_shape_that_the_target_does_not_return_is_refused_at_compile():
    """flip returns f32[2,3]; a node declaring f32[4,8] made the next kernel read 32 floats of 6."""
    graph = parse(_graph("aten.flip.default", _args([0]), "f32[4,8]"))
    with pytest.raises(CompileError, match=r"aten.flip.default: result 0 is float32\[2, 3\], the graph declares f32\[4,8\]"):
        minicomp.compile(graph, (torch.randn(2, 3),), fallback=True)


def test_declared_dtype_that_the_target_does_not_return_is_refused_at_compile():
    graph = parse(_graph("aten.flip.default", _args([0]), "f64[2,3]"))
    with pytest.raises(CompileError, match=r"result 0 is float32\[2, 3\], the graph declares f64\[2,3\]"):
        minicomp.compile(graph, (torch.randn(2, 3),), fallback=True)


def test_result_types_are_checked_on_every_call_when_only_the_data_decides():
    """nonzero's result shape depends on the values (no meta answer): checked when it runs."""
    text = ("graph @g(%x: f32[2,3]) {\n"
            f"  %0 = external %x {{args={_args()}, result_types=[i64[3,2]], target=\"aten.nonzero.default\"}} : i64[3,2]\n"
            "  %1 = add %0, %0 : i64[3,2]\n  return %1\n}")
    cm = minicomp.compile(parse(text), (torch.randn(2, 3),), fallback=True)
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])  # three nonzeros: the declared type
    torch.testing.assert_close(cm(x)[0], 2 * torch.nonzero(x))
    with pytest.raises(CompileError, match=r"aten.nonzero.default: result 0 is int64\[6, 2\] on cpu, "
                                           r"the graph declares i64\[3,2\] on cpu"):
        cm(torch.ones(2, 3))


def test_in_place_target_is_refused_by_the_verifier_and_by_compile():
    """aten.add_.Scalar replayed on the caller's tensor added 1 to the caller's input."""
    text = _graph("aten.add_.Scalar", _args(1.0), "f32[2,3]")
    with pytest.raises(VerifyError, match="'aten.add_.Scalar' is an in-place op"):
        verify(parse(text))
    x = torch.randn(2, 3)
    before = x.clone()
    with pytest.raises(CompileError, match="not valid IR.*aten.add_.Scalar' is an in-place op"):
        minicomp.compile(parse(text), (x,), fallback=True)
    assert torch.equal(x, before)


def test_out_variant_and_schema_only_mutations_are_refused():
    """``out=`` overloads are caught by name; aten.max.dim_max (an out variant without "out" in
    its name) only by the schema check when the target is resolved."""
    assert "out= variant" in mutating_target("aten.add.out")
    assert "in-place" in mutating_target("aten.__iand__.Tensor")
    assert mutating_target("aten.max.dim_max") is None
    with pytest.raises(ValueError, match="writes into its arguments"):
        resolve("aten.max.dim_max")
    with pytest.raises(VerifyError, match="out= variant"):
        verify(parse(_graph("aten.exp.out", _args(), "f32[2,3]")))


def test_name_check_flags_no_functional_aten_op():
    """The verifier's name test never refuses an op whose schema is functional (all of ATen)."""
    wrong = []
    for name in torch.ops.aten:
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            op = getattr(packet, overload)
            if mutating_target(f"aten.{name}.{overload}") and not op._schema.is_mutable:
                wrong.append(str(op))
    assert wrong == []


def test_result_that_is_the_callers_input_is_returned_as_a_copy():
    """aten.type_as returns its input itself when the dtypes agree, and its schema does not say so:
    the caller got its own input tensor back, and writing to the output changed the input."""
    args = json.dumps(json.dumps({"args": [{"tensor": 0}, {"tensor": 0}], "kwargs": {}}))
    text = ("graph @g(%x: f32[2,3]) {\n"
            f"  %0 = external %x {{args={args}, result_types=[f32[2,3]], target=\"aten.type_as.default\"}}"
            " : f32[2,3]\n  return %0\n}")
    x = torch.randn(2, 3)
    cm = minicomp.compile(parse(text), (x,), fallback=True)
    out = cm(x)[0]
    torch.testing.assert_close(out, x)
    assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_bad_args_text_is_a_compile_error():
    graph = parse(_graph("aten.flip.default", json.dumps(json.dumps({"args": [{"tensor": 3}], "kwargs": {}})),
                         "f32[2,3]"))
    with pytest.raises(CompileError, match="bad args text"):
        minicomp.compile(graph, (torch.randn(2, 3),), fallback=True)


def test_a_correct_external_still_runs():
    cm = minicomp.compile(parse(_graph("aten.flip.default", _args([0]), "f32[2,3]")), (torch.randn(2, 3),),
                          fallback=True)
    x = torch.randn(2, 3)
    torch.testing.assert_close(cm(x)[0], torch.flip(x, [0]) ** 2)
