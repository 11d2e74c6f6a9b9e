"""The process-wide GEMM library (codegen/llvm/runtime/library.py): names, imports, disk cache, fresh processes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from llvmlite import ir

from minicomp.codegen.llvm import gemm_shared
from minicomp.codegen.llvm.runtime import jit, library
from minicomp.ir.dtypes import DType


def test_define_rebuilds_every_helper_from_its_name():
    decl = ir.Module("k")
    names = [gemm_shared.micro(decl, DType.f32, 8, 32).name, gemm_shared.micro(decl, DType.f64, 4).name,
             gemm_shared.packa(decl, DType.f32, DType.bf16).name,
             gemm_shared.packb(decl, DType.i64, DType.i32, 8).name,
             gemm_shared.cmicro(decl, DType.f32, 8, 5, 5, 1).name, gemm_shared.cmicro(decl, DType.f64, 4, 1, 7, 2).name]
    assert all(decl.globals[n].is_declaration for n in names)  # kernel modules only declare
    lib = gemm_shared.LibraryModule("lib")
    for n in names:
        assert not gemm_shared.define(lib, n).is_declaration
    obj = jit.compile_objects([str(lib)], [library.LEVEL])[0]
    assert not set(names) & set(jit.undefined_symbols(obj))


@pytest.mark.parametrize("name", ["mc.gemm.micro.f32", "mc.gemm.micro.f32.8.x3", "mc.gemm.micro.f99.8",
                                  "mc.gemm.packa.f32", "mc.gemm.packb.f32.f32.0", "mc.gemm.micro.f32.08",
                                  "mc.gemm.micro.f32.9999", "mc_expf", "mc.gemm.other.f32",
                                  "mc.gemm.cmicro.f32.8", "mc.gemm.cmicro.f32.8.3x3", "mc.gemm.cmicro.f32.8.3x3.1",
                                  "mc.gemm.cmicro.f32.8.3x0.d1", "mc.gemm.cmicro.f32.8.3x3x3.d1",
                                  "mc.gemm.cmicro.f32.8.7x8.d1", "mc.gemm.cmicro.f32.8.03x3.d1",
                                  "mc.gemm.cmicro.i32.8.3x3.d1"])
def test_define_rejects_foreign_names(name):
    with pytest.raises(ValueError):
        gemm_shared.define(gemm_shared.LibraryModule("lib"), name)


def test_undefined_symbols_of_an_object():
    obj = jit.compile_objects(["declare void @ext(ptr)\ndefine void @f(ptr %p) {\n call void @ext(ptr %p)\n"
                               " ret void\n}\n"], [2])[0]
    assert "ext" in jit.undefined_symbols(obj)
    assert "f" not in jit.undefined_symbols(obj)
    assert jit.undefined_symbols(b"not an object") == []
    with pytest.raises(ValueError):
        jit.undefined_symbols(obj[:80])


_CHILD = """
import sys, torch, minicomp
from minicomp.codegen.llvm.runtime import jit, library
if sys.argv[1] == "hit":
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled although everything is cached")
    jit.compile_objects = no_compile
a, b = (torch.randint(-4, 5, (256, 256)).float() for _ in range(2))  # exact sums
cm = minicomp.compile(lambda a, b: a @ b, (a, b), cache=sys.argv[1] != "nocache")
torch.testing.assert_close(cm(a, b), a @ b)
print(sorted(library._DEFINED))
"""


def _child(mode: str, cache_dir) -> str:
    env = {**os.environ, "MINICOMP_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_fresh_processes_compile_or_load_the_library(tmp_path, monkeypatch):
    from minicomp import cache
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path))
    assert "mc.gemm.micro" in _child("nocache", tmp_path)    # compiled in-process, nothing cached
    assert not list(tmp_path.glob("*.lib"))
    names = _child("fill", tmp_path)
    assert "mc.gemm.micro" in names                          # the 256^3 GEMM imports the library
    (lib,) = sorted(tmp_path.glob("*.lib"))
    assert lib.stem == cache.library_key(library.library_ir(eval(names)))
    inode = lib.stat().st_ino
    assert _child("hit", tmp_path) == names                  # program and library loaded, never compiled
    assert lib.stat().st_ino == inode                        # (not rewritten; a hit only touches its time)
    data = bytearray(lib.read_bytes())                       # a corrupt entry is recompiled and rewritten
    data[-1] ^= 0xFF
    lib.write_bytes(bytes(data))
    assert _child("fill", tmp_path) == names
    assert cache.load(lib.stem, ".lib") is not None


def test_image_importing_an_unknown_symbol_is_refused_not_loaded():
    """MCJIT would bind the missing function to address 0; loading must raise instead."""
    m = ir.Module("k")
    void = ir.FunctionType(ir.VoidType(), [])
    missing = ir.Function(m, void, "mc_no_such_function_anywhere")
    f = ir.Function(m, void, "k_calls_missing")
    b = ir.IRBuilder(f.append_basic_block())
    b.call(missing, [])
    b.ret_void()
    image = jit.compile_parts([str(m)], [2])
    with pytest.raises(RuntimeError, match="mc_no_such_function_anywhere"):
        jit.Loaded(image)
