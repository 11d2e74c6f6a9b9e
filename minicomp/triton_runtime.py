"""The call path of compiled Triton code: device choice, input checks, one ``run`` per call.

:class:`TritonProgram` wraps a lowered :class:`~minicomp.ir.program.Program` and
its generated :class:`~minicomp.codegen.triton.TritonModule`. A call makes
non-contiguous inputs contiguous, allocates the outputs on the program's device
and calls the module's ``run(*inputs, *outputs, *constants)`` (constants are
uploaded once, in const-slot order). Outputs in ``program.aliases`` come back
as fresh copies made by ``run`` itself.

Device: with a CUDA device (and ``TRITON_INTERPRET`` not set) everything lives
on the GPU. Without one, :func:`choose_device` sets ``TRITON_INTERPRET=1`` in this
process (once, with a warning) and the kernels run on CPU tensors in Triton's
interpreter, which is slow but exact enough to test with.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from minicomp.errors import GuardError
from minicomp.guards import IR_DTYPE, TORCH_DTYPE
from minicomp.ir.program import Program


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks Triton to interpret kernels in this process."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def choose_device() -> torch.device:
    """Where Triton programs run: the current CUDA device, or the CPU under the interpreter.

    Without a CUDA device this sets ``TRITON_INTERPRET=1`` for the whole process
    (Triton reads it when kernels are defined and launched) and warns the first time.
    """
    if not interpreting() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if not interpreting():
        os.environ["TRITON_INTERPRET"] = "1"  # after this, interpreting() is True: the warning shows once
        warnings.warn("no CUDA device: minicomp runs the Triton target in Triton's interpreter "
                      "(TRITON_INTERPRET=1 is now set in this process); expect it to be slow",
                      RuntimeWarning, stacklevel=4)
    return torch.device("cpu")


def as_device_tensors(args: Sequence[object], device: torch.device, expected: int | None = None) -> list[torch.Tensor]:
    """Convert call arguments to tensors on ``device``, rejecting what cannot be an input.

    numpy arrays are copied to ``device``; tensors must already be there (a
    :class:`GuardError` names the input and both devices otherwise).
    """
    if expected is not None and len(args) != expected:
        raise GuardError(f"compiled model takes {expected} tensor input(s), got {len(args)}")
    out = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        if not isinstance(a, torch.Tensor):
            raise GuardError(f"input {i} is a {type(a).__name__}, expected a torch.Tensor or numpy array")
        if a.device.type != device.type or (device.index is not None and a.device.index != device.index):
            raise GuardError(f"input {i} is on device '{a.device}', but this model was compiled for the Triton "
                             f"target on '{device}'; move it with .to('{device}')")
        if a.dtype not in IR_DTYPE:
            raise GuardError(f"input {i} has dtype {a.dtype}, which minicomp does not support "
                             f"(supported: {', '.join(str(d) for d in IR_DTYPE)})")
        out.append(a)
    return out


class TritonProgram:
    """A loaded Triton program: call with a list of tensors (on ``device``) of the compiled signature."""

    def __init__(self, program: Program, module, device: torch.device):
        from minicomp.runtime import constant_tensor
        self.program = program
        self.module = module
        self.device = device
        self._run = module.load()
        const_slots = sorted((s.index, s) for s in program.slots if s.kind == "const")
        self.constants = [constant_tensor(program.constants[i], s.type.dtype).to(device) for i, s in const_slots]
        out_types = {s.index: s.type for s in program.slots if s.kind == "output"}
        # Aliased outputs get a placeholder: run() returns a copy for them and never writes it.
        self._out_specs = [(tuple(out_types[j].shape), TORCH_DTYPE[out_types[j].dtype]) if j in out_types
                           else ((0,), torch.uint8) for j in range(program.num_outputs)]

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ins = [t if t.is_contiguous() else t.contiguous() for t in inputs]
        outs = [torch.empty(shape, dtype=dt, device=self.device) for shape, dt in self._out_specs]
        return list(self._run(*ins, *outs, *self.constants))


def aot_compile(module, arch: int = 90) -> list:
    """Compile every kernel of ``module`` for ``sm_{arch}`` (no GPU needed); one result per kernel.

    In a process that runs Triton's interpreter (``TRITON_INTERPRET`` set now or when
    ``triton.language`` was imported), the kernels are compiled in a fresh subprocess
    without the flag, so this process never switches modes.
    """
    from minicomp.codegen.triton import aot
    return aot.aot_compile(module, arch)  # AotResult: .name, .ok, .error, PTX/cubin sizes
