"""The call path of compiled CPU code: guards, output allocation, one foreign call.

:class:`NativeProgram` wraps a lowered :class:`~minicomp.ir.program.Program` and
its JIT-compiled entry ``i32 entry(void** args)``. A call checks the inputs'
shapes and dtypes (the caller does; see :mod:`minicomp.guards`), makes
non-contiguous inputs contiguous, allocates the outputs (``torch.empty_like`` of
memory-less prototypes: cheaper than ``torch.empty(shape, dtype=...)``; outputs of
at least HUGE_OUTPUT_BYTES are advised onto transparent huge pages, :func:`huge_pages`),
fills a per-thread ctypes ``void*`` array ``[inputs..., outputs..., constants...]``
and makes ONE foreign call (ctypes releases the GIL, each thread has its own
pointer array and the native code allocates its arena per call, so concurrent
calls from several threads are safe). Outputs that alias an input, a constant or another output are copied.
"""
from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import numpy as np
import torch

from minicomp.codegen.llvm.runtime.hugepages import HUGE_OUTPUT_BYTES, advise
from minicomp.guards import TORCH_DTYPE
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import check_failure
from minicomp.ir.program import Program

_ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


def huge_pages(t: torch.Tensor) -> None:
    """Advise ``t``'s whole 2 MiB pages onto transparent huge pages
    (:func:`minicomp.codegen.llvm.runtime.hugepages.advise`; off with ``MINICOMP_HUGEPAGES=0``)."""
    advise(t.data_ptr(), t.numel() * t.element_size())


def constant_tensor(array: np.ndarray, dtype: DType) -> torch.Tensor:
    """A contiguous CPU tensor holding a constant (bf16 arrays are stored as float32)."""
    t = torch.from_numpy(np.array(array, order="C"))  # (ascontiguousarray makes 0-d 1-d)
    return t.to(TORCH_DTYPE[dtype]).contiguous()


class NativeProgram:
    """A loaded program: call with a list of CPU tensors of the compiled signature."""

    def __init__(self, program: Program, entry_address: int, keepalive: object = None):
        self.program = program
        self._keepalive = keepalive  # the JIT module owning the code
        self._entry = _ENTRY(entry_address)
        self.num_inputs = program.num_inputs
        out_slots = {s.index: s for s in program.slots if s.kind == "output"}
        self._outputs = [(j, tuple(out_slots[j].type.shape), TORCH_DTYPE[out_slots[j].type.dtype])
                         for j in sorted(out_slots)]
        const_slots = sorted((s.index, s) for s in program.slots if s.kind == "const")
        self.constants = [constant_tensor(program.constants[i], s.type.dtype) for i, s in const_slots]
        self._const_ptrs = [c.data_ptr() for c in self.constants]
        # Pointer layout: [inputs..., outputs (by output number; aliased ones null)..., constants...].
        self._nargs = program.num_inputs + program.num_outputs + len(self.constants)
        self._array_type = ctypes.c_void_p * max(self._nargs, 1)
        slot_source = dict(enumerate(program.slots))
        self._out_pos = [program.num_inputs + j for j, _, _ in self._outputs]
        self._tls = threading.local()
        self._aliases = [(j, slot_source[slot]) for j, slot in program.aliases]
        # Outputs are allocated with torch.empty_like of these (about half the cost of
        # torch.empty(shape, dtype=...)) and get the same contiguous strides: stride-0 views
        # of one element, so they hold no per-output memory; shapes of at most one element
        # get a real tensor (an expanded one would hand its stride-0 strides on).
        self._out_protos = [torch.empty(shape, dtype=dt) if int(np.prod(shape)) <= 1
                            else torch.empty((), dtype=dt).expand(shape) for _, shape, dt in self._outputs]
        # No native call when there is nothing to write (every output has no elements).
        self._call_native = any(int(np.prod(shape)) for _, shape, _ in self._outputs)
        self._huge = [i for i, (_, shape, dt) in enumerate(self._outputs)
                      if int(np.prod(shape)) * dt.itemsize >= HUGE_OUTPUT_BYTES]

    def _args_array(self):
        """This thread's pointer array (constants filled in once): calls never share one."""
        try:
            return self._tls.array
        except AttributeError:
            arr = self._array_type()
            base = self.num_inputs + self.program.num_outputs
            for i, p in enumerate(self._const_ptrs):
                arr[base + i] = p
            self._tls.array = arr
            return arr

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ins = inputs
        for t in inputs:
            if not t.is_contiguous():
                ins = [t if t.is_contiguous() else t.contiguous() for t in inputs]
                break
        empty_like = torch.empty_like
        outs = [empty_like(p) for p in self._out_protos]
        for i in self._huge:
            huge_pages(outs[i])
        if self._call_native:
            try:
                arr = self._tls.array
            except AttributeError:
                arr = self._args_array()
            for i, t in enumerate(ins):
                arr[i] = t.data_ptr()
            for k, t in zip(self._out_pos, outs):
                arr[k] = t.data_ptr()
            code = self._entry(arr)
            if code != 0:
                if code == 1:
                    raise MemoryError(f"could not allocate the {self.program.arena_bytes}-byte kernel arena")
                raise check_failure(code)  # a kernel's run-time check: eager's exception
        if not self._aliases:
            return outs
        result: list[torch.Tensor | None] = [None] * self.program.num_outputs
        for (j, _, _), t in zip(self._outputs, outs):
            result[j] = t
        for j, slot in self._aliases:
            if slot.kind == "input":
                result[j] = ins[slot.index].clone()
            elif slot.kind == "const":
                result[j] = self.constants[slot.index].clone()
            else:
                result[j] = result[slot.index].clone()
        return result  # type: ignore[return-value]
