"""Repro scripts, reports and the shrinker of minicomp.testing (issue 21).

A repro must replay a *user's* pass in a fresh process (by importable reference), exit
1 / 0 / 2 for reproduced / not reproduced / could not run, and never overwrite an
earlier repro. Reports name outputs as the printed graph does and show input values.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from minicomp.ir import parse
from minicomp.passes import RewritePattern, apply_patterns
from minicomp.testing import (CANNOT_RUN, NOT_REPRODUCED, REPRODUCED, Case, MismatchError, PluginError,
                              check_compile, load_plugin)
from minicomp.testing.report import op_nodes
from minicomp.testing.shrink import shrink_case


class DropNegZero(RewritePattern):
    """A wrong rewrite: ``x * 0 -> 0`` (a user's pattern, defined at module level so repros can import it)."""

    def match_and_rewrite(self, node, rw):
        if node.op == "mul" and rw.is_scalar_const(node.operands[1], 0.0) and node.operands[0].type == node.result.type:
            t = node.result.type
            rw.replace(node, [rw.add("full", [], {"shape": t.shape, "value": 0.0, "dtype": t.dtype}).result])
            return True
        return False


@dataclasses.dataclass(frozen=True)
class UserPass:
    """A user's pass (not registered anywhere): the repro must rebuild it from this module."""

    name: str = "user-mul-zero"

    def run(self, graph, ctx) -> None:
        apply_patterns(graph, [DropNegZero()])


BIG = """graph @g(%x: f32[2,3], %y: f32[3]) {
  %z = constant {dtype=f32, value=dense<[0.0] : f32[]>} : f32[]
  %a = tanh %y : f32[3]
  %b = add %x, %a : f32[2,3]
  %c = mul %b, %z : f32[2,3]
  %d = reciprocal %c : f32[2,3]
  %e = sigmoid %x : f32[2,3]
  %f = sub %e, %d : f32[2,3]
  return %f, %a
}"""


def _case() -> Case:
    x = np.array([[-1.0, 2.0, 0.5], [3.0, -2.5, 1.0]], np.float32)  # x < 0: 1 / (x * 0) is -inf
    return Case(parse(BIG), [x, np.array([0.25, -0.5, 1.5], np.float32)])


def _run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)


def _replay_here(path: str, capsys) -> tuple[int, str]:
    """Run a repro script's main() in this process (a fresh process costs seconds: one test does that)."""
    import runpy
    code = runpy.run_path(path, run_name="repro")["main"]()
    return code, capsys.readouterr().out


def test_user_pass_repro_reproduces_in_a_fresh_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    with pytest.raises(MismatchError) as first:
        check_compile(_case(), targets=("interpret",), passes=["dce", UserPass()])
    err = first.value
    assert err.layer == "pass user-mul-zero"
    name = os.path.basename(err.repro_path)
    assert name.startswith("repro_pass-user-mul-zero_interpret_") and name.endswith(".py")
    with pytest.raises(MismatchError) as second:  # the same failure again: a new file, not overwritten
        check_compile(_case(), targets=("interpret",), passes=["dce", UserPass()])
    assert second.value.repro_path != err.repro_path and os.path.exists(err.repro_path)
    run = _run(err.repro_path)
    assert run.returncode == REPRODUCED, run.stdout + run.stderr
    assert "REPRODUCED: pass user-mul-zero" in run.stdout


def test_report_names_printed_outputs_and_shows_inputs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    with pytest.raises(MismatchError) as info:
        check_compile(_case(), targets=(), passes=[UserPass()])
    text = str(info.value)
    assert "%x: f32[2,3] = [-1.0, 2.0, 0.5, 3.0, -2.5, 1.0].reshape([2, 3])" in text
    assert "output 0 (%f)" in info.value.detail and "return %f, %a" in text
    assert len(text.splitlines()) < 40  # one screen


def test_pass_defined_in_a_function_makes_a_loud_repro(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))

    @dataclasses.dataclass(frozen=True)
    class Local(UserPass):
        name: str = "local-mul-zero"

    with pytest.raises(MismatchError) as info:
        check_compile(_case(), targets=(), passes=[Local()])
    assert "the repro cannot replay this" in str(info.value) and "inside a function" in str(info.value)
    code, out = _replay_here(info.value.repro_path, capsys)
    assert code == CANNOT_RUN and "could not run" in out, out


def test_bug_gone_exits_0(tmp_path, monkeypatch, capsys) -> None:
    """The bug was monkeypatched in, and is gone when the repro runs: it does not reproduce (exit 0)."""
    import minicomp.passes.canonicalize as canon
    monkeypatch.setenv("MINICOMP_REPRO_DIR", str(tmp_path))
    original = canon.builtin_patterns
    monkeypatch.setattr(canon, "builtin_patterns", lambda: [DropNegZero()] + original())
    with pytest.raises(MismatchError) as info:
        check_compile(_case(), targets=(), passes=["canonicalize"])
    assert info.value.layer == "pass canonicalize"
    monkeypatch.undo()
    code, out = _replay_here(info.value.repro_path, capsys)
    assert code == NOT_REPRODUCED and "did not reproduce" in out, out


def test_shrinker_keeps_the_failure_and_drops_the_rest() -> None:
    from minicomp.testing import find_failure
    case = _case()
    failure = find_failure(case, targets=(), passes=[UserPass()])
    assert failure is not None and op_nodes(case.graph) == 6
    small, again = shrink_case(case, failure, (), [UserPass()], budget_s=20)
    assert again.key == failure.key and op_nodes(small.graph) == 1, small.ir()
    assert [n.op for n in small.graph.nodes if n.op != "constant"] == ["mul"]
    assert all(np.asarray(a).size <= 2 for a in small.inputs), small  # shapes shrunk too


def test_load_plugin_errors_are_clear() -> None:
    with pytest.raises(PluginError, match="cannot import plugin 'no_such_minicomp_plugin'"):
        load_plugin("no_such_minicomp_plugin")
    with pytest.raises(PluginError, match="has no callable 'nope'"):
        load_plugin("minicomp.testing:nope")
