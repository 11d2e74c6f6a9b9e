"""On-disk cache of compiled object code.

Entries live in a private directory (``$MINICOMP_CACHE_DIR`` or
``~/.cache/minicomp``, created with mode 0o700) under the sha256 of everything
that affects the machine code (:func:`cache_key`: the program, target, options,
host CPU name and features, the backend's source files, and the versions of
minicomp, llvmlite and Python). Each file is::

    b"MCOBJ1\\n" + sha256(payload) as 64 hex digits + b"\\n" + len(payload) as 16 digits + b"\\n" + payload

written to a temporary file and moved into place with ``os.replace`` (readers
never see half an entry). :func:`load` verifies magic, length and hash; an entry
that fails is deleted and ``None`` returned, so the caller recompiles: corrupt
code is never executed. Nothing is pickled.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path

MAGIC = b"MCOBJ1\n"
_HEADER = len(MAGIC) + 65 + 17


def cache_dir() -> Path:
    """The cache directory, created private (0o700) if missing."""
    path = Path(os.environ.get("MINICOMP_CACHE_DIR") or Path.home() / ".cache" / "minicomp")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def host_description() -> str:
    """CPU name and features of this host (what the object code was tuned for)."""
    import llvmlite.binding as llvm
    return f"{llvm.get_host_cpu_name()};{llvm.get_host_cpu_features().flatten()};{llvm.get_default_triple()}"


def backend_fingerprint() -> str:
    """sha256 of the CPU backend's source files, so editing the code generator (during
    development the version number does not change) never reuses stale object code."""
    from minicomp.codegen import llvm as backend
    from minicomp.ir import kernel
    h = hashlib.sha256()
    files = sorted(Path(backend.__file__).parent.glob("*.py")) + [Path(kernel.__file__)]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(*parts: str) -> str:
    """sha256 over ``parts`` plus the host CPU, the backend's source and the versions of
    minicomp, llvmlite and Python."""
    import llvmlite

    import minicomp
    h = hashlib.sha256()
    for p in (*parts, host_description(), backend_fingerprint(), minicomp.__version__, llvmlite.__version__,
              sys.version):
        data = p.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _path(key: str) -> Path:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"bad cache key {key!r}")
    return cache_dir() / f"{key}.obj"


def load(key: str) -> bytes | None:
    """The payload stored under ``key``, or None (missing, or corrupt and now deleted)."""
    path = _path(key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    payload = _verify(data)
    if payload is None:
        try:
            path.unlink()
        except OSError:
            pass
    return payload


def _verify(data: bytes) -> bytes | None:
    if len(data) < _HEADER or not data.startswith(MAGIC):
        return None
    digest = data[len(MAGIC):len(MAGIC) + 64].decode("ascii", "replace")
    try:
        length = int(data[len(MAGIC) + 65:len(MAGIC) + 81])
    except ValueError:
        return None
    payload = data[_HEADER:]
    if len(payload) != length or hashlib.sha256(payload).hexdigest() != digest:
        return None
    return payload


def store(key: str, payload: bytes) -> None:
    """Write ``payload`` under ``key`` atomically (temp file + os.replace)."""
    path = _path(key)
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + f"{len(payload):016d}".encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".obj")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
