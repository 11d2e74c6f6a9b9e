"""LLVM backend: whole Programs (arena, constants, several calls), sources and object-code reuse."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from minicomp.codegen.llvm import compile_program, emit_object
from minicomp.codegen.llvm.runtime import jit
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import E, Buffer, Const, Load, LoopKernel, Reduce, Ref, Store, Var
from minicomp.ir.program import Call, Program, Slot
from test_llvm_kernels import call_entry, flat, tt


def _program() -> Program:
    """y = sum_j exp(x[i, j] * c[j]) + 1 with the exp in an arena buffer; also z = x * 2 (second output)."""
    shape = (3, 5)
    x, c, t = tt(DType.f32, shape), tt(DType.f32, (5,)), tt(DType.f32, shape)
    k0 = LoopKernel("scale_exp", "pointwise", (Buffer("x", x), Buffer("c", c)), (Buffer("t", t),), shape, (),
                    (Store(0, flat(shape), E.exp(E.mul(Load(0, flat(shape), DType.f32), Load(1, Var(1), DType.f32)))),))
    k1 = LoopKernel("rowsum", "reduction", (Buffer("t", t),), (Buffer("y", tt(DType.f32, (3,))),), (3,), (5,),
                    (Reduce("sum", Load(0, flat(shape), DType.f32), DType.f32),
                     Store(0, Var(0), E.add(Ref(0, DType.f32), 1.0))))
    k2 = LoopKernel("twice", "pointwise", (Buffer("x", x),), (Buffer("z", x),), shape, (),
                    (Store(0, flat(shape), E.mul(Load(0, flat(shape), DType.f32), 2.0)),))
    slots = (Slot("input", 0, x), Slot("const", 0, c), Slot("arena", 128, t), Slot("output", 0, tt(DType.f32, (3,))),
             Slot("output", 1, x))
    consts = (np.linspace(0, 1, 5, dtype=np.float32),)
    return Program(kernels=(k0, k1, k2), slots=slots, calls=(Call(0, (0, 1, 2)), Call(1, (2, 3)), Call(2, (0, 4))),
                   arena_bytes=128 + t.nbytes, num_inputs=1, num_outputs=2, constants=consts)


def _run(module, x):
    c = torch.from_numpy(_program().constants[0])
    y, z = torch.empty(3), torch.empty(3, 5)
    assert call_entry(module, [x, y, z, c]) == 0
    return y, z, c


def test_program_with_arena_and_constants():
    x = torch.randn(3, 5)
    module = compile_program(_program(), name="prog")
    y, z, c = _run(module, x)
    torch.testing.assert_close(y, torch.exp(x * c).sum(1) + 1)
    torch.testing.assert_close(z, x * 2)


def test_sources_and_kernel_sources():
    module = compile_program(_program(), name="prog")
    assert "define" in module.source("llvm") and "define" in module.source("llvm-unopt")
    assert "aligned_alloc" in module.source("llvm-unopt")
    assert "retq" in module.source("asm")
    names = [n for n, _ in module.kernel_sources]
    assert len(names) == 3 and "scale_exp" in names[0] and "rowsum" in names[1]
    assert all("define" in text for _, text in module.kernel_sources)
    with pytest.raises(ValueError):
        module.source("ptx")


def test_object_code_roundtrip_skips_llvm():
    obj = emit_object(_program(), name="prog")
    assert isinstance(obj, bytes) and obj[:4] == b"\x7fELF"  # one module (no kernel split off): one object
    module = compile_program(_program(), name="prog", object_code=obj)
    x = torch.randn(3, 5)
    y, z, c = _run(module, x)
    torch.testing.assert_close(y, torch.exp(x * c).sum(1) + 1)
    assert "define" in module.source("llvm")  # optimized IR is rebuilt lazily
    again = compile_program(_program(), name="prog", object_code=module.object_code)
    torch.testing.assert_close(_run(again, x)[1], x * 2)


@pytest.mark.parametrize("legal", [True, False])
def test_in_place_slot_reuse_is_safe(legal):
    """An arena slot read and written by the same call: a legal in-place kernel (reads each
    element where it writes it) reads through the output pointer, so noalias stays true;
    any other overlap drops noalias. Both compute the right values."""
    shape = (1000,)
    t = tt(DType.f32, shape)
    index = Var(0) if legal else E.sub(Const(999, DType.i64), Var(0))
    k = LoopKernel("inc", "pointwise", (Buffer("a", t),), (Buffer("b", t),), shape, (),
                   (Store(0, Var(0), E.add(Load(0, index, DType.f32), 1.0)),))
    cp = LoopKernel("copy", "copy", (Buffer("a", t),), (Buffer("b", t),), shape, (),
                    (Store(0, Var(0), Load(0, Var(0), DType.f32)),))
    slots = (Slot("input", 0, t), Slot("arena", 0, t), Slot("output", 0, t))
    prog = Program(kernels=(cp, k, cp), slots=slots, calls=(Call(0, (0, 1)), Call(1, (1, 1)), Call(2, (1, 2))),
                   arena_bytes=t.nbytes, num_inputs=1, num_outputs=1)
    module = compile_program(prog)
    unopt = module.source("llvm-unopt")
    inc_def = next(line for line in unopt.splitlines() if line.startswith("define") and "inc\"(" in line)
    assert ("noalias" in inc_def) == legal
    x, y = torch.randn(shape), torch.empty(shape)
    assert call_entry(module, [x, y]) == 0
    want = x + 1 if legal else torch.cat([x.flip(0)[:500] + 1, x[500:] + 2])  # sequential semantics
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_give_same_result(threads):
    shape = (700, 600)  # 420K elements: above the parallel threshold
    t = tt(DType.f64, shape)
    k = LoopKernel("sq", "pointwise", (Buffer("a", t),), (Buffer("b", t),), shape, (),
                   (Store(0, flat(shape), E.mul(Load(0, flat(shape), DType.f64), Var(0))),))
    prog = Program(kernels=(k,), slots=(Slot("input", 0, t), Slot("output", 0, t)), calls=(Call(0, (0, 1)),),
                   arena_bytes=0, num_inputs=1, num_outputs=1)
    module = compile_program(prog, threads=threads)
    src = module.source("llvm-unopt")
    assert ("pthread_create" in src or "minicomp_pool_run" in src) == (threads == 2)
    x, y = torch.randn(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)
    call_entry(module, [x, y])
    torch.testing.assert_close(y, x * torch.arange(700, dtype=torch.float64)[:, None])


def test_packed_objects_roundtrip_and_reject_corruption():
    assert jit.unpack_objects(b"\x7fELF one") == [b"\x7fELF one"]
    assert jit.pack_objects([b"\x7fELF one"]) == b"\x7fELF one"
    image = jit.pack_objects([b"ab", b"", b"cde"])
    assert jit.unpack_objects(image) == [b"ab", b"", b"cde"]
    with pytest.raises(ValueError, match="corrupt"):
        jit.unpack_objects(image[:-1])
    with pytest.raises(ValueError, match="2 optimization levels"):
        jit.compile_parts(["", "", ""], [2, 2])


def test_parts_compile_on_several_threads_like_on_one():
    """A program split into a module per kernel plus the entry's: compile_parts on 1 and on
    several threads gives the same objects, and the packed image links and runs."""
    from minicomp.codegen.llvm.entry import build_parts
    prog = _program()
    parts, symbols = build_parts(prog, "prog", 2)
    assert len(parts) == len(prog.kernels) + 1
    texts, levels = [str(m) for m in parts], [3] * len(parts)
    image = jit.compile_parts(texts, levels, workers=3)
    assert jit.compile_parts(texts, levels, workers=1) == image
    assert len(jit.unpack_objects(image)) == len(parts)
    module = compile_program(prog, name="prog", object_code=image)
    x = torch.randn(3, 5)
    y, z, c = _run(module, x)
    torch.testing.assert_close(y, torch.exp(x * c).sum(1) + 1)
    torch.testing.assert_close(z, x * 2)
    with pytest.raises(RuntimeError):
        jit.compile_parts(["define void @f() {\n  ret i32 0\n}\n"], [2], workers=2)
