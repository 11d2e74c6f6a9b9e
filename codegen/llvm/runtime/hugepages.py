"""Transparent huge pages for large buffers, and the switch that turns them off.

A fresh large buffer is memory the allocator has just mapped: the first store to each 4 KiB
page faults. Advising the whole 2 MiB pages inside it onto transparent huge pages (THP) turns
512 of those faults into one. The call path advises every output of at least
HUGE_OUTPUT_BYTES (:func:`advise`); where the system gives no huge pages (THP off, another OS)
the advice changes nothing, and a failed call is ignored.

``MINICOMP_HUGEPAGES=0`` turns the advice off (``1`` or unset: on), so a benchmark can report
minicomp with and without huge pages in the same process (it is read on each advice: setting
it between calls takes effect at the next call). Any other value raises ValueError.
"""
from __future__ import annotations

import ctypes
import os
import sys

#: Buffers of at least this many bytes are advised onto huge pages.
HUGE_OUTPUT_BYTES = 4 << 20
#: The environment variable of the switch.
ENV = "MINICOMP_HUGEPAGES"
HUGE_PAGE = 2 << 20  # x86-64
_MADV_HUGEPAGE = 14


def _madvise():
    """libc's ``madvise`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def enabled() -> bool:
    """Whether :func:`advise` advises: ``MINICOMP_HUGEPAGES`` unset, empty or ``1`` (on) or ``0`` (off).
    ValueError for any other value."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "1"):
        return True
    if value == "0":
        return False
    raise ValueError(f"{ENV}={value!r}: expected 0 (off) or 1 (on)")


def huge_range(address: int, nbytes: int) -> tuple[int, int]:
    """The whole huge pages inside ``[address, address + nbytes)``: ``(start, length)``, length 0 if none."""
    lo = -(-address // HUGE_PAGE) * HUGE_PAGE
    hi = (address + nbytes) // HUGE_PAGE * HUGE_PAGE
    return lo, max(0, hi - lo)


def advise(address: int, nbytes: int) -> bool:
    """Advise the whole huge pages inside the buffer at ``address`` (``nbytes`` long) onto THP.
    True when advice was given (switched on, ``madvise`` exists, at least one whole huge page)."""
    start, length = huge_range(address, nbytes)
    if not length or _MADVISE is None or not enabled():
        return False
    _MADVISE(start, length, _MADV_HUGEPAGE)
    return True
