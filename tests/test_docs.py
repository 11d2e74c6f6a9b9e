"""Every code block in the README and docs/ runs as written.

- ```python blocks run, each in a fresh interpreter, from the repository root;
- ```mcir (or ```ir) blocks parse and verify as minicomp text IR;
- ```console blocks: each line starting with ``$ `` runs in a shell from the
  repository root (with this environment's scripts on PATH) and must exit 0.
``bash`` blocks are the set-up commands that CI itself runs; they are not re-run here.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str):
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text())):
            if m.group(1) == lang:
                yield pytest.param(m.group(2), id=f"{doc.name}-{i}")


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    return env


@pytest.mark.parametrize("code", list(_blocks("python")))
def test_python_blocks_run(code, tmp_path):
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"block failed:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("text", list(_blocks("mcir")) + list(_blocks("ir")))
def test_mcir_blocks_parse(text):
    from minicomp.ir.parser import parse
    from minicomp.ir.verifier import verify
    verify(parse(text))


@pytest.mark.parametrize("text", list(_blocks("console")))
def test_console_blocks_run(text, tmp_path):
    skipped = []
    for line in text.splitlines():
        if not line.startswith("$ "):
            continue
        cmd = line[2:].split("  #")[0].strip()
        if "--svg" in cmd and shutil.which("dot") is None:
            skipped.append(cmd)  # .ci/run installs Graphviz; a bare dev machine may lack it
            continue
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    if skipped:
        pytest.skip(f"Graphviz 'dot' is not installed, so these were not run: {skipped}")


_OPINFO_FIGURES = re.compile(
    r"(?P<opinfos>[\d,]*\d) OpInfos of ops minicomp supports, (?P<pairs>[\d,]*\d) \(op, dtype\)\s+pairs.*?"
    r"\*\*(?P<match>[\d,]*\d) of (?P<samples>[\d,]*\d) samples match eager\*\*.*?names the other (?P<failing>[\d,]*\d)"
    r".*?(?P<raises>[\d,]*\d) raise.*?(?P<differs>[\d,]*\d) differs?\b", re.S)


def test_readme_opinfo_figures_are_the_sweeps():
    """The README's OpInfo sweep figures equal the sweep's totals now: the samples it runs,
    ending as the ledger says (test_opinfo.ledger_totals, counted without running them; the
    sweep fails wherever a sample ends otherwise, so the two cannot drift apart)."""
    import test_opinfo  # tests/ is on sys.path; the module skips (this test too) without expecttest
    t = test_opinfo.ledger_totals()
    m = _OPINFO_FIGURES.search((ROOT / "README.md").read_text())
    assert m, "README.md: the OpInfo sweep paragraph is not in the expected words"
    quoted = {k: int(v.replace(",", "")) for k, v in m.groupdict().items()}
    measured = dict(opinfos=t.opinfos, pairs=t.pairs, match=t.match, samples=t.samples,
                    failing=t.raises + t.differs, raises=t.raises, differs=t.differs)
    assert quoted == measured, f"README.md's OpInfo figures are stale: quoted {quoted}, sweep {measured}"
