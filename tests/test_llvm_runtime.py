"""codegen/llvm/runtime: the huge-page switch and advice ranges (the JIT, library and pool have their
own tests: test_llvm_program.py, test_llvm_library.py, test_threads.py)."""
from __future__ import annotations

import pytest

from minicomp.codegen.llvm.runtime import hugepages

HP = hugepages.HUGE_PAGE


@pytest.mark.parametrize("address,nbytes,want", [(0, 2 * HP, (0, 2 * HP)), (1, 2 * HP, (HP, HP)), (1, HP, (HP, 0)),
                                                 (HP - 1, 3 * HP, (HP, 2 * HP)), (5 * HP, 0, (5 * HP, 0))])
def test_huge_range_is_the_whole_pages_inside(address, nbytes, want):
    assert hugepages.huge_range(address, nbytes) == want


def test_switch_turns_advice_off_and_on(monkeypatch):
    calls = []
    monkeypatch.setattr(hugepages, "_MADVISE", lambda *a: calls.append(a) or 0)
    monkeypatch.delenv(hugepages.ENV, raising=False)
    assert hugepages.enabled() and hugepages.advise(HP + 1, 3 * HP)
    assert calls == [(2 * HP, 2 * HP, 14)]  # the pages [2 HP, 4 HP) inside [HP + 1, 4 HP + 1)
    monkeypatch.setenv(hugepages.ENV, "0")
    assert not hugepages.enabled() and not hugepages.advise(HP + 1, 3 * HP)
    assert len(calls) == 1
    monkeypatch.setenv(hugepages.ENV, "1")
    assert hugepages.advise(0, HP) and len(calls) == 2


def test_no_advice_without_a_whole_page(monkeypatch):
    calls = []
    monkeypatch.setattr(hugepages, "_MADVISE", lambda *a: calls.append(a) or 0)
    assert not hugepages.advise(1, HP) and calls == []


@pytest.mark.parametrize("value", ["off", "no", "2", "true"])
def test_misspelled_switch_is_an_error(monkeypatch, value):
    monkeypatch.setenv(hugepages.ENV, value)
    with pytest.raises(ValueError, match="MINICOMP_HUGEPAGES"):
        hugepages.enabled()
