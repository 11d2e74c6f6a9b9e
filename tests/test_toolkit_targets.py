"""Targets under test, and the rewrite driver's contract checks (issue 21).

* An unknown target is a usage error listing the known ones, never a "mismatch in backend X".
* A registered target (a backend under test) is checked, and blamed, like a built-in one.
* A rewrite pattern that inserts nodes and then declines (or claims a rewrite it did not
  make) is named and rejected at its first call, instead of spinning 100 sweeps.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicomp
from minicomp.ir import parse
from minicomp.passes import RewritePattern, apply_patterns
from minicomp.passes.rewrite import PatternError
from minicomp.testing import Case, MismatchError, UnknownTargetError, check_compile, register_target, target_names
from minicomp.testing.targets import unregister_target

G = """graph @g(%x: f32[3]) {
  %y = neg %x : f32[3]
  return %y
}"""


def _case() -> Case:
    return Case(parse(G), [np.array([1.0, -2.0, 0.5], np.float32)])


def test_unknown_target_is_a_usage_error() -> None:
    with pytest.raises(UnknownTargetError, match=r"unknown target 'cpuu'; known targets: cpu, interpret, triton"):
        check_compile(_case(), targets=("cpuu",))
    with pytest.raises(ValueError, match="not the string 'cpu'"):
        check_compile(_case(), targets="cpu")


def off_by_one_backend(graph, passes):
    """A backend under test that adds one to every float output (registered at module level)."""
    def run(inputs):
        outs = minicomp.interpret(graph, *[t.numpy() for t in inputs])
        return [np.asarray(o) + 1 if np.asarray(o).dtype.kind == "f" else o for o in outs]
    return run


def test_registered_target_is_checked_and_blamed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    register_target("off-by-one", off_by_one_backend)
    try:
        assert "off-by-one" in target_names()
        with pytest.raises(MismatchError) as info:
            check_compile(_case(), targets=("off-by-one",))
        assert info.value.layer == "backend off-by-one" and info.value.target == "off-by-one"
        assert "repro_backend-off-by-one_off-by-one_" in info.value.repro_path
        assert "test_toolkit_targets" in open(info.value.repro_path).read()  # the target travels by reference
    finally:
        unregister_target("off-by-one")
    with pytest.raises(ValueError, match="built in"):
        register_target("cpu", off_by_one_backend)


class AddsThenDeclines(RewritePattern):
    """The bug of issue 21: builds a node, then finds the rewrite does not apply."""

    def match_and_rewrite(self, node, rw):
        if node.op != "neg":
            return False
        rw.add("abs", [node.operands[0]])
        return False


class ClaimsWithoutRewriting(RewritePattern):
    name = "lazy-claim"

    def match_and_rewrite(self, node, rw):
        return node.op == "neg"


def test_pattern_that_adds_then_declines_is_named_at_once() -> None:
    with pytest.raises(PatternError, match=r"'AddsThenDeclines' changed the graph .* but returned False"):
        apply_patterns(parse(G), [AddsThenDeclines()])
    with pytest.raises(PatternError, match=r"'lazy-claim' returned True .* but changed nothing"):
        apply_patterns(parse(G), [ClaimsWithoutRewriting()])


class Flip(RewritePattern):
    """neg <-> abs forever (each rewrite is real): no fixpoint."""

    def match_and_rewrite(self, node, rw):
        other = {"neg": "abs", "abs": "neg"}.get(node.op)
        if other is None:
            return False
        rw.replace(node, [rw.add(other, node.operands).result])
        return True


def test_no_fixpoint_names_the_patterns_still_firing() -> None:
    with pytest.raises(PatternError, match=r"fixpoint in 5 sweeps; still firing in the last sweep: 'Flip' \(1x\)"):
        apply_patterns(parse(G), [Flip()], max_iterations=5)
