"""Plugins travel with their import root, and ``--passes`` refuses a list that names no pass (issue 21)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from minicomp.testing import plugins

ROOT = Path(__file__).resolve().parent.parent


def test_plugin_is_found_again_from_its_recorded_root(tmp_path, monkeypatch):
    pkg = tmp_path / "myplugins_issue21"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "passes.py").write_text("LOADED = True\n")
    monkeypatch.setattr(plugins, "_LOADED", [])
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_plugin("myplugins_issue21.passes")
    entry, = plugins.loaded_plugins()
    assert entry == {"spec": "myplugins_issue21.passes", "root": str(tmp_path)}
    # a later process (a repro script) that does not have the root on sys.path still finds it
    code = ("import sys; from minicomp.testing.plugins import load_plugin_entry; "
            f"m = load_plugin_entry({entry!r}); print(m.LOADED)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    bare = subprocess.run([sys.executable, "-c", code.replace(repr(entry), repr(entry["spec"]))],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bare.returncode != 0 and "cannot import plugin" in bare.stderr


def test_passes_naming_no_pass_is_a_user_error():
    proc = subprocess.run([sys.executable, "-m", "minicomp", "opt", "examples/graph.mcir", "--passes", ","],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["minicomp: error: --passes ',' names no pass "
                                                "(give names separated by commas, or '' for none)"]
