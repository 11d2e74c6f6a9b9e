"""``minicomp explore``: watch a model go through the compiler, pass by pass, in the browser.

:func:`~minicomp.explore.record.explore_model` and :func:`~minicomp.explore.record.explore_graph`
run the pipeline one pass at a time and record, per pass, the IR and its diff, the graph
drawing, every individual rewrite of the pattern passes, the numeric check against eager
PyTorch (or the input graph) and the statistics; :mod:`minicomp.explore.kernels` adds the
compiled kernels. :mod:`minicomp.explore.page` turns that record into one self-contained
HTML page, which :mod:`minicomp.explore.server` serves on 127.0.0.1 or
``minicomp explore --html`` writes to a file (``docs/explore.md`` explains each view).
"""
from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``minicomp explore`` (see :func:`minicomp.explore.cli.main`)."""
    from minicomp.explore.cli import main as cli_main
    return cli_main(argv)
