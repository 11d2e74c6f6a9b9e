"""The command line: user errors exit 2 with one line, commands produce their artefacts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minicomp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})


def test_missing_file_is_one_line_exit_2():
    proc = run_cli("compile", "missing.py")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["minicomp: error: missing.py: no such file"]
    assert "Traceback" not in proc.stderr


def test_file_without_model_exits_2(tmp_path):
    f = tmp_path / "nomodel.py"
    f.write_text("x = 1\n")
    proc = run_cli("compile", str(f))
    assert proc.returncode == 2
    assert "defines no model() function" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unsupported_op_exits_2_naming_op_and_line(tmp_path):
    f = tmp_path / "sortmodel.py"
    f.write_text("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                 "        return torch.sort(x).values\n\n\ndef model():\n    return M()\n\n\n"
                 "def example_inputs():\n    return (torch.randn(4),)\n")
    proc = run_cli("compile", str(f))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "sort" in last and "sortmodel.py:6" in last
    assert "Traceback" not in proc.stderr


def test_verbose_shows_traceback():
    proc = run_cli("--verbose", "compile", "missing.py")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_compile_dumps_ir_after_each_pass(tmp_path):
    proc = run_cli("compile", "examples/mlp.py", "--print-ir-after-all", "--dump-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    dumps = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith(".mcir") for n in dumps), dumps
    assert "final.llvm" in dumps and "final.asm" in dumps
    assert "define" in (tmp_path / "final.llvm").read_text()


def test_opt_runs_named_passes():
    proc = run_cli("opt", "examples/graph.mcir", "--passes", "dce,cse")
    assert proc.returncode == 0, proc.stderr
    assert "%dead" not in proc.stdout and proc.stdout.count("mul ") == 1
    from minicomp.ir.parser import parse
    parse(proc.stdout)


def test_opt_unknown_pass_exits_2():
    proc = run_cli("opt", "examples/graph.mcir", "--passes", "nosuchpass")
    assert proc.returncode == 2 and "nosuchpass" in proc.stderr and "Traceback" not in proc.stderr


_RELU_TWICE = """graph @g(%x: f32[4]) {
  %two = constant {dtype=f32, value=dense<[2.0] : f32[]>} : f32[]
  %a = relu %x : f32[4]
  %b = relu %a : f32[4]
  %c = mul %b, %two : f32[4]
  return %c
}
"""


@pytest.mark.parametrize("load", ["examples/custom_pass.py", "examples.custom_pass"])
def test_opt_loads_a_user_pass_with_load(tmp_path, load):
    """--load registers examples/custom_pass.py's my-peephole (by file or module name); --passes runs it."""
    ir = tmp_path / "g.mcir"
    ir.write_text(_RELU_TWICE)
    assert run_cli("opt", str(ir), "--passes", "my-peephole").returncode == 2  # not registered without --load
    proc = run_cli("opt", str(ir), "--load", load, "--passes", "my-peephole,dce")
    assert proc.returncode == 0, proc.stderr
    ops = [line.split("=")[1].split()[0] for line in proc.stdout.splitlines() if " = " in line]
    assert ops == ["relu", "add"], proc.stdout


@pytest.mark.parametrize("args, words", [
    (("opt", "examples/graph.mcir", "--passes", "my-peephole"), ["unknown pass 'my-peephole'", "--load"]),
    (("opt", "examples/graph.mcir", "--plugin", "no_such_plugin", "--passes", "dce"),
     ["--load no_such_plugin", "cannot import plugin"]),
    (("opt", "examples/graph.mcir", "--load", "examples/no_such_file.py", "--passes", "dce"), ["no such file"]),
    (("opt", "examples/graph.mcir", "--load", "examples.custom_pass:nothing", "--passes", "dce"), ["no callable"]),
    (("compile", "examples/mlp.py", "--target", "tpu"), ["--target tpu: unknown target", "cpu, triton, cuda"]),
    (("compile", "examples/mlp.py", "--passes", "dce,fuze"), ["unknown pass 'fuze'"]),
    (("explain", "examples/mlp.py", "--passes", "fuze"), ["unknown pass 'fuze'"]),
])
def test_unknown_pass_target_or_plugin_is_a_one_line_usage_error(args, words):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minicomp: error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_compile_and_explain_run_a_user_pass_in_the_pipeline():
    """--passes default,my-peephole appends the user's pass to the default pipeline; explain reports it."""
    proc = run_cli("compile", "examples/mlp.py", "--load", "examples/custom_pass.py", "--passes",
                   "default,my-peephole")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("explain", "examples/mlp.py", "--load", "examples/custom_pass.py", "--passes",
                   "canonicalize,my-peephole,fuse")
    assert proc.returncode == 0, proc.stderr
    assert "my-peephole" in proc.stdout and "fuse" in proc.stdout


def test_explain_writes_dot_and_svg(tmp_path):
    dot, svg = tmp_path / "g.dot", tmp_path / "g.svg"
    args = ["explain", "examples/transformer_block.py", "--dot", str(dot)]
    have_dot = shutil.which("dot") is not None
    if have_dot:
        args += ["--svg", str(svg)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert dot.read_text().startswith("digraph") and "cluster_" in dot.read_text()
    if have_dot:
        assert "<svg" in svg.read_text()


@pytest.mark.skipif(shutil.which("dot") is not None, reason="checks the message shown when Graphviz is absent")
def test_svg_without_graphviz_is_a_clear_error(tmp_path):
    proc = run_cli("explain", "examples/mlp.py", "--svg", str(tmp_path / "x.svg"))
    assert proc.returncode == 2 and "Graphviz" in proc.stderr


def test_compile_triton_aot_and_dump(tmp_path):
    proc = run_cli("compile", "examples/mlp.py", "--target", "triton", "--aot", "sm_90", "--dump-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "AOT sm_90: 2/2 kernels compiled" in proc.stdout and "target: triton" in proc.stdout
    assert "@triton.jit" in (tmp_path / "final.triton").read_text()


@pytest.mark.parametrize("args, message", [(["--aot", "sm_90"], "--aot needs --target triton"),
                                           (["--target", "triton", "--aot", "hopper"], "like sm_90")])
def test_bad_aot_request_exits_2(args, message):
    proc = run_cli("compile", "examples/mlp.py", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# -- bench: peak memory of one call --------------------------------------------------------------------
def test_peak_bytes_is_the_running_peak_of_allocations_during_the_call():
    import torch

    from minicomp.bench import peak_bytes
    x = torch.randn(256, 256)  # 256 KiB that exist before the call: not counted

    def call():
        a = x * 2          # +256 KiB
        b = a + 1          # +256 KiB (peak 512 KiB)
        del a              # -256 KiB
        return b.sum()     # +4 bytes, returned
    assert 512 * 1024 <= peak_bytes(call) < 512 * 1024 + 1024
    assert peak_bytes(lambda: None) == 0


def test_minicomp_peak_counts_its_native_arena():
    import torch

    import minicomp
    from minicomp.bench import minicomp_peak_bytes, peak_bytes

    def f(x):
        y = torch.softmax(x, dim=-1)  # an intermediate in the arena
        return (y @ x).sum(0)
    x = torch.randn(64, 64)
    cm = minicomp.compile(f, [x], target="cpu", cache=False)
    assert cm.program.arena_bytes > 0
    seen = peak_bytes(lambda: cm(x))  # the output only: the arena is allocated natively
    assert seen < cm.program.arena_bytes
    assert minicomp_peak_bytes(cm, lambda: cm(x)) == seen + cm.program.arena_bytes


def test_bench_table_has_a_peak_memory_column():
    from minicomp.bench import format_table
    row = {"name": "c", "eager_ms": 1.0, "inductor_ms": 2.0, "minicomp_ms": 0.5,
           "compile_s": {"minicomp": 1.0, "minicomp_cached": 0.1, "inductor": 3.0},
           "kernels": 1, "max_abs_diff_vs_eager": 0.0,
           "peak_mb": {"eager": 1.5, "inductor": 1.25, "minicomp": 0.75}}
    table = format_table([row])
    assert "peak MB eager/ind/mc" in table and "1.5/1.25/0.75" in table


def test_interleaved_medians_alternate_rounds_and_count_calls():
    from minicomp.timing import interleaved_medians
    log: list[str] = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    med = interleaved_medians(fns, rounds=3, runs=6, warmup=1)
    assert set(med) == {"a", "b", "c"} and all(v >= 0 for v in med.values())
    assert log[:3] == ["a", "b", "c"]  # the warm-up calls
    timed = log[3:]
    assert [timed.count(n) for n in "abc"] == [6, 6, 6]
    # each round runs every function for its share (2 calls here), the order rotating
    assert timed == ["a"] * 2 + ["b"] * 2 + ["c"] * 2 + ["b"] * 2 + ["c"] * 2 + ["a"] * 2 \
        + ["c"] * 2 + ["a"] * 2 + ["b"] * 2


# -- issue 14, point 15: every user mistake is one line and exit 2, checked before the work -------
def _model_file(tmp_path: Path, name: str, model_body: str, inputs_body: str = "return (torch.randn(4),)") -> str:
    f = tmp_path / name
    f.write_text(f"import torch\n\n\ndef model():\n    {model_body}\n\n\ndef example_inputs():\n    {inputs_body}\n")
    return str(f)


def _one_line_exit_2(argv: list[str], capsys) -> str:
    from minicomp.cli import main
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("... ")]
    assert len(err) == 1 and err[0].startswith("minicomp: error: ") and "Traceback" not in err[0], err
    return err[0]


def test_model_that_raises_is_reported_at_its_line(tmp_path, capsys):
    f = _model_file(tmp_path, "raising.py", 'raise ValueError("no weights here")')
    line = _one_line_exit_2(["compile", f], capsys)
    assert f"{f}:5: model() raised ValueError: no weights here" in line


def test_model_returning_a_non_module_exits_2(tmp_path, capsys):
    f = _model_file(tmp_path, "nonmodule.py", "return 3")
    assert "model() returned a int; expected a torch.nn.Module" in _one_line_exit_2(["compile", f], capsys)


@pytest.mark.parametrize("inputs, words", [("return 5", "example_inputs() returned a int"),
                                           ("return (torch.randn(4), 'x')", "item 1 is a str"),
                                           ("raise KeyError('k')", "example_inputs() raised KeyError")])
def test_bad_example_inputs_exit_2(tmp_path, capsys, inputs, words):
    f = _model_file(tmp_path, "badinputs.py", "return torch.nn.ReLU()", inputs)
    assert words in _one_line_exit_2(["explain", f], capsys)


def test_error_raised_in_the_users_forward_names_the_file(tmp_path, capsys):
    f = tmp_path / "shapes.py"
    f.write_text("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                 "        return x @ torch.ones(3, 3)\n\n\ndef model():\n    return M()\n\n\n"
                 "def example_inputs():\n    return (torch.randn(4),)\n")
    line = _one_line_exit_2(["compile", str(f)], capsys)
    assert f"{f}:6: RuntimeError" in line


def test_unwritable_dump_dir_is_refused_before_compiling(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    f = _model_file(tmp_path, "never_loaded.py", "raise AssertionError('must not be loaded')")
    assert "--dump-dir" in _one_line_exit_2(["compile", f, "--dump-dir", str(blocker)], capsys)
    assert "cannot write" in _one_line_exit_2(["compile", f, "--dump-dir", str(blocker / "sub")], capsys)


@pytest.mark.parametrize("flag", ["--dot", "--svg"])
def test_unwritable_dot_or_svg_is_refused_before_compiling(tmp_path, capsys, flag):
    f = _model_file(tmp_path, "never_loaded.py", "raise AssertionError('must not be loaded')")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert flag in _one_line_exit_2(["explain", f, flag, str(blocker / "g.out")], capsys)
    assert "is a directory" in _one_line_exit_2(["explain", f, flag, str(tmp_path)], capsys)


def test_non_utf8_mcir_exits_2(tmp_path, capsys):
    f = tmp_path / "binary.mcir"
    f.write_bytes(b"graph @g() {\n\xff\xfe\n}\n")
    assert f"{f}: not UTF-8 text (byte 0xff at offset 13)" in _one_line_exit_2(["opt", str(f), "--passes", "dce"],
                                                                              capsys)


def test_invalid_mcir_is_reported_against_the_file_not_a_pass(tmp_path, capsys):
    f = tmp_path / "wrongtype.mcir"
    f.write_text("graph @g(%x: f32[4]) {\n  %y = add %x, %x : f32[5]\n  return %y\n}\n")
    line = _one_line_exit_2(["opt", str(f), "--passes", "dce"], capsys)
    assert f"{f}: invalid IR" in line and "after pass" not in line
    bad = tmp_path / "undefined.mcir"
    bad.write_text("graph @g(%x: f32[4]) {\n  %y = add %x, %z : f32[4]\n  return %y\n}\n")
    assert f"{bad}:2:" in _one_line_exit_2(["opt", str(bad), "--passes", "dce"], capsys)


def test_bench_json_directory_and_repeat_zero_exit_2_before_measuring(tmp_path, capsys):
    assert "--json" in _one_line_exit_2(["bench", "--json", str(tmp_path), "--cases", "none"], capsys)
    assert "--repeat 0" in _one_line_exit_2(["bench", "--repeat", "0"], capsys)
    assert "--repeat -3" in _one_line_exit_2(["bench", "--repeat", "-3"], capsys)


def test_explore_is_delegated_to_the_explorer_with_its_own_arguments():
    """``minicomp explore`` hands everything after it to minicomp.explore.cli (its --help, its errors)."""
    proc = run_cli("explore", "--help")
    assert proc.returncode == 0 and "usage: minicomp explore" in proc.stdout, proc.stderr
    proc = run_cli("explore", "no_such_model.py")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no_such_model.py" in proc.stderr and "Traceback" not in proc.stderr
