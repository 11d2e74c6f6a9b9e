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


class DataDependentError(UnsupportedOpError):
    """The model's Python reads tensor *values* while tracing (``if x.max() > 0``, ``.tolist()``,
    a shape that depends on values such as ``nonzero``): minicomp traces with example shapes
    only, so it cannot compile this. ``op`` names the torch call, ``where`` the user's line."""

    HINT = ("minicomp compiles for shapes, not values: pass fallback=True to run this model in eager "
            "PyTorch, or use torch.compile(model, backend=\"minicomp\"), which compiles the parts around it")

    def __init__(self, op: str, where: str | None = None, code: str = "", what: str = "data-dependent Python"):
        self.op, self.where, self.detail = op, where, what
        msg = f"{what} ('{op}')" + (f" at {where}" if where else "") + (f" in `{code}`" if code else "")
        MinicompError.__init__(self, f"{msg}: {self.HINT}")


class OptionError(CompileError, TypeError, ValueError):
    """An option of ``minicomp.compile`` is unknown or has a value it does not accept."""
