"""The on-disk object-code cache: keys, privacy, atomic entries, corruption handling, recency.

Trust, size bound and odd locations: tests/test_cache_security.py."""
from __future__ import annotations

import os
import stat

import pytest
import torch

import minicomp
from minicomp import cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "mc-cache"
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(d))
    return d


def entries(d):
    return sorted(p for p in d.iterdir() if p.suffix == ".obj" and not p.name.startswith(".tmp"))


def fn(x):
    return torch.tanh(x) * 2 + 1


def test_directory_is_private_and_round_trip(cache_dir):
    key = cache.cache_key("program text", "cpu")
    assert cache.load(key) is None
    cache.store(key, b"\x7fELF payload")
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert cache.load(key) == b"\x7fELF payload"
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp")]


def test_key_depends_on_every_part():
    assert cache.cache_key("a", "cpu") != cache.cache_key("a", "interpret")
    assert cache.cache_key("ab", "c") != cache.cache_key("a", "bc")
    assert cache.cache_key("a", "cpu") == cache.cache_key("a", "cpu")


def test_bad_keys_are_rejected(cache_dir):
    with pytest.raises(ValueError):
        cache.load("../../etc/passwd")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_corrupt_entry_is_deleted_and_never_returned(cache_dir, damage):
    key = cache.cache_key("x")
    cache.store(key, b"A" * 1000)
    (path,) = entries(cache_dir)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[:-100]
    elif damage == "empty":
        data = bytearray()
    else:
        data[:6] = b"XXXXXX"
    path.write_bytes(bytes(data))
    assert cache.load(key) is None
    assert not path.exists()


def test_compile_uses_cache_and_recovers_from_corruption(cache_dir):
    x = torch.randn(16, 8)
    cm1 = minicomp.compile(fn, (x,))
    (path,) = entries(cache_dir)
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))
    cm2 = minicomp.compile(fn, (x,))        # hit: same entry, not rewritten, but touched (recently used)
    torch.testing.assert_close(cm2(x), fn(x))
    after = path.stat()
    assert after.st_ino == before.st_ino and after.st_mtime_ns >= before.st_mtime_ns
    # Corrupt the object code: the next compile must notice, recompile and rewrite it.
    data = bytearray(path.read_bytes())
    for i in range(200, min(len(data), 400)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    cm3 = minicomp.compile(fn, (x,))
    torch.testing.assert_close(cm3(x), fn(x))
    assert cache.load(path.stem) is not None
    torch.testing.assert_close(cm1(x), fn(x))


def test_cache_off_writes_nothing(cache_dir):
    x = torch.randn(4)
    cm = minicomp.compile(fn, (x,), cache=False)
    torch.testing.assert_close(cm(x), fn(x))
    assert not cache_dir.exists() or not entries(cache_dir)


def test_world_readable_dir_is_tightened(cache_dir):
    cache_dir.mkdir(mode=0o755)
    os.chmod(cache_dir, 0o755)
    cache.store(cache.cache_key("y"), b"z")
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700


# -- the thread pool's object code ---------------------------------------------------------------
_POOL_CHILD = """
import sys, torch, minicomp
from minicomp import cache
from minicomp.codegen.llvm.runtime import threadpool
if sys.argv[1] == "hit":
    def no_compile(text):
        raise AssertionError("the pool was JIT-compiled although its object code is cached")
    threadpool.compile_object = no_compile
x = torch.randn(64, 256)
cm = minicomp.compile(lambda a: torch.tanh(a) * 2 + 1, (x,), threads=2)
torch.testing.assert_close(cm(x), torch.tanh(x) * 2 + 1)
print(threadpool.installed())
"""


def _pool_child(mode: str, cache_dir) -> str:
    import subprocess
    import sys
    env = {**os.environ, "MINICOMP_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", _POOL_CHILD, mode], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_thread_pool_object_code_is_cached_for_fresh_processes(cache_dir):
    from minicomp.codegen.llvm.runtime import threadpool
    if not threadpool.supported():
        pytest.skip("the thread pool exists on x86-64 Linux only")
    assert _pool_child("fill", cache_dir) == "True"
    (pool,) = sorted(cache_dir.glob("*.pool"))
    assert pool.stem == cache.pool_key(threadpool.pool_ir())
    inode = pool.stat().st_ino
    assert _pool_child("hit", cache_dir) == "True"    # loaded, never compiled
    assert pool.stat().st_ino == inode                # (not rewritten)
    data = bytearray(pool.read_bytes())               # a corrupt entry is recompiled and rewritten
    data[-20] ^= 0xFF
    pool.write_bytes(bytes(data))
    assert _pool_child("fill", cache_dir) == "True"
    assert cache.load(pool.stem, ".pool") is not None


def test_pool_key_depends_on_ir_text():
    assert cache.pool_key("a") == cache.pool_key("a") != cache.pool_key("b")
    assert len(cache.pool_key("a")) == 64


def test_codegen_path_override_is_part_of_the_key(cache_dir, monkeypatch):
    """MINICOMP_CODEGEN_PATHS changes the object code, so a compile under it never reuses (or
    leaves behind) the entry of the usual path choice."""
    x = torch.randn(16, 8)
    minicomp.compile(fn, (x,))
    (usual,) = entries(cache_dir)
    monkeypatch.setenv("MINICOMP_CODEGEN_PATHS", "plain")
    cm = minicomp.compile(fn, (x,))
    torch.testing.assert_close(cm(x), fn(x))
    assert len(entries(cache_dir)) == 2 and usual in entries(cache_dir)


def test_backend_fingerprint_covers_the_runtime_subpackage(monkeypatch):
    """Editing any source of the CPU backend, its runtime/ subpackage included (the JIT's
    optimization pipeline lives there), changes the fingerprint that keys cached object code."""
    from pathlib import Path
    before = cache.backend_fingerprint()
    real = Path.read_bytes

    def edited(self):
        data = real(self)
        return data + b"\n# edited" if self.as_posix().endswith("llvm/runtime/jit.py") else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert cache.backend_fingerprint() != before
