"""The explorer's local web server: 127.0.0.1 only, three routes, nothing else.

Routes (GET only):

* ``/`` : the page (:func:`minicomp.explore.page.render_shell`);
* ``/api/report.json`` : the record so far (the page polls it while parts are pending);
* ``/api/source?path=REL`` : a source file the record refers to (a user's line that some
  node came from), ``REL`` relative to the project root (the directory holding the
  explored file, or the current directory when it holds that file). Only those files
  are served: any other path, even inside the root, is refused with 403, so another
  local user who finds the port cannot read the rest of the directory (keys, tokens).
  A path that leaves the root (``..``, an absolute path, a symbolic link pointing out)
  is 403 too, and a referenced file that has gone is 404.

Anything else is 404; a request the server cannot make sense of (a query without
``path``, a ``Host`` other than this server's, a method other than GET/HEAD) is 400 or
405. The ``Host`` check keeps pages of other sites from reading the record through a
name that resolves to 127.0.0.1 (DNS rebinding).
"""
from __future__ import annotations

import os
import sys
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from minicomp.explore.page import render_shell, report_json

HOST = "127.0.0.1"
#: Largest file ``/api/source`` sends.
MAX_SOURCE_BYTES = 2 << 20


def project_root(path: str) -> Path:
    """The current directory when it holds ``path``, else the directory of ``path``."""
    file = Path(path).resolve()
    cwd = Path.cwd().resolve()
    return cwd if cwd in file.parents else file.parent


class ExploreServer(ThreadingHTTPServer):
    """Serves one :class:`~minicomp.explore.record.Report` (see the module docstring)."""

    daemon_threads = True

    def __init__(self, report: Any, root: Path, port: int = 0):
        self.report = report
        self.root = root.resolve()
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://{HOST}:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "minicomp-explore"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the address only
        pass

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n", "text/plain", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _route(self, head: bool) -> None:
        if not self._host_ok():
            return self._send(HTTPStatus.BAD_REQUEST, b"unexpected Host header\n", "text/plain", head)
        try:
            parts = urlsplit(self.path)
        except ValueError:
            return self._send(HTTPStatus.BAD_REQUEST, b"malformed request target\n", "text/plain", head)
        if parts.path == "/":
            if parts.query:
                return self._send(HTTPStatus.BAD_REQUEST, b"/ takes no query\n", "text/plain", head)
            body = render_shell(self.server.report.title).encode()
            return self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", head)
        if parts.path == "/api/report.json":
            body = report_json(self._with_paths(self.server.report.data())).encode()
            return self._send(HTTPStatus.OK, body, "application/json", head)
        if parts.path == "/api/source":
            return self._source(parts.query, head)
        return self._send(HTTPStatus.NOT_FOUND, b"no such page\n", "text/plain", head)

    def _with_paths(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with ``rel``, the path ``/api/source`` takes, on every source file inside the project."""
        root, sources = self.server.root, {}
        for loc, entry in data["sources"].items():
            file = Path(entry["file"]).resolve()
            sources[loc] = dict(entry, rel=file.relative_to(root).as_posix()) if root in file.parents else entry
        return dict(data, sources=sources)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host")
        port = self.server.server_address[1]
        return host in (f"{HOST}:{port}", f"localhost:{port}")

    def _source(self, query: str, head: bool) -> None:
        try:
            params = parse_qs(query, strict_parsing=True, max_num_fields=4)
        except ValueError:
            return self._send(HTTPStatus.BAD_REQUEST, b"malformed query\n", "text/plain", head)
        paths = params.get("path", [])
        if len(paths) != 1 or not paths[0] or set(params) != {"path"}:
            return self._send(HTTPStatus.BAD_REQUEST, b"expected exactly one ?path=FILE\n", "text/plain", head)
        referenced = {e["rel"] for e in self._with_paths(self.server.report.data())["sources"].values() if "rel" in e}
        if paths[0] not in referenced:
            return self._send(HTTPStatus.FORBIDDEN, b"not a source file of this report\n", "text/plain", head)
        status, body = read_project_file(self.server.root, paths[0])
        self._send(status, body, "text/plain; charset=utf-8", head)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def read_project_file(root: Path, rel: str) -> tuple[HTTPStatus, bytes]:
    """(status, body) for the file ``rel`` under ``root``; anything resolving outside ``root`` is 403."""
    if "\x00" in rel or os.path.isabs(rel):
        return HTTPStatus.FORBIDDEN, b"outside the project\n"
    target = (root / rel).resolve()
    if root != target and root not in target.parents:
        return HTTPStatus.FORBIDDEN, b"outside the project\n"
    if not target.is_file():
        return HTTPStatus.NOT_FOUND, b"no such file\n"
    if target.stat().st_size > MAX_SOURCE_BYTES:
        return HTTPStatus.FORBIDDEN, b"file too large\n"
    return HTTPStatus.OK, target.read_bytes()


def _open_browser(url: str) -> None:
    """``--open``: the default browser, or a line saying there is none (a headless machine)."""
    try:
        opened = webbrowser.open(url)
    except Exception as exc:  # noqa: BLE001 - any failure of the platform's opener
        opened, why = False, f" ({type(exc).__name__}: {exc})"
    else:
        why = ""
    if not opened:
        print(f"minicomp explore: could not open a browser{why}; open {url} yourself", file=sys.stderr)


def serve(report: Any, port: int = 0, open_browser: bool = False, started: float | None = None,
          fill: Callable[[], None] | None = None) -> int:
    """Serve ``report`` until interrupted, printing the address first; ``fill()`` (run meanwhile in
    this thread) records the passes into it while the page already shows what is there."""
    from minicomp.cli import UserError
    try:
        server = ExploreServer(report, project_root(report.path), port)
    except OSError as exc:
        raise UserError(f"--port {port}: cannot listen on {HOST}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print(f"minicomp explore: serving {report.path} at {server.url}; Ctrl-C stops", flush=True)
    if open_browser:
        threading.Thread(target=_open_browser, args=(server.url,), daemon=True).start()
    try:
        if fill is not None:
            fill()
            took = f" {time.perf_counter() - started:.1f} s after the start" if started is not None else ""
            print(f"minicomp explore: {len(report.passes) - 1} passes recorded{took}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("minicomp explore: stopped", file=sys.stderr)
    finally:
        server.shutdown()
        server.server_close()
    return 0
