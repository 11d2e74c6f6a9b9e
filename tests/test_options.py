"""Compile options are typed: a misspelled name or a wrong value is one OptionError (issue 14, point 16)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import minicomp
from minicomp.errors import CompileError, OptionError
from minicomp.options import OPTIONS, describe
from minicomp.passes import Extend

ROOT = Path(__file__).resolve().parent.parent
X = torch.randn(4)


@pytest.mark.parametrize("kwargs, words", [
    ({"threads": "abc"}, ["threads", "int >= 1"]),
    ({"threads": 0}, ["threads", "int >= 1"]),
    ({"threads": 2.5}, ["threads"]),
    ({"passes": "dce"}, ["passes", "list of pass names"]),
    ({"passes": ["dce", "nosuchpass"]}, ["nosuchpass", "known passes"]),
    ({"passes": [42]}, ["passes", "42"]),
    ({"passes": Extend(after={"fusee": ["dce"]})}, ["fusee", "default pipeline does not run"]),
    ({"passes": Extend(after={"fuse": "dce"})}, ["after['fuse']", "list of pass names"]),
    ({"passes": Extend(before={"layout": ["nosuchpass"]})}, ["nosuchpass", "known passes"]),
    ({"passes": Extend(after={"fuse": ["dce"]}), "fuse": False}, ["'fuse'", "these options"]),
    ({"opt_level": 7}, ["opt_level", "0 to 3"]),
    ({"recompile_limit": -1}, ["recompile_limit", ">= 1"]),
    ({"recompile": "yes"}, ["recompile", "True or False"]),
    ({"fuse": 1}, ["fuse", "True or False"]),
    ({"channels_last": "yes"}, ["channels_last", "'auto'"]),
    ({"decompose": {"lineer": True}}, ["decompose", "linear"]),
    ({"decompose": ["linear"]}, ["decompose"]),
    ({"max_rblock": 1000}, ["max_rblock", "power of two"]),
    ({"dump_dir": 3}, ["dump_dir", "path"]),
    ({"freeze": "no"}, ["freeze", "True or False"]),
    ({"fallback": "yes"}, ["fallback", "True or False"]),
    ({"fusee": False}, ["unknown option 'fusee'", "did you mean 'fuse'"]),
    ({"thread": 2}, ["unknown option 'thread'", "'threads'"]),
])
def test_bad_option_is_one_clear_error(kwargs, words):
    with pytest.raises(OptionError) as info:
        minicomp.compile(torch.sin, (X,), target="cpu", cache=False, **kwargs)
    text = str(info.value)
    assert isinstance(info.value, CompileError) and len(text.splitlines()) == 1
    for w in words:
        assert w in text, text


def test_good_options_still_compile():
    cm = minicomp.compile(lambda x: torch.sin(x) * 2, (X,), target="cpu", cache=False, threads=1, opt_level=2,
                          fuse=False, layout=True, plan_memory=True, inplace=False, channels_last="auto",
                          fold_limit=10, decompose={"gelu": True}, recompile=True, recompile_limit=3,
                          verify=True, passes=None, fallback=False)
    torch.testing.assert_close(cm(X), torch.sin(X) * 2)
    cm = minicomp.compile(torch.cos, (X,), target="interpret", passes=["dce", "cse"])
    torch.testing.assert_close(cm(X), torch.cos(X))


def _read_names() -> set[str]:
    """Every option name read in the driver, the backends and the passes."""
    pattern = re.compile(r"""(?:\boptions\.(?:get|pop|setdefault)\(|\boptions\[|\.option\(|_options\.get\(|"""
                         r"""_options\[)\s*["']([a-z_]+)["']""")
    names: set[str] = set()
    for folder in ("passes", "codegen", "minicomp"):
        for path in (ROOT / folder).rglob("*.py"):
            if "testing" in path.parts:
                continue
            names.update(pattern.findall(path.read_text()))
    return names


def test_every_option_read_anywhere_is_described():
    read = _read_names() - {"target"}  # "target" is compile()'s own argument, set by the driver
    assert {"fuse", "layout", "plan_memory", "threads", "opt_level", "cache"} <= read  # the scan sees them
    assert read <= set(OPTIONS), sorted(read - set(OPTIONS))


def test_every_option_has_a_description():
    for name, opt in OPTIONS.items():
        assert opt.name == name and opt.accepts and opt.doc
        assert name in describe()
