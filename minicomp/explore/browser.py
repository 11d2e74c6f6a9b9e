"""Drive headless Chromium through its DevTools protocol, over a pipe (standard library only).

Used by the browser tests of the explorer and to take its screenshot for the docs::

    with Browser.launch() as b:
        b.open("file:///tmp/page.html")
        b.key("j")
        print(b.eval("document.title"), b.errors)
        b.screenshot("/tmp/page.png")

Chromium started with ``--remote-debugging-pipe`` reads protocol commands on file
descriptor 3 and writes replies and events on 4, each message NUL-terminated JSON;
no websocket and no port are needed. :attr:`Browser.errors` collects every console
error, uncaught exception and error log entry of the page.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


class BrowserError(RuntimeError):
    """Chromium is missing, died, or answered a command with an error."""


def find_chromium() -> str | None:
    """Path of a Chromium-like browser: ``$MINICOMP_CHROMIUM``, else the first on ``PATH``."""
    env = os.environ.get("MINICOMP_CHROMIUM")
    if env:
        return env if os.path.isfile(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, profile: str):
        self.proc, self._out, self._in, self._profile = proc, to_browser, from_browser, profile
        self._next = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.session: str | None = None

    @classmethod
    def launch(cls, width: int = 1400, height: int = 860, executable: str | None = None) -> "Browser":
        """Start headless Chromium (``executable``, else :func:`find_chromium`) with one page of this size."""
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no Chromium found (apt-get install chromium, or set MINICOMP_CHROMIUM)")
        profile = tempfile.mkdtemp(prefix="minicomp-chromium-")
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()

        def child_fds() -> None:  # runs in the child: the protocol pipe on fds 3 and 4
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)
        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]
        # close_fds=False: subprocess closes every fd but pass_fds *after* preexec_fn, which would take 3
        # and 4 away again; the pipe's own fds are not inheritable, dup2's copies are.
        proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        b = cls(proc, to_w, from_r, profile)
        try:
            b._attach(width, height)
        except Exception:
            b.close()
            raise
        return b

    def _attach(self, width: int, height: int) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # -- protocol ------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0,
             session: bool = True) -> dict[str, Any]:
        """Send one command and wait for its reply (events meanwhile go to :attr:`events`)."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise BrowserError(f"no reply to {method} within {timeout} s")
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._in], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (status {self.proc.poll()})")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def _event(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            det = p.get("exceptionDetails", {})
            self.errors.append("exception: " + str(det.get("exception", {}).get("description", det.get("text"))))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append("log: " + p["entry"].get("text", ""))

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            ev = self._read(deadline)
            if ev is None:
                return
            self._event(ev)

    # -- page helpers --------------------------------------------------------------------
    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            ev = self._read(deadline)
            if ev is None:
                raise BrowserError(f"{url} did not load within {timeout} s")
            self._event(ev)

    def eval(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited); a thrown error is a BrowserError."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression!r} threw: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            self.pump(0.1)
        raise BrowserError(f"timed out waiting for {expression!r}")

    def key(self, key: str) -> None:
        """Press and release one key (a character, or a name such as ``ArrowDown`` or ``Escape``)."""
        text = key if len(key) == 1 else ""
        down = {"type": "keyDown", "key": key, "text": text} if text else {"type": "rawKeyDown", "key": key,
                                                                          "code": key,
                                                                          "windowsVirtualKeyCode": _VK.get(key, 0)}
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key})

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector``."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
                        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                        "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: str) -> None:
        """Save a PNG of the viewport."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """Stop Chromium and remove its profile."""
        try:
            os.close(self._out)
            os.close(self._in)
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_VK = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Escape": 27, "Enter": 13}
