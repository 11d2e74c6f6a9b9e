"""``minicomp explore FILE.py|FILE.mcir``: the pass explorer's command line.

Serves the explorer page on 127.0.0.1 (a free port unless ``--port``; the address
is printed, and a browser opens only with ``--open``), or writes one self-contained
HTML file with ``--html OUT.html``. ``--passes`` and ``--load`` choose the pipeline
exactly as ``minicomp opt`` does (:mod:`minicomp.cli_passes`): pass names, and plugin
modules (``pkg.module[:function]`` or a ``.py`` file) whose import registers the
user's own passes.

Every user error (an unknown option or pass, a missing file, an unwritable ``--html``
path, a model file without ``model()``) prints one line and returns status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from minicomp.cli_passes import add_plugin_args, load_plugins, pass_list

EXIT_USER_ERROR = 2


class _ArgError(Exception):
    """An argparse error, reported in one line by :func:`main`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage too and exit by itself
        raise _ArgError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``minicomp explore`` arguments."""
    p = _Parser(prog="minicomp explore",
                description="Watch a model go through the compiler, pass by pass, in the browser.")
    p.add_argument("file", help="a model file (defines model() and example_inputs()) or a text IR file (.mcir)")
    add_plugin_args(p, "comma-separated pass names (default: the CPU pipeline; 'default' stands for it, "
                       "so default,my-pass appends one); passes of your own with --load")
    p.add_argument("--html", metavar="OUT.html", help="write one self-contained page instead of serving it")
    p.add_argument("--screenshot", metavar="OUT.png", help="save a picture of the page (needs Chromium) and exit")
    p.add_argument("--view", default="", metavar="STATE",
                   help="what the page shows first, e.g. 'pass=fuse&tab=graph&sel=gelu' (see docs/explore.md)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--no-native", action="store_true",
                   help="skip compiling the kernels (no LLVM IR, assembly or timing)")
    p.add_argument("--target", choices=["cpu", "triton"], default="cpu",
                   help="cpu: LLVM IR, assembly and kernel times (default); triton: Triton source "
                        "(in Triton's interpreter where there is no GPU)")
    p.add_argument("--drawing", choices=["auto", "dot", "builtin"], default="auto",
                   help="graph layout: Graphviz's dot (auto: when installed) or the built-in one")
    p.add_argument("--verbose", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``minicomp explore``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except _ArgError as exc:
        print(f"minicomp explore: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("minicomp explore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted into user errors (one line) and internal ones below
        return _report(exc, args.verbose)


def _report(exc: Exception, verbose: bool) -> int:
    import traceback

    from minicomp.cli import UserError
    from minicomp.errors import MinicompError
    user = isinstance(exc, (UserError, MinicompError)) or type(exc).__name__ in ("ParseError", "VerifyError",
                                                                                 "UnknownPassError")
    if verbose or not user:
        traceback.print_exc()
    if user:
        msg = exc.args[0] if type(exc).__name__ == "UnknownPassError" else exc
        print(f"minicomp explore: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"minicomp explore: internal error: {type(exc).__name__}: {exc} (please report; --verbose for details)",
          file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from minicomp.cli import UserError, writable_file
    from minicomp.explore.record import explore_file
    if not Path(args.file).is_file():
        raise UserError(f"{args.file}: no such file")
    if not (0 <= args.port <= 65535):
        raise UserError(f"--port {args.port}: expected 0 (a free port) to 65535")
    html = writable_file(args.html, "--html") if args.html else None
    shot = writable_file(args.screenshot, "--screenshot") if args.screenshot else None
    if shot is not None:
        from minicomp.explore.browser import find_chromium
        if find_chromium() is None:
            raise UserError("--screenshot needs Chromium (apt-get install chromium, or set MINICOMP_CHROMIUM)")
    load_plugins(args.load)
    passes = pass_list(args.passes, args.target)
    started = time.perf_counter()
    if html is not None or shot is not None:
        from minicomp.explore.page import render_page
        report = explore_file(args.file, passes, native=not args.no_native, deferred=False, drawing=args.drawing,
                              target=args.target)
        page = render_page(report.data())
        _warn_failed(report)
        if html is not None:
            html.write_text(page, encoding="utf-8")
            print(f"wrote {args.html} ({time.perf_counter() - started:.1f} s)")
        if shot is not None:
            take_screenshot(page, shot, args.view)
            print(f"wrote {args.screenshot}")
        return 0
    from minicomp.cli import model_and_inputs, read_ir_file
    from minicomp.explore.record import new_report
    from minicomp.explore.server import serve
    # The user's own errors (no model(), a model() that raises, bad IR) before the address is printed;
    # tracing and the passes then run while the page already shows their progress.
    loaded = None
    if args.file.endswith(".mcir"):
        read_ir_file(args.file)
    else:
        loaded = model_and_inputs(args.file)
    report = new_report(args.file, args.target)

    def fill() -> None:
        explore_file(args.file, passes, native=not args.no_native, deferred=True, drawing=args.drawing,
                     report=report, loaded=loaded)
        _warn_failed(report)
    return serve(report, port=args.port, open_browser=args.open, started=started, fill=fill)


def _warn_failed(report) -> None:
    """One line on stderr when a pass failed (the page shows the pipeline up to it, with the error)."""
    failed = [p for p in report.passes if p.error is not None]
    if failed:
        print(f"minicomp explore: warning: pass '{failed[0].name}' failed ({failed[0].error}); the page shows "
              "the pipeline up to it", file=sys.stderr)


def take_screenshot(page: str, out: Path, view: str = "") -> None:
    """Open ``page`` in headless Chromium at the state ``view`` (a URL fragment) and save a PNG."""
    import tempfile

    from minicomp.explore.browser import Browser
    with tempfile.TemporaryDirectory(prefix="minicomp-explore-") as tmp:
        file = Path(tmp) / "page.html"
        file.write_text(page, encoding="utf-8")
        with Browser.launch() as b:
            b.open(file.as_uri() + ("#" + view.lstrip("#") if view else ""))
            b.wait_for("window.explorer && explorer.state.data && explorer.state.data.pending.length === 0")
            b.pump(0.3)
            if b.errors:
                raise RuntimeError(f"the page reported errors: {'; '.join(b.errors)}")
            b.screenshot(str(out))
