"""The bit-exact oracle of minicomp.testing (issue 21): bugs a tolerance check lets through.

``x * 0 -> 0`` with a negative x, a reassociated float sum and a backend ``max`` that
drops NaN all pass ``assert_close``-style checks on most inputs; the bit-exact mode
(a pass's output vs the graph before it, same interpreter, same inputs) catches them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from minicomp.ir import parse
from minicomp.ir.kernel import E
from minicomp.passes import RewritePattern, apply_patterns
from minicomp.testing import Case, MismatchError, bit_difference, check_compile, check_passes_exact
from test_toolkit_repro import DropNegZero as MulZero  # the wrong x * 0 -> 0 rewrite, defined once


class Reassociate(RewritePattern):
    """``(a + b) + c -> a + (b + c)``: exact in real numbers, not in floats."""

    def match_and_rewrite(self, node, rw):
        inner = node.operands[0].producer if node.op == "add" else None
        if inner is None or inner.op != "add":
            return False
        a, b = inner.operands
        rw.replace(node, [rw.add("add", [a, rw.add("add", [b, node.operands[1]]).result]).result])
        return True


@dataclasses.dataclass(frozen=True)
class PatternPass:
    """A user pass applying one pattern class (by name, so it can travel into repro scripts)."""

    pattern: str = "MulZero"
    name: str = "mul-zero"
    reassociates: bool = False

    def run(self, graph, ctx) -> None:
        apply_patterns(graph, [globals()[self.pattern]()])


MUL_ZERO = """graph @g(%x: f32[4]) {
  %z = constant {dtype=f32, value=dense<[0.0] : f32[]>} : f32[]
  %y = mul %x, %z : f32[4]
  return %y
}"""
SUM3 = """graph @g(%a: f32[4], %b: f32[4], %c: f32[4]) {
  %s = add %a, %b : f32[4]
  %t = add %s, %c : f32[4]
  return %t
}"""


def test_bit_difference_is_nan_and_sign_of_zero_aware() -> None:
    quiet, payload = np.float32("nan"), np.array([0x7FC00001], np.uint32).view(np.float32)[0]
    assert bit_difference(np.array([quiet, 1.0], np.float32), np.array([payload, 1.0], np.float32)) is None
    assert "before=-0.0, after=0.0" in bit_difference(np.array([-0.0], np.float32), np.array([0.0], np.float32))
    assert bit_difference(np.array([np.nan], np.float32), np.array([1.0], np.float32)) is not None
    assert bit_difference(np.array([1, 2]), np.array([1, 2])) is None
    assert "index (): before=-0.0" in bit_difference(np.array(-0.0, np.float32), np.array(0.0, np.float32))  # 0-d


def test_mul_by_zero_with_negative_input_caught_only_by_exact_mode(tmp_path, monkeypatch) -> None:
    """x = -1: PyTorch gives -0.0, the bad pass +0.0; assert_close calls them equal."""
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    case = Case(parse(MUL_ZERO), [np.array([-1.0, 2.0, -3.5, 0.5], np.float32)])
    check_compile(case, targets=(), passes=[PatternPass()], exact=False)  # the tolerance check misses it
    with pytest.raises(MismatchError) as info:
        check_compile(case, targets=(), passes=[PatternPass()])
    err = info.value
    assert err.layer == "pass mul-zero" and err.mode == "exact"
    assert "before=-0.0, after=0.0" in err.detail and "output 0 (%y)" in err.detail


def test_reassociated_sum_caught_unless_declared() -> None:
    a, b, c = (np.array(v, np.float32) for v in ([0.1, 1.7, 3.3], [0.2, 1.1, 0.7], [0.3, -0.9, 1.9]))
    assert ((a + b) + c != a + (b + c)).any()  # the inputs do round differently
    case = Case(parse(SUM3.replace("f32[4]", "f32[3]")), [a, b, c])
    found = check_passes_exact(case.graph, case.inputs, [PatternPass("Reassociate", "reassoc")])
    assert found is not None and found[0] == "pass reassoc" and "bit-exact" in found[1]
    declared = PatternPass("Reassociate", "reassoc", reassociates=True)
    assert check_passes_exact(case.graph, case.inputs, [declared]) is None  # judged at tolerance instead


def test_nan_dropping_backend_max_is_blamed_on_the_backend(tmp_path, monkeypatch) -> None:
    from minicomp.ir import ops
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    nan_dropping = dataclasses.replace(ops.get_op("maximum"), scalar=lambda a, b: E.where(E.gt(a, b), a, b))
    monkeypatch.setitem(ops._REGISTRY, "maximum", nan_dropping)
    g = parse("""graph @g(%a: f32[3], %b: f32[3]) {
  %m = maximum %a, %b : f32[3]
  return %m
}""")
    case = Case(g, [np.array([np.nan, 1.0, 2.0], np.float32), np.array([0.0, np.nan, 1.0], np.float32)])
    with pytest.raises(MismatchError) as info:
        check_compile(case, targets=("cpu",))
    assert info.value.layer == "backend cpu" and info.value.mode == "differential"
    assert "%a: f32[3] = [nan, 1.0, 2.0]" in str(info.value)  # small inputs inline in the report


def test_constant_fold_keeps_bits_of_a_sum_over_a_strided_view() -> None:
    """Found by the bit-exact oracle: numpy's float32 sum order followed the memory layout, so the
    interpreter summed upsample's strided result and the same values folded into a contiguous
    constant differently (37.76359176... vs 37.76359939...). The sum reference now sums C-ordered."""
    g = parse("""graph @g() {
  %c = constant {dtype=f32, value=dense<[1.0489889,1.0489889] : f32[2,1,1,1]>} : f32[2,1,1,1]
  %u = upsample_nearest2d %c {size=[6,6]} : f32[2,1,6,6]
  %s = sum %u {dims=[1,2,3], dtype=none, keepdim=true} : f32[2,1,1,1]
  return %s
}""")
    assert check_passes_exact(g, [], ["constant-fold"]) is None
