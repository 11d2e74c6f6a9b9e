"""``minicomp explore``: the pass record, the server's routes, and the page in headless Chromium.

The browser tests drive the real page through Chromium's DevTools protocol
(:mod:`minicomp.explore.browser`); they skip, saying why, only where no Chromium is
installed (``.ci/run`` installs Debian's).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from minicomp.explore.browser import Browser, find_chromium
from minicomp.explore.cli import main as explore_main
from minicomp.explore.graphsvg import graph_svg
from minicomp.explore.page import render_page
from minicomp.explore.record import explore_file
from minicomp.explore.server import ExploreServer
from minicomp.ir import parse
from minicomp.passes import Pass, get_pass

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

CANON_IR = """graph @canon(%x: f32[4,8]) {
  %one = constant {dtype=f32, value=dense<[1.0] : f32[1]>} : f32[1]
  %a = mul %x, %one : f32[4,8]
  %n1 = neg %a : f32[4,8]
  %n2 = neg %n1 : f32[4,8]
  %r = reshape %n2 {shape=[32]} : f32[32]
  %s = reshape %r {shape=[8,4]} : f32[8,4]
  return %s
}
"""


@dataclass(frozen=True)
class TanhToSigmoid(Pass):
    """A wrong pass (tanh is not sigmoid): the numeric check must single it out."""

    name: str = "tanh-to-sigmoid"

    def run(self, graph, ctx):
        for node in list(graph.nodes):
            if node.op == "tanh":
                new = graph.add("sigmoid", node.operands, before=node)
                graph.replace_uses(node.result, new.result)
                graph.remove(node)


# -- the record ---------------------------------------------------------------------------
def test_record_of_an_ir_file_has_every_pass_its_diff_and_numbers():
    report = explore_file(str(EXAMPLES / "graph.mcir"), [get_pass(n) for n in ("dce", "cse", "fuse")], native=False)
    data = report.data()
    assert [p["name"] for p in data["passes"]] == ["input", "dce", "cse", "fuse"]
    nodes = [p["nodes"] for p in data["passes"]]
    assert nodes[1] == nodes[0] - 1 and nodes[2] == nodes[1] - 1  # dce drops %dead, cse one mul
    assert ("-", "  %dead = exp %x : f32[8,256]") in data["passes"][1]["diff"]
    assert all(p["numeric"]["ok"] is True for p in data["passes"])
    assert all(p["numeric"]["max_abs"] == 0.0 for p in data["passes"])  # exact passes, same interpreter
    assert data["first_failure"] is None and data["pending"] == []
    assert data["passes"][3]["kernels"] == 1 and 'data-k="0"' in data["passes"][3]["svg"]


def test_first_pass_beyond_tolerance_is_the_wrong_one(tmp_path):
    passes = [get_pass("dce"), TanhToSigmoid(), get_pass("cse")]
    data = explore_file(str(EXAMPLES / "graph.mcir"), passes, native=False).data()
    assert data["first_failure"] == 2
    bad = data["passes"][2]["numeric"]
    assert bad["ok"] is False and bad["max_abs"] > 0.1 and bad["vs_previous"] > 0.1
    assert data["passes"][3]["numeric"]["ok"] is False  # still wrong after it, but not the first


def test_each_rewrite_is_recorded_with_its_pattern_and_the_graph_before_and_after(tmp_path):
    f = tmp_path / "canon.mcir"
    f.write_text(CANON_IR)
    data = explore_file(str(f), [get_pass("canonicalize")], native=False).data()
    steps = data["passes"][1]["rewrites"]
    assert [s["pattern"] for s in steps] == ["IdentityElement", "DoubleNegation", "ComposeViews"]
    assert steps[0]["matched"] == ["a"] and steps[1]["matched"] == ["n2"] and steps[2]["matched"] == ["s"]
    assert steps[2]["added"] and all(s["diff"] for s in steps)
    removed = [ln.strip() for t, ln in steps[2]["diff"] if t == "-"]
    added = [ln.strip() for t, ln in steps[2]["diff"] if t == "+"]
    assert removed == ["return %s"]  # (%s itself goes when the driver removes dead nodes)
    new = steps[2]["added"][0]
    assert f"%{new} = reshape %x {{shape=[8,4]}} : f32[8,4]" in added and f"return %{new}" in added
    assert data["passes"][1]["numeric"]["ok"] is True


class _Seen:
    """A pattern that prints the graph before delegating to ``inner``: the ground truth of what each
    rewrite saw, taken *before* it (the explorer's listener is only told after)."""

    def __init__(self, inner, log):
        from minicomp.passes.rewrite import pattern_name
        self.inner, self.log, self.name, self.ops = inner, log, pattern_name(inner), inner.ops

    def match_and_rewrite(self, node, rw):
        from minicomp.ir.printer import print_graph
        before = print_graph(rw.graph, elide_constants=True)
        fired = self.inner.match_and_rewrite(node, rw)
        if fired:
            self.log.append((self.name, [r.name for r in node.results], before,
                             print_graph(rw.graph, elide_constants=True)))
        return fired


def _as_seen(report, patterns) -> int:
    """Check the explorer's record of pass 1 against :class:`_Seen` on a copy of its input graph
    (pattern, node, texts before and after, each rewrite); returns how many times the driver
    removed dead nodes between two recorded rewrites."""
    from minicomp.passes.rewrite import apply_patterns
    steps, truth = report.passes[1].rewrites, []
    assert apply_patterns(report.passes[0].graph.copy(), [_Seen(p, truth) for p in patterns])
    assert len(steps) == len(truth) > 1
    for step, (pattern, matched, before, after) in zip(steps, truth):
        assert (step.pattern, step.matched) == (pattern, matched)
        assert step.missing is None and step.before == before and step.after == after
    assert steps[0].before == report.passes[0].text
    return sum(1 for a, b in zip(truth, truth[1:]) if a[3] != b[2])


def test_the_listener_records_each_rewrite_of_canonicalize_on_the_transformer_block():
    from minicomp.passes.canonicalize import builtin_patterns
    report = explore_file(str(EXAMPLES / "transformer_block.py"), [get_pass("canonicalize")], native=False)
    _as_seen(report, builtin_patterns())
    assert report.passes[1].nodes < report.passes[0].nodes


TWO_SWEEPS_IR = """graph @g(%x: f32[4,8]) {
  %r = reshape %x {shape=[32]} : f32[32]
  %s = reshape %r {shape=[4,8]} : f32[4,8]
  %n1 = neg %s : f32[4,8]
  %n2 = neg %n1 : f32[4,8]
  %t = reshape %n2 {shape=[32]} : f32[32]
  %u = reshape %t {shape=[4,8]} : f32[4,8]
  return %u
}
"""


def test_a_rewrite_after_dead_nodes_were_removed_shows_the_graph_it_saw(tmp_path):
    from minicomp.passes.canonicalize import builtin_patterns
    f = tmp_path / "two.mcir"
    f.write_text(TWO_SWEEPS_IR)  # the reshape that ComposeViews adds is a no-op only seen in sweep 2
    report = explore_file(str(f), [get_pass("canonicalize")], native=False)
    assert _as_seen(report, builtin_patterns()) == 1
    assert [s.pattern for s in report.passes[1].rewrites][-1] == "NoOpView"


@dataclass(frozen=True)
class UserPatterns(Pass):
    """A user's pattern pass: hands ``ctx.listener`` on or not, and may edit the graph between calls."""

    name: str = "user-patterns"
    listen: bool = True
    edit_between: bool = False

    def run(self, graph, ctx):
        from minicomp.passes.canonicalize import ComposeViews, NoOpView
        from minicomp.passes.rewrite import apply_patterns
        listener = ctx.listener if self.listen else None
        apply_patterns(graph, [ComposeViews()], listener=listener)
        if self.edit_between:
            graph.add("neg", [graph.inputs[0]])  # a node the listener was never told about
        apply_patterns(graph, [NoOpView()], listener=listener)


def test_user_pattern_passes_show_their_rewrites_when_they_hand_on_the_listener(tmp_path):
    from minicomp.explore.rewrites import NOT_KNOWN
    f = tmp_path / "two.mcir"
    f.write_text(TWO_SWEEPS_IR)
    listens = explore_file(str(f), [UserPatterns()], native=False).data()["passes"][1]
    assert [s["pattern"] for s in listens["rewrites"]] == ["ComposeViews"] * 2 + ["NoOpView"] * 2
    assert all(s["diff"] and s["missing"] is None for s in listens["rewrites"])
    silent = explore_file(str(f), [UserPatterns(listen=False)], native=False).data()["passes"][1]
    assert silent["rewrites"] == [] and silent["diff"] == listens["diff"]  # per pass only
    edited = explore_file(str(f), [UserPatterns(edit_between=True)], native=False).data()["passes"][1]
    first, second = edited["rewrites"][2:]  # the edit between the two calls is not visible to a listener
    assert first["pattern"] == "NoOpView" and first["diff"] is None and first["missing"] == NOT_KNOWN
    assert second["diff"] and second["missing"] is None  # known again from the first one's "after"


def test_kernels_of_both_targets():
    cpu = explore_file(str(EXAMPLES / "graph.mcir"), [get_pass("fuse")]).data()["kernels"]
    (k,) = cpu["kernels"]
    assert cpu["error"] is None and k["language"] == "LLVM IR" and "define" in k["source"] and k["asm"]
    assert k["node"] == ["d_f"] and k["us"] > 0 and 0 < k["share"]
    gpu = explore_file(str(EXAMPLES / "graph.mcir"), [get_pass("fuse")], target="triton").data()["kernels"]
    (k,) = gpu["kernels"]
    assert gpu["error"] is None and k["language"] == "Triton" and "@triton.jit" in k["source"]
    assert k["node"] == ["d_f"] and "us" not in k and "CPU target only" in gpu["timing_error"]


def test_a_failing_pass_is_shown_and_ends_the_pipeline():
    @dataclass(frozen=True)
    class Broken(Pass):
        name: str = "broken"

        def run(self, graph, ctx):
            raise RuntimeError("boom")
    data = explore_file(str(EXAMPLES / "graph.mcir"), [get_pass("dce"), Broken(), get_pass("cse")],
                        native=False).data()
    assert [p["name"] for p in data["passes"]] == ["input", "dce", "broken"]
    assert data["passes"][2]["error"] == "RuntimeError: boom"


def test_graph_svg_marks_every_value_and_draws_kernels_as_clusters():
    from minicomp.passes import PassManager
    g = PassManager(["fuse"]).run(parse((EXAMPLES / "graph.mcir").read_text()))
    svg = graph_svg(g)
    fused = next(n for n in g.nodes if n.op == "fused")
    assert svg.count('class="gk"') == 1 and f'data-v="{fused.results[0].name}"' in svg
    for node in fused.attrs["body"].nodes:
        assert f'data-v="{node.results[0].name} {fused.results[0].name}"' in svg


def test_graphviz_drawing_marks_every_box_and_cluster():
    import shutil

    from minicomp.explore.graphsvg import graph_svgs
    from minicomp.passes import PassManager
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (.ci/run installs it)")
    g = PassManager(["fuse"]).run(parse((EXAMPLES / "graph.mcir").read_text()))
    (svg,), note = graph_svgs([g], "dot")
    assert note is None and svg.startswith('<svg class="graph gv"')
    fused = next(n for n in g.nodes if n.op == "fused")
    assert f'class="cluster gk" data-k="0" data-v="{fused.results[0].name}"' in svg
    for node in fused.attrs["body"].nodes:
        assert f'data-v="{node.results[0].name} {fused.results[0].name}" data-k="0"' in svg


def test_page_is_self_contained_and_its_json_cannot_close_the_script():
    page = render_page({"title": "t</script><script>alert(1)</script>", "passes": [], "x": float("nan")})
    assert "</script><script>alert(1)" not in page and "<!--" not in page.split('id="data">')[1].split("</script>")[0]
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from the network


# -- the command line ---------------------------------------------------------------------
def test_cli_user_errors_are_one_line_exit_2(capsys, tmp_path):
    assert explore_main(["--bogus"]) == 2
    assert explore_main([str(tmp_path / "missing.py")]) == 2
    assert explore_main([str(EXAMPLES / "graph.mcir"), "--passes", "dce,nosuchpass"]) == 2
    assert explore_main([str(EXAMPLES / "graph.mcir"), "--html", str(tmp_path / "no" / "dir.html")]) == 2
    nomodel = tmp_path / "nomodel.py"
    nomodel.write_text("x = 1\n")
    assert explore_main([str(nomodel)]) == 2  # (server mode: refused before anything is served)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 5 and all(ln.startswith("minicomp explore: error: ") for ln in err)
    assert "nosuchpass" in err[2] and "defines no model()" in err[4] and "Traceback" not in "".join(err)
    assert "serving" not in captured.out


def test_cli_html_with_a_plugin_pass(tmp_path, capsys, monkeypatch):
    from minicomp.testing import plugins
    # plugins loaded in a process go into every later repro script: keep this one to this test
    monkeypatch.setattr(plugins, "_LOADED", [])
    plugin = tmp_path / "myplugin.py"
    plugin.write_text("from dataclasses import dataclass\nfrom minicomp.passes import Pass, register_pass\n\n"
                      "@register_pass('explore-test-noop')\n@dataclass(frozen=True)\nclass Noop(Pass):\n"
                      "    name: str = 'explore-test-noop'\n\n    def run(self, graph, ctx):\n        return None\n")
    out = tmp_path / "page.html"
    assert explore_main([str(EXAMPLES / "graph.mcir"), "--load", str(plugin), "--passes", "dce,explore-test-noop",
                         "--no-native", "--html", str(out)]) == 0
    text = out.read_text()
    assert "explore-test-noop" in text and text.startswith("<!DOCTYPE html>")


# -- the server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "graph.mcir").write_text((EXAMPLES / "graph.mcir").read_text())
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("inside\n")
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    outside.write_text("secret\n")
    (root / "link.txt").symlink_to(outside)
    (root / "sub" / "private.txt").write_text("private\n")
    report = explore_file(str(root / "graph.mcir"), None, native=False)
    # the record refers to these files (user lines), and only these are served
    for name in ("sub/notes.txt", "missing.txt", "link.txt", "../elsewhere/secret.txt"):
        report.sources[f"{name}:1"] = {"file": str(root / name), "line": 1, "first": 1, "lines": []}
    server = ExploreServer(report, root, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _get(server, path, method="GET", host=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.server_address[1]}")
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_server_listens_on_loopback_only(served):
    assert served.server_address[0] == "127.0.0.1"


def test_server_routes(served):
    status, body = _get(served, "/")
    assert status == 200 and b"minicomp explore" in body
    status, body = _get(served, "/api/report.json")
    assert status == 200 and json.loads(body)["passes"][0]["name"] == "input"
    assert _get(served, "/api/source?path=sub/notes.txt") == (200, b"inside\n")


@pytest.mark.parametrize("path", ["/api/source?path=../elsewhere/secret.txt", "/api/source?path=/etc/passwd",
                                  "/api/source?path=link.txt", "/api/source?path=sub/../../x",
                                  "/api/source?path=sub/private.txt", "/api/source?path=graph.mcir"])
def test_server_refuses_paths_outside_the_project_or_the_record(served, path):
    status, body = _get(served, path)
    assert status == 403 and b"secret" not in body and b"private" not in body


@pytest.mark.parametrize("path,status", [("/nope", 404), ("/api/nope.json", 404), ("/api/source?path=missing.txt", 404),
                                         ("/api/source", 400), ("/api/source?path=a&path=b", 400),
                                         ("/api/source?file=x", 400), ("/?x=1", 400)])
def test_server_unknown_routes_and_malformed_queries(served, path, status):
    assert _get(served, path)[0] == status


def test_server_rejects_other_methods_foreign_hosts_and_garbage(served):
    assert _get(served, "/", method="POST")[0] == 405
    assert _get(served, "/api/report.json", host="evil.example:80")[0] == 400
    with socket.create_connection(("127.0.0.1", served.server_address[1]), timeout=10) as s:
        s.sendall(b"NOT A REQUEST\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert b"Error code: 400" in reply and b"minicomp explore" not in reply  # (an HTTP/0.9-style answer)


# -- the page in a real browser -------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    with Browser.launch() as b:
        yield b


def _wait_ready(b):
    b.wait_for("window.explorer && explorer.state.data && explorer.state.data.pending.length === 0", 120)


def _check_page(b, n_passes, tmp_path, name):
    assert b.eval("document.querySelectorAll('#passes tr').length") == n_passes
    b.key("1")
    last = n_passes - 1
    assert b.eval("explorer.state.pass") == last
    for _ in range(last):  # walk up to the input with the keyboard, then down to the first change
        b.key("k")
    assert b.eval("explorer.state.pass") == 0
    changed = b.eval("explorer.state.data.passes.findIndex((p, i) => i > 0 && p.changed)")
    for _ in range(changed):
        b.key("j")
    assert b.eval("explorer.state.pass") == changed
    assert b.eval("document.querySelectorAll('#ir .add, #ir .del').length") > 0  # the diff is shown
    assert b.eval("document.getElementById('numverdict').textContent") == "within tolerance"
    assert float(b.eval("document.getElementById('maxabs').textContent")) < 1e-4
    b.key("2")
    assert b.eval("document.querySelectorAll('#graphbox svg g.gn').length") > 3
    b.click("#graphbox svg g.gn.g-op")
    sel = b.eval("explorer.state.sel")
    assert sel and b.eval("document.querySelectorAll('.hl').length") >= 1
    b.key("4")
    b.wait_for("document.querySelectorAll('#kerns tr.k').length > 0")
    b.click("#kerns tr.k")
    assert "LLVM IR" in b.eval("document.getElementById('kdetail').textContent")
    assert b.eval("document.querySelectorAll('#side .hl, #kerns .hl').length") >= 1
    b.screenshot(str(tmp_path / f"{name}.png"))
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000


@pytest.mark.parametrize("example", ["mlp", "lenet", "transformer_block"])
def test_page_of_each_example_in_chromium(browser, tmp_path, example):
    report = explore_file(str(EXAMPLES / f"{example}.py"))
    data = report.data()
    assert data["kernels"]["error"] is None, data["kernels"]["error"]
    assert [p["error"] for p in data["passes"]] == [None] * len(data["passes"])
    page = tmp_path / f"{example}.html"
    page.write_text(render_page(data))
    browser.errors.clear()
    browser.open(page.as_uri())
    _wait_ready(browser)
    _check_page(browser, len(data["passes"]), tmp_path, example)
    if example == "transformer_block":  # step through canonicalize's rewrites with the keyboard
        canon = next(p["index"] for p in data["passes"] if p["name"] == "canonicalize" and p["rewrites"])
        browser.eval(f"explorer.setPass({canon})")
        browser.key("n")
        assert browser.eval("document.getElementById('stepno').textContent") == "2"
        browser.key("n")
        browser.key("p")
        assert browser.eval("explorer.state.step") == 1
        assert browser.eval("document.querySelectorAll('#rwdiff .add, #rwdiff .del').length") > 0
        for _ in range(len(data["passes"][canon]["rewrites"]) - 1):  # past the last one: the next pass's first
            browser.key("n")
        later = next(p["index"] for p in data["passes"] if p["index"] > canon and p["rewrites"])
        assert browser.eval("[explorer.state.pass, explorer.state.step]") == [later, 0]
        browser.key("p")
        last = len(data["passes"][canon]["rewrites"]) - 1
        assert browser.eval("[explorer.state.pass, explorer.state.step]") == [canon, last]
    assert browser.errors == []


def test_served_page_fills_in_as_the_passes_run(browser, tmp_path):
    from minicomp.explore.record import new_report
    report = new_report(str(EXAMPLES / "mlp.py"))
    server = ExploreServer(report, EXAMPLES, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.errors.clear()
        browser.open(server.url)  # before anything is traced: the page waits, then follows the passes
        browser.wait_for("document.getElementById('status').textContent.startsWith('computing: trace')")
        assert browser.eval("document.querySelectorAll('#passes tr').length") == 0
        filler = threading.Thread(target=explore_file, args=(str(EXAMPLES / "mlp.py"),),
                                  kwargs={"deferred": True, "report": report})
        filler.start()
        _wait_ready(browser)
        filler.join()
        _check_page(browser, len(report.passes), tmp_path, "served")
        browser.click("g.gn.g-op")
        if browser.eval("!!document.getElementById('wholefile')"):
            browser.click("#wholefile")
            browser.wait_for("!!document.getElementById('filetext')")
            assert "def model()" in browser.eval("document.getElementById('filetext').textContent")
    finally:
        server.shutdown()
        server.server_close()
    assert browser.errors == []
