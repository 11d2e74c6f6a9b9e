"""User-facing errors. Each names what went wrong and, where known, the user's source line."""
from __future__ import annotations


class MinicompError(Exception):
    """Base class of every error minicomp raises on purpose."""


class UnsupportedOpError(MinicompError):
    """A PyTorch op minicomp cannot import or lower. ``op`` is the ATen name, ``where`` the source line."""

    def __init__(self, op: str, where: str | None = None, detail: str = ""):
        self.op = op
        self.where = where
        msg = f"unsupported op '{op}'"
        if where:
            msg += f" at {where}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class CompileError(MinicompError):
    """Compilation failed for a reason other than an unsupported op."""


class GuardError(MinicompError, TypeError):
    """A compiled model was called with inputs it cannot accept (and recompilation is off)."""
