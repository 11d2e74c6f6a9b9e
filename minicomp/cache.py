"""The on-disk cache: a private directory of verified, size-bounded entries.

Where: ``$MINICOMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/minicomp``, else
``~/.cache/minicomp`` (created with mode 0o700). What lives there, one file per
entry named ``KEY.KIND`` (KEY: 64 hex digits): object code of a program (``.obj``,
keyed by :func:`cache_key`), compiled-model records and their final graph text
(``.model``, ``.graph``: :mod:`minicomp.program_cache`), the thread pool's object
code (``.pool``, :func:`install_pool`) and the shared GEMM library's (``.lib``).

Trust (docs/reliability.md, "The caches and their threat model"): the directory is
used only if it is a directory owned by this user and writable by nobody else; an
entry is read only if it is a regular file owned by this user, opened with
``O_NOFOLLOW`` (a symbolic link is refused) and ``O_NONBLOCK`` (a FIFO cannot
hang the open), and its header verifies. Anything else costs the cache, never
the compile: a warning (once per problem per process, :class:`CacheWarning`) and
a compile without it. Nothing is ever unpickled.

Each entry is ``header + payload``; the header is one line::

    b"MCENT2 " + kind (6 chars) + " " + key + " " + len(payload) (16 digits) + " " + sha256 + b"\\n"

where the sha256 covers everything before it plus the payload. An entry is valid
only under its own key and kind: a file copied or renamed to another key fails the
check, is deleted and reads as a miss. Writes go to a temporary file moved into
place with ``os.replace`` (readers never see half an entry). A hit touches the
entry's modification time; after each write the least recently used entries are
deleted until the directory holds at most ``$MINICOMP_CACHE_MAX_MB`` MiB
(:data:`DEFAULT_MAX_MB` by default; an entry larger than that alone stays until the next
write), tolerating other processes deleting too.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

MAGIC = b"MCENT2 "
#: Entry kinds (file suffixes).
KINDS = ("obj", "model", "graph", "pool", "lib")
#: The size bound when ``$MINICOMP_CACHE_MAX_MB`` is not set.
DEFAULT_MAX_MB = 1024
_HEADER = len(MAGIC) + 6 + 1 + 64 + 1 + 16 + 1 + 64 + 1
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.(obj|model|graph|pool|lib)\Z")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600  # a temporary file older than this was left by a process that died mid-write
#: Problems already reported in this process (each warns once).
_WARNED: set[str] = set()


class CacheWarning(UserWarning):
    """The cache directory or an entry cannot be trusted or used; the compile goes on without it."""


def _uid() -> int:
    """The user whose files the cache trusts (a function so tests can pose as another user)."""
    return os.getuid()


def warn_once(problem: str) -> None:
    """Warn about a cache problem the first time this process meets it."""
    if problem in _WARNED:
        return
    _WARNED.add(problem)
    warnings.warn(f"minicomp cache: {problem}; compiling without it", CacheWarning, stacklevel=3)


def cache_path() -> Path | None:
    """Where the cache lives (not created, not checked); None when no location can be named."""
    env = os.environ.get("MINICOMP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "minicomp"
    try:
        return Path.home() / ".cache" / "minicomp"
    except (RuntimeError, KeyError):
        warn_once("no home directory to keep a cache in (set MINICOMP_CACHE_DIR)")
        return None


def cache_dir() -> Path | None:
    """The cache directory, created private (0o700) if missing; None (after a warning) if unusable."""
    with _directory() as fd:
        return None if fd is None else cache_path()


@contextlib.contextmanager
def _directory() -> Iterator[int | None]:
    """A file descriptor of the checked cache directory, or None (warned) when it cannot be trusted."""
    path = cache_path()
    fd = None
    if path is not None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            warn_once(f"cannot use {path} as the cache directory ({err.strerror or err})")
        if fd is not None and not _trusted_dir(fd, path):
            os.close(fd)
            fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _trusted_dir(fd: int, path: Path) -> bool:
    st = os.fstat(fd)
    if st.st_uid != _uid():
        warn_once(f"{path} is owned by uid {st.st_uid}, not by this user (uid {_uid()})")
        return False
    if st.st_mode & 0o022:
        warn_once(f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")
        return False
    if st.st_mode & 0o055:
        try:
            os.fchmod(fd, 0o700)  # readable by others: ours, so made private
        except OSError:
            pass
    return True


def _name(key: str, suffix: str) -> str:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"bad cache key {key!r}")
    if suffix[:1] != "." or suffix[1:] not in KINDS:
        raise ValueError(f"bad cache entry kind {suffix!r}")
    return key + suffix


def _header(key: str, kind: str, payload: bytes) -> bytes:
    prefix = MAGIC + f"{kind:<6} {key} {len(payload):016d} ".encode()
    h = hashlib.sha256(prefix)
    h.update(payload)
    return prefix + h.hexdigest().encode() + b"\n"


def _verify(data: bytes, key: str, kind: str) -> bytes | None:
    payload = data[_HEADER:]
    if len(data) < _HEADER or data[:_HEADER] != _header(key, kind, payload):
        return None
    return payload


def load(key: str, suffix: str = ".obj") -> bytes | None:
    """The payload stored under ``key`` as an entry of kind ``suffix`` (".obj", ".model", ".graph",
    ".pool" or ".lib"), or None: missing, untrusted (warned), or invalid (then deleted)."""
    name = _name(key, suffix)
    with _directory() as dfd:
        if dfd is None:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as err:  # ELOOP: a symbolic link
            warn_once(f"refusing entry {name} ({err.strerror or err})")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != _uid():
                warn_once(f"refusing entry {name}: " + ("not a regular file" if not stat.S_ISREG(st.st_mode)
                                                       else f"owned by uid {st.st_uid}"))
                return None
            data = _read_all(fd, st.st_size)
            payload = _verify(data, key, suffix[1:])
            if payload is None:
                _unlink(dfd, name)  # corrupt, truncated, or valid under another key or kind
            else:
                with contextlib.suppress(OSError):
                    os.utime(fd)  # most recently used now (the eviction order)
            return payload
        except OSError:
            return None
        finally:
            os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def store(key: str, payload: bytes, suffix: str = ".obj") -> bool:
    """Write ``payload`` under ``key`` (entry kind ``suffix``) atomically, then evict past the size bound.

    Returns False (after a warning) when the cache cannot be written: a read-only or full
    disk only costs the next compile.
    """
    name = _name(key, suffix)
    with _directory() as dfd:
        if dfd is None:
            return False
        tmp = f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(_header(key, suffix[1:], payload))
                    f.write(payload)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as err:
            _unlink(dfd, tmp)
            warn_once(f"cannot write to {cache_path()} ({err.strerror or err})")
            return False
        evict(dfd, keep=name)
        return True


def max_bytes() -> int:
    """The size bound in bytes: ``$MINICOMP_CACHE_MAX_MB`` MiB (a bad value warns and uses the default)."""
    text = os.environ.get("MINICOMP_CACHE_MAX_MB")
    if text:
        try:
            mb = float(text)
            if mb >= 0:
                return int(mb * (1 << 20))
        except ValueError:
            pass
        warn_once(f"MINICOMP_CACHE_MAX_MB={text!r} is not a size in MiB; using {DEFAULT_MAX_MB}")
    return DEFAULT_MAX_MB << 20


def evict(dfd: int, keep: str | None = None) -> None:
    """Delete least recently used entries (by modification time) until the directory holds at most
    :func:`max_bytes`, or only ``keep`` (the entry just written, never deleted here). Entries another
    process deletes meanwhile are skipped, and so are files not owned by this user."""
    limit, uid, now = max_bytes(), _uid(), time.time()
    entries, total = [], 0
    with os.scandir(dfd) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                continue
            if e.name.startswith(_TMP_PREFIX):
                if now - st.st_mtime > _STALE_TMP_S:
                    _unlink(dfd, e.name)
                continue
            if _ENTRY_NAME.match(e.name):
                total += st.st_size
                if e.name != keep:
                    entries.append((st.st_mtime_ns, e.name, st.st_size))
    if total <= limit:
        return
    for _, name, size in sorted(entries):
        if total <= limit:
            break
        _unlink(dfd, name)
        total -= size


def _unlink(dfd: int, name: str) -> None:
    with contextlib.suppress(OSError):  # already gone (another process evicted it) or not ours to remove
        os.unlink(name, dir_fd=dfd)


# -- keys ----------------------------------------------------------------------------------------
def host_description() -> str:
    """CPU name and features of this host (what the object code was tuned for)."""
    import llvmlite.binding as llvm
    return f"{llvm.get_host_cpu_name()};{llvm.get_host_cpu_features().flatten()};{llvm.get_default_triple()}"


def backend_fingerprint() -> str:
    """sha256 of the CPU backend's source files, so editing the code generator (during
    development the version number does not change) never reuses stale object code."""
    from minicomp.codegen import llvm as backend
    from minicomp.ir import kernel
    root = Path(backend.__file__).parent  # with its subpackages (runtime/: the JIT, library, pool)
    files = [(f"llvm/{f.relative_to(root).as_posix()}", f) for f in sorted(root.rglob("*.py"))]
    files.append(("ir/kernel.py", Path(kernel.__file__)))
    return hash_parts(*(part for rel, f in files for part in (rel, f.read_bytes())))


def hash_parts(*parts: str | bytes) -> str:
    """sha256 hex of length-framed ``parts`` (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        data = p if isinstance(p, bytes) else p.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_key(*parts: str) -> str:
    """sha256 over ``parts`` plus the host CPU, the backend's source and the versions of
    minicomp, llvmlite and Python."""
    import llvmlite

    import minicomp
    return hash_parts(*parts, host_description(), backend_fingerprint(), minicomp.__version__,
                      llvmlite.__version__, sys.version)


def pool_key(ir_text: str) -> str:
    """Cache key of the thread pool's object code (:mod:`minicomp.codegen.llvm.runtime.threadpool`).

    sha256 over the pool's IR text, the llvmlite and LLVM versions, the target triple
    and the host CPU name and features: everything its machine code depends on.
    """
    return _runtime_key("minicomp thread pool, O2", ir_text)


def library_key(ir_text: str) -> str:
    """Cache key of the shared GEMM library's object code (:mod:`minicomp.codegen.llvm.runtime.library`):
    like :func:`pool_key`, over the library module's IR text and its optimization level."""
    from minicomp.codegen.llvm.runtime import library
    return _runtime_key(f"minicomp GEMM library, O{library.LEVEL}", ir_text)


def _runtime_key(domain: str, ir_text: str) -> str:
    import llvmlite
    import llvmlite.binding as llvm
    return hash_parts(domain, ir_text, llvmlite.__version__, repr(llvm.llvm_version_info), host_description())


def _store_library(ir_text: str, object_code: bytes) -> None:
    store(library_key(ir_text), object_code, ".lib")


def install_pool() -> None:
    """Load the per-process thread pool from cached object code (compiling and caching it on a miss).

    A fresh process serving a compile from the cache then skips the pool's LLVM
    compile. The ``.pool`` entry passes the same checks as every entry (owner, regular
    file, key and kind in the verified header): a planted or corrupt one is never
    loaded. No-op once installed. Also points the shared GEMM library
    (:mod:`minicomp.codegen.llvm.runtime.library`) at ``KEY.lib`` entries, so its functions too
    are compiled once per cache, not once per process.
    """
    from minicomp.codegen.llvm.runtime import library, threadpool
    library.use_disk_cache(lambda text: load(library_key(text), ".lib"), _store_library)
    if not threadpool.supported() or threadpool.installed():
        return
    text = threadpool.pool_ir()
    key = pool_key(text)
    obj = load(key, ".pool")
    if obj is None:
        obj = threadpool.compile_object(text)
        store(key, obj, ".pool")
    threadpool.load_object(obj)
