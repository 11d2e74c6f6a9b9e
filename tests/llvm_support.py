"""Helpers of the hand-built kernel tests (test_llvm_kernels.py, test_llvm_contractions.py,
test_codegen_paths.py): compile one kernel with compile_program, run it on torch tensors."""
from __future__ import annotations

import ctypes

import torch

from minicomp.codegen.llvm import compile_program
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import E, Const, Var
from minicomp.ir.program import Call, Program, Slot
from minicomp.ir.types import TensorType

TORCH = {DType.f32: torch.float32, DType.f64: torch.float64, DType.f16: torch.float16,
         DType.bf16: torch.bfloat16, DType.i32: torch.int32, DType.i64: torch.int64, DType.bool: torch.bool}
ALL = list(TORCH)
FLOATS = [DType.f32, DType.f64, DType.f16, DType.bf16]


def flat(shape, dims=None):
    """Row-major flat index expression over loop vars ``dims`` (default 0..rank-1)."""
    dims = list(range(len(shape))) if dims is None else dims
    idx = Const(0, DType.i64)
    step = 1
    for d, n in reversed(list(zip(dims, shape))):
        idx = E.add(idx, E.mul(Var(d), step))
        step *= n
    return idx


def program_of(kernel) -> Program:
    slots = [Slot("input", i, b.type) for i, b in enumerate(kernel.inputs)]
    slots += [Slot("output", i, b.type) for i, b in enumerate(kernel.outputs)]
    return Program(kernels=(kernel,), slots=tuple(slots), calls=(Call(0, tuple(range(len(slots)))),),
                   arena_bytes=0, num_inputs=len(kernel.inputs), num_outputs=len(kernel.outputs))


def call_entry(module, tensors) -> int:
    arr = (ctypes.c_void_p * max(len(tensors), 1))(*[t.data_ptr() for t in tensors])
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(module.entry_address)(arr)


def run_kernel(kernel, inputs, threads=2):
    """Compile ``kernel`` alone and run it; returns its outputs as torch tensors."""
    module = compile_program(program_of(kernel), threads=threads)
    ins = [t.contiguous() for t in inputs]
    outs = [torch.full(b.type.shape, 7, dtype=TORCH[b.type.dtype]) for b in kernel.outputs]
    assert call_entry(module, ins + outs) == 0
    return outs


def tt(dtype: DType, shape) -> TensorType:
    return TensorType(dtype, tuple(shape))


def sample(dtype: DType, shape, special=True, low=-4.0, high=4.0):
    """Random values of ``dtype`` including NaN/inf/-0.0 for floats when ``special``."""
    g = torch.Generator().manual_seed(0)
    n = 1
    for s in shape:
        n *= s
    if dtype is DType.bool:
        return (torch.rand(n, generator=g) > 0.5).reshape(shape)
    if dtype.is_int:
        return torch.randint(-9, 10, (n,), generator=g).to(TORCH[dtype]).reshape(shape)
    x = torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low
    if special and n >= 8:
        x[:5] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0], dtype=torch.float64)
    return x.to(TORCH[dtype]).reshape(shape)
