"""The cache trusts only its owner, entries are valid only under their own key, the directory is
size-bounded, and odd or unwritable locations cost only the cache (issue 14, points 8-11).

Tests run as root here; root bypasses permission bits, so a read-only directory is simulated
(a failing create) when running as root, and made read-only for real otherwise. Ownership by
another user is real where root can ``chown`` and skipped elsewhere.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import minicomp
from minicomp import cache

ROOT = os.geteuid() == 0
OTHER_UID = 54321
needs_root = pytest.mark.skipif(not ROOT, reason="making a file another user's needs root")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(cache, "_WARNED", set())  # every test sees its own first warning


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "mc-cache"
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(d))
    return d


def fn(x):
    return torch.tanh(x) * 3 - 1


def compiles_correctly(n: int = 16) -> None:
    x = torch.randn(n, 8)
    torch.testing.assert_close(minicomp.compile(fn, (x,))(x), fn(x))


def cache_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, cache.CacheWarning)]


def stored_entries(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def key(text: str = "entry") -> str:
    return cache.cache_key(text)


# -- point 8: only the owner's directory and files --------------------------------------------------
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_directory_writable_by_others_is_refused(cache_dir, mode):
    cache_dir.mkdir()
    k = key()
    assert cache.store(k, b"payload")
    os.chmod(cache_dir, mode)
    with pytest.warns(cache.CacheWarning, match="writable by other users"):
        assert cache.load(k) is None
    compiles_correctly()
    assert [p.suffix for p in stored_entries(cache_dir)] == [".obj"]  # nothing new written
    assert stat.S_IMODE(cache_dir.stat().st_mode) == mode             # and nothing changed


@needs_root
def test_directory_owned_by_another_user_is_refused(cache_dir):
    cache_dir.mkdir(mode=0o700)
    k = key()
    assert cache.store(k, b"planted object code")
    os.chown(cache_dir, OTHER_UID, OTHER_UID)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert cache.load(k) is None
        compiles_correctly()
        compiles_correctly(17)
    assert len(cache_warnings(record)) == 1 and "owned by uid 54321" in cache_warnings(record)[0]
    assert len(stored_entries(cache_dir)) == 1


def test_directory_of_another_user_is_refused_without_root(cache_dir, monkeypatch):
    cache_dir.mkdir(mode=0o700)
    monkeypatch.setattr(cache, "_uid", lambda: os.getuid() + 1)  # pose as someone else
    with pytest.warns(cache.CacheWarning, match="not by this user"):
        compiles_correctly()
    assert not stored_entries(cache_dir)


@needs_root
@pytest.mark.parametrize("suffix", [".obj", ".pool", ".model", ".lib"])
def test_entry_owned_by_another_user_is_refused(cache_dir, suffix):
    k = key()
    assert cache.store(k, b"\x7fELF planted", suffix)
    path = cache_dir / f"{k}{suffix}"
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.warns(cache.CacheWarning, match="owned by uid 54321"):
        assert cache.load(k, suffix) is None
    assert path.exists()  # not ours: left alone, never read


def test_planted_pool_entry_is_never_loaded(cache_dir, monkeypatch):
    """The thread pool's ``.pool`` entry gets the same checks: here a symbolic link to a valid entry."""
    from minicomp.codegen.llvm.runtime import threadpool
    k = cache.pool_key(threadpool.pool_ir())
    assert cache.store(k, b"\x7fELF planted pool", ".pool")
    elsewhere = cache_dir.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.move(cache_dir / f"{k}.pool", elsewhere / f"{k}.pool")
    (cache_dir / f"{k}.pool").symlink_to(elsewhere / f"{k}.pool")
    with pytest.warns(cache.CacheWarning, match="refusing entry"):
        assert cache.load(k, ".pool") is None


def test_symbolic_link_entry_is_refused(cache_dir):
    k = key()
    assert cache.store(k, b"object code")
    target = cache_dir.parent / "target.obj"
    shutil.move(cache_dir / f"{k}.obj", target)
    (cache_dir / f"{k}.obj").symlink_to(target)
    with pytest.warns(cache.CacheWarning, match="refusing entry"):
        assert cache.load(k) is None
    assert cache.store(k, b"object code")  # a write replaces the link, never writes through it
    assert not (cache_dir / f"{k}.obj").is_symlink() and cache.load(k) == b"object code"


def test_fifo_named_like_an_entry_does_not_hang(cache_dir):
    cache_dir.mkdir(mode=0o700)
    k = key()
    os.mkfifo(cache_dir / f"{k}.obj")

    class Hung(Exception):
        """Not an OSError, so no ``except OSError`` on the read path can swallow it."""

    def timeout(*_):
        raise Hung("reading the cache hung on a FIFO")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        with pytest.warns(cache.CacheWarning, match="not a regular file"):
            assert cache.load(k) is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert stat.S_ISFIFO((cache_dir / f"{k}.obj").lstat().st_mode)


def test_nothing_is_ever_unpickled():
    import ast

    from minicomp import program_cache
    for mod in (cache, program_cache):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"pickle", "marshal", "shelve", "dill", "cloudpickle"}, mod.__name__


# -- point 9: valid only under its own key and kind --------------------------------------------------
def test_entry_copied_under_another_key_is_invalid_and_removed(cache_dir):
    a, b = key("a"), key("b")
    assert cache.store(a, b"the object code of program a")
    shutil.copy(cache_dir / f"{a}.obj", cache_dir / f"{b}.obj")
    assert cache.load(b) is None
    assert not (cache_dir / f"{b}.obj").exists()
    assert cache.load(a) == b"the object code of program a"


def test_entry_renamed_to_another_kind_is_invalid(cache_dir):
    k = key()
    assert cache.store(k, b"object code")
    os.replace(cache_dir / f"{k}.obj", cache_dir / f"{k}.pool")
    assert cache.load(k, ".pool") is None


def test_header_holds_key_and_kind(cache_dir):
    k = key()
    assert cache.store(k, b"xyz", ".lib")
    head = (cache_dir / f"{k}.lib").read_bytes().split(b"\n", 1)[0].decode()
    magic, kind, in_key, length, digest = head.split()
    assert (kind, in_key, int(length), len(digest)) == ("lib", k, 3, 64)


# -- point 10: a size bound with LRU eviction ----------------------------------------------------------
def test_size_bound_evicts_least_recently_used(cache_dir, monkeypatch):
    monkeypatch.setenv("MINICOMP_CACHE_MAX_MB", str(10_000 / 2**20))  # about 10 kB
    keys = [key(str(i)) for i in range(6)]
    for i, k in enumerate(keys[:3]):
        assert cache.store(k, bytes([i]) * 3000)
        os.utime(cache_dir / f"{k}.obj", ns=(10**9 * (i + 1),) * 2)  # k0 oldest
    assert cache.load(keys[0]) is not None                            # used now: k1 is the oldest
    assert cache.store(keys[3], b"x" * 3000)                          # 4 x ~3.2 kB > 10 kB
    left = {p.stem for p in stored_entries(cache_dir)}
    assert left == {keys[0], keys[2], keys[3]}
    assert sum(p.stat().st_size for p in stored_entries(cache_dir)) <= 10_000
    assert cache.store(keys[4], b"y" * 20_000)  # larger than the bound alone: everything else goes, it stays
    assert {p.stem for p in stored_entries(cache_dir)} == {keys[4]}


def test_default_bound_and_bad_values(monkeypatch):
    monkeypatch.delenv("MINICOMP_CACHE_MAX_MB", raising=False)
    assert cache.max_bytes() == cache.DEFAULT_MAX_MB << 20 == 1024 << 20
    monkeypatch.setenv("MINICOMP_CACHE_MAX_MB", "lots")
    with pytest.warns(cache.CacheWarning, match="MINICOMP_CACHE_MAX_MB"):
        assert cache.max_bytes() == cache.DEFAULT_MAX_MB << 20


def test_concurrent_writers_and_evictors(cache_dir, monkeypatch):
    """Several writers evicting at once (deleting each other's victims) never fail or leave temp files."""
    monkeypatch.setenv("MINICOMP_CACHE_MAX_MB", str(20_000 / 2**20))
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(25):
                k = key(f"{t}-{i}")
                assert cache.store(k, os.urandom(1000))
                cache.load(k)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp")]
    assert sum(p.stat().st_size for p in stored_entries(cache_dir)) <= 20_000 + 6 * 1200


def test_stale_temporary_files_are_removed(cache_dir):
    cache_dir.mkdir(mode=0o700)
    stale = cache_dir / ".tmp-1-dead.obj"
    stale.write_bytes(b"half an entry")
    os.utime(stale, (time.time() - 7200,) * 2)
    assert cache.store(key(), b"z")
    assert not stale.exists()


# -- point 11: odd or unwritable locations ---------------------------------------------------------
def _compile_warns_once(match: str) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compiles_correctly()
        compiles_correctly(17)
    found = cache_warnings(record)
    assert len(found) == 1 and match in found[0], found


def test_file_where_the_directory_should_be(tmp_path, monkeypatch):
    f = tmp_path / "not-a-dir"
    f.write_text("")
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(f))
    _compile_warns_once("cannot use")
    assert cache.load(key()) is None and not cache.store(key(), b"x") and cache.cache_dir() is None
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(f / "sub"))  # a file where a parent should be
    cache._WARNED.clear()
    _compile_warns_once("cannot use")


def test_unusable_home_and_xdg_cache_home(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("")
    monkeypatch.delenv("MINICOMP_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(f))  # ~/.cache cannot be created
    _compile_warns_once("cannot use")
    cache._WARNED.clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(f / "xdg"))
    _compile_warns_once("cannot use")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # a usable one is used
    assert cache.store(key(), b"x") and (tmp_path / "xdg" / "minicomp" / f"{key()}.obj").exists()


def test_read_only_directory(cache_dir, monkeypatch):
    k = key()
    assert cache.store(k, b"object code")
    if ROOT:  # root writes anyway: simulate the failing create of a read-only directory
        real_open = os.open

        def read_only_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and str(path).startswith(".tmp-"):
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", read_only_open)
    else:
        os.chmod(cache_dir, 0o500)
    try:
        _compile_warns_once("cannot write")
        assert cache.load(k) == b"object code"  # reading still works
        assert not cache.store(key("new"), b"x")
    finally:
        os.chmod(cache_dir, 0o700)
