"""The layering rules of the design card, checked on the source text.

ir/ imports only numpy/networkx (and the standard library); passes/ never imports
codegen or torch; codegen/ never imports passes or torch (triton may bring torch
along at run time, but our code names it only in the Triton launch module); no
code imports the bare top-level names ``ir``, ``passes`` or ``codegen``.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _allowed(module: str, allowed_roots: set[str], allowed_prefixes: tuple[str, ...]) -> bool:
    root = module.split(".")[0]
    return root in STDLIB or root in allowed_roots or module.startswith(allowed_prefixes)


@pytest.mark.parametrize("path", _files("ir"), ids=lambda p: str(p.relative_to(ROOT)))
def test_ir_imports_only_numpy_networkx(path):
    bad = [(ln, m) for ln, m in _imports(path)
           if not _allowed(m, {"numpy", "networkx"}, ("minicomp.ir",)) and m != "minicomp"]
    assert not bad, f"{path.name} imports {bad}; ir/ may use numpy, networkx and minicomp.ir only"


@pytest.mark.parametrize("path", _files("passes"), ids=lambda p: str(p.relative_to(ROOT)))
def test_passes_import_only_ir(path):
    bad = [(ln, m) for ln, m in _imports(path)
           if not _allowed(m, {"numpy", "networkx"}, ("minicomp.ir", "minicomp.passes"))]
    assert not bad, f"{path.name} imports {bad}; passes/ may use minicomp.ir (never codegen or torch)"


@pytest.mark.parametrize("path", _files("codegen"), ids=lambda p: str(p.relative_to(ROOT)))
def test_codegen_never_imports_passes(path):
    bad = [(ln, m) for ln, m in _imports(path) if m.startswith("minicomp.passes") or
           m.split(".")[0] in ("minicomp",) and not m.startswith(("minicomp.ir", "minicomp.codegen"))]
    assert not bad, f"{path.name} imports {bad}; codegen/ may use minicomp.ir and minicomp.codegen only"


def test_no_bare_layer_imports():
    offenders = []
    for folder in ("ir", "passes", "codegen", "minicomp", "tests", "examples", "scripts"):
        for path in _files(folder):
            for ln, m in _imports(path):
                if m.split(".")[0] in ("ir", "passes", "codegen"):
                    offenders.append(f"{path.relative_to(ROOT)}:{ln}: import {m}")
    assert not offenders, "import these as minicomp.ir / minicomp.passes / minicomp.codegen:\n" + "\n".join(offenders)


def test_installed_names():
    import minicomp.codegen
    import minicomp.ir
    import minicomp.passes
    assert Path(minicomp.ir.__file__).parent == ROOT / "ir"
    assert Path(minicomp.passes.__file__).parent == ROOT / "passes"
    assert Path(minicomp.codegen.__file__).parent == ROOT / "codegen"
    for bare in ("ir", "passes", "codegen"):
        assert bare not in sys.modules, f"a bare top-level '{bare}' package was imported"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line for line in readme.splitlines() if line.endswith("python -m pytest -q"))
    assert test_cmd in ci.splitlines()
