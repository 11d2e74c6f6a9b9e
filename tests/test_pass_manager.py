"""The pass manager: registry, verification after each pass, dumps, printing, statistics."""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

import pytest

from minicomp.ir import Graph, parse
from minicomp.passes import (Extend, Pass, PassContext, PassManager, build_pipeline, default_pass_names,
                             default_pipeline, explain, get_pass, pass_names, register_pass, verify_requested)

TEXT = textwrap.dedent("""
    graph @g(%x: f32[4,8]) {
      %a = relu %x : f32[4,8]
      %b = exp %a : f32[4,8]
      %dead = neg %x : f32[4,8]
      return %b
    }""")


def test_registry_knows_every_builtin_pass():
    assert {"dce", "cse", "constant-fold", "canonicalize", "decompose", "layout", "fuse",
            "plan-memory"} <= set(pass_names())
    assert get_pass("dce").name == "dce"


def test_unknown_pass_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown pass 'nope'.*known passes"):
        get_pass("nope")


def test_default_pipeline_is_a_flat_list_of_passes():
    pipe = default_pipeline("cpu")
    assert all(isinstance(p, Pass) for p in pipe)
    assert [p.name for p in pipe][:2] == ["dce", "cse"] and "fuse" in [p.name for p in pipe]
    assert "fuse" not in [p.name for p in default_pipeline("cpu", {"fuse": False})]


def test_stats_dumps_and_printing(tmp_path):
    printed = []
    ctx = PassContext()
    pm = PassManager(["dce", "fuse"], dump_dir=str(tmp_path), print_after=["fuse"], printer=printed.append)
    out = pm.run(parse(TEXT), ctx)
    assert sorted(os.listdir(tmp_path)) == ["00-input.mcir", "01-dce.mcir", "02-fuse.mcir"]
    parse((tmp_path / "01-dce.mcir").read_text())  # small graphs dump parseable text
    assert len(printed) == 1 and "IR after fuse" in printed[0] and "fused" in printed[0]
    assert [s.name for s in ctx.stats] == ["dce", "fuse"]
    assert [s.kernels for s in ctx.stats] == [2, 1]
    assert ctx.stats[0].bytes_moved == 4 * 128 and ctx.stats[1].bytes_moved == 2 * 128
    assert ctx.stats[1].nodes == len(out.nodes) == 1
    assert "fuse" in explain(ctx)


@dataclass(frozen=True)
class _Breaker(Pass):
    name: str = "breaker"

    def run(self, graph: Graph, ctx: PassContext) -> None:
        graph.nodes.reverse()  # uses before definitions


def test_verifier_runs_after_each_pass():
    with pytest.raises(Exception, match="after pass 'breaker'"):
        PassManager([_Breaker()]).run(parse(TEXT))
    PassManager([_Breaker()], verify=False).run(parse(TEXT))


def test_register_custom_pass_and_duplicate_names():
    @register_pass("test-noop")
    @dataclass(frozen=True)
    class Noop(Pass):
        name: str = "test-noop"

        def run(self, graph, ctx):
            ctx.record("rewrite", "nothing", "a test pass")

    ctx = PassContext()
    PassManager(["test-noop"]).run(parse(TEXT), ctx)
    assert ctx.decisions[0].pass_name == "test-noop"
    register_pass("test-noop", Noop)  # the same definition again (a re-run script) is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_pass("test-noop", lambda: Noop())


def test_extend_puts_extra_passes_at_named_points_of_the_default_pipeline():
    mine = _Breaker(name="mine")
    names = [p.name for p in build_pipeline("cpu", {}, Extend(after={"fuse": [mine]}, before={"dce": ["cse"]},
                                                              at_end=["dce"]))]
    default = default_pass_names({})
    # before: ahead of the first dce; after: right after the (only) fuse; at_end: last
    assert names == ["cse"] + default[:default.index("fuse") + 1] + ["mine"] + \
        default[default.index("fuse") + 1:] + ["dce"]
    assert [p.name for p in build_pipeline("cpu", {}, None)] == default
    assert [p.name for p in build_pipeline("cpu", {}, ["dce"])] == ["dce"]  # a list replaces the pipeline
    with pytest.raises(ValueError, match="names pass 'fuse', which the default pipeline does not run"):
        build_pipeline("cpu", {"fuse": False}, Extend(after={"fuse": ["dce"]}))


def test_minicomp_verify_env_turns_the_verifier_on(monkeypatch):
    monkeypatch.setenv("MINICOMP_VERIFY", "0")
    assert not verify_requested(False) and verify_requested(True)
    monkeypatch.setenv("MINICOMP_VERIFY", "1")
    assert verify_requested(False)
    monkeypatch.setenv("MINICOMP_VERIFY", "yes")
    with pytest.raises(ValueError, match="MINICOMP_VERIFY"):
        verify_requested(False)


def test_the_test_suite_verifies_every_compile():
    assert os.environ.get("MINICOMP_VERIFY") == "1"  # tests/conftest.py


def test_rewrite_listener_sees_every_rewrite_of_the_builtin_passes():
    """ctx.listener is told, per fired pattern, which node it rewrote and which nodes it added."""
    from minicomp.driver import pass_context, run_passes
    from minicomp.passes import RewriteListener

    class Log(RewriteListener):
        def __init__(self):
            self.seen = []

        def on_rewrite(self, pattern, node, added, graph):
            self.seen.append((type(pattern).__name__, node.op, [n.op for n in added]))

    g = parse(textwrap.dedent("""
        graph @g(%x: f32[4]) {
          %a = neg %x : f32[4]
          %b = neg %a : f32[4]
          %c = permute %b {dims=[0]} : f32[4]
          return %c
        }"""))
    log = Log()
    out, ctx = run_passes(g, "cpu", ["canonicalize"], {}, listener=log)
    assert ("DoubleNegation", "neg", []) in log.seen and ("NoOpView", "permute", []) in log.seen
    assert [n.op for n in out.nodes] == [] and ctx.listener is log
    assert pass_context("cpu").options["target"] == "cpu" and "kn_weight" in pass_context("cpu").options
