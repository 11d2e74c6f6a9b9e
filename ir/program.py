"""A whole graph as a program of kernel calls: where each buffer lives (:class:`Slot`), which
kernel runs on which buffers (:class:`Call`), and the :class:`Program` both backends turn into
one native entry function. The kernels themselves are described in :mod:`minicomp.ir.kernel`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from minicomp.ir.kernel import Kernel
from minicomp.ir.types import TensorType


@dataclass(frozen=True)
class Slot:
    """Where one buffer lives at run time.

    ``kind`` is "input" (``index`` = graph input number), "output" (graph output
    number), "const" (constant number, data in :attr:`Program.constants`) or
    "arena" (``index`` = byte offset in the per-call arena, 64-byte aligned).
    """

    kind: str
    index: int
    type: TensorType


@dataclass(frozen=True)
class Call:
    """Run ``kernels[kernel]`` with ``args`` = slot numbers of its inputs then its outputs."""

    kernel: int
    args: tuple[int, ...]


@dataclass(frozen=True)
class Program:
    """A graph lowered to kernels: what a backend turns into one native entry function.

    The entry function receives one array of pointers laid out as
    ``[inputs..., outputs..., constants...]`` and allocates its own arena of
    ``arena_bytes`` per call (so concurrent calls share no scratch memory).
    A graph output that is also a graph input or a constant is listed in
    ``aliases`` (output number -> slot) and copied by the runtime, not by a kernel.
    """

    kernels: tuple[Kernel, ...]
    slots: tuple[Slot, ...]
    calls: tuple[Call, ...]
    arena_bytes: int
    num_inputs: int
    num_outputs: int
    constants: tuple = field(default=())  # numpy arrays, in "const" slot index order
    aliases: tuple[tuple[int, int], ...] = field(default=())
    #: Size symbols, in the order of the sizes array a symbolic program receives (empty when
    #: every shape is static). Then ``arena_bytes``, slot offsets and kernel extents may be
    #: :class:`~minicomp.ir.symbolic.Sym`; the pointer array gains one last element, an
    #: ``i64*`` to the symbols' values, and every kernel function receives it as its last argument.
    symbols: tuple[str, ...] = field(default=())
