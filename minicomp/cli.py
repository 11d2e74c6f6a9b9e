"""The ``minicomp`` command line (also ``python -m minicomp``).

Commands: ``demo``, ``compile``, ``opt``, ``explain``, ``bench``, ``explore`` (the pass
explorer, :mod:`minicomp.explore.cli`, which parses its own arguments). ``compile``, ``opt`` and
``explain`` take ``--load MODULE`` (plugins registering passes) and ``--passes``
(:mod:`minicomp.cli_passes`). A user error (missing file, no ``model()``, a ``model()``
that raises, an unwritable output path, a non-UTF-8 ``.mcir``, an unsupported op, an
unknown pass, target or plugin) prints one line and exits with status 2;
``--verbose`` shows the traceback. Every argument and output path is checked before
any long work starts, and an error raised by the user's own file is reported at that
file's line.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from minicomp.cli_passes import add_plugin_args, check_target, load_plugins, pass_list

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error in what the user asked for: reported in one line, exit status 2."""


def load_model_file(path: str) -> ModuleType:
    """Import FILE.py, which must define ``model()`` and ``example_inputs()``."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_minicomp_user_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed to import
        raise UserError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    for fn in ("model", "example_inputs"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"{path}: defines no {fn}() function (a model file needs model() and example_inputs())")
    return module


def model_and_inputs(path: str) -> tuple[Any, tuple[Any, ...]]:
    """``model()`` and ``example_inputs()`` of FILE.py, checked: a module (or a function) and a
    tuple of tensors. Anything else, or either function raising, is a UserError naming the file."""
    import torch
    module = load_model_file(path)
    model = _call_user(module.model, path)
    if not (isinstance(model, torch.nn.Module) or callable(model)):
        raise UserError(f"{path}: model() returned a {type(model).__name__}; expected a torch.nn.Module "
                        f"(or a function of tensors)")
    inputs = _call_user(module.example_inputs, path)
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise UserError(f"{path}: example_inputs() returned a {type(inputs).__name__}; expected a tuple "
                        f"or list of tensors")
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise UserError(f"{path}: example_inputs() item {i} is a {type(t).__name__}; expected tensors")
    return model, tuple(inputs)


def _call_user(fn: Any, path: str) -> Any:
    """``fn()`` from the user's file; what it raises becomes a UserError at the file's line."""
    try:
        return fn()
    except Exception as exc:
        raise UserError(f"{_where_in(exc.__traceback__, path) or path}: {fn.__name__}() raised "
                        f"{type(exc).__name__}: {exc}") from exc


def _where_in(tb: TracebackType | None, path: str) -> str | None:
    """``path:LINE`` of the innermost traceback frame in the file ``path``, or None."""
    want, where = os.path.realpath(path), None
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == want:
            where = f"{path}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


# -- output paths: checked before the work starts -----------------------------------------
def writable_dir(path: str, flag: str) -> Path:
    """Directory ``path`` (created if missing) after checking that a file can be written there."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there: {exc.strerror or exc}") from None
    return p


def writable_file(path: str, flag: str) -> Path:
    """File ``path`` after checking that it can be written (an existing file is left as it is)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a directory; expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is not an existing directory")
    existed = p.exists()
    try:
        with open(p, "a"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write: {exc.strerror or exc}") from None
    if not existed:
        p.unlink()
    return p


def _progress(msg: str) -> None:
    print(f"... {msg}", file=sys.stderr, flush=True)


# -- commands ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from minicomp.demo import run_demo
    return run_demo(targets=args.target, progress=_progress)


def cmd_compile(args: argparse.Namespace) -> int:
    import minicomp
    from minicomp.driver import TARGETS
    check_target(args.target, tuple(t for t in TARGETS if t != "interpret"))
    load_plugins(args.load)
    passes = pass_list(args.passes, args.target)
    arch = _aot_arch(args.aot) if args.aot else None
    if arch is not None and args.target not in ("triton", "cuda"):
        raise UserError("--aot needs --target triton")
    _check_exists(args.file)
    dump = writable_dir(args.dump_dir, "--dump-dir") if args.dump_dir else None
    m, inputs = model_and_inputs(args.file)
    _progress(f"compiling {args.file} for {args.target}")
    cm = minicomp.compile(m, inputs, target=args.target, dump_dir=dump, passes=passes,
                          print_ir_after_all=args.print_ir_after_all)
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        for kind in cm.source_kinds():
            (dump / f"final.{kind}").write_text(cm.source(kind))
    print(cm.summary())
    if arch is not None:
        results = cm.aot_compile(arch)
        failed = [r for r in results if not r.ok]
        for r in results:
            print(f"  {'ok  ' if r.ok else 'FAIL'} {r.name}{'' if r.ok else ': ' + r.error}")
        print(f"AOT sm_{arch}: {len(results) - len(failed)}/{len(results)} kernels compiled")
        return 1 if failed else 0
    return 0


def _aot_arch(text: str) -> int:
    """The compute capability in ``sm_90`` (or ``90``) form."""
    digits = text.removeprefix("sm_")
    if not digits.isdigit():
        raise UserError(f"--aot {text}: expected a GPU architecture like sm_90")
    return int(digits)


def cmd_opt(args: argparse.Namespace) -> int:
    from minicomp.passes.manager import PassManager
    _check_exists(args.file)
    load_plugins(args.load)
    passes = pass_list(args.passes, "cpu")
    graph = read_ir_file(args.file)
    pm = PassManager(passes, verify=True, print_after_all=args.print_ir_after_all)
    graph = pm.run(graph)
    print(str(graph), end="")
    return 0


def read_ir_file(path: str):
    """The verified graph in the text IR file ``path``; every problem is a UserError at ``path``."""
    from minicomp.ir.parser import ParseError, parse
    from minicomp.ir.verifier import VerifyError, verify
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        graph = parse(text)
    except ParseError as exc:
        raise UserError(f"{path}:{exc.line}:{exc.col}: {exc.detail}") from exc
    try:
        verify(graph)
    except VerifyError as exc:
        raise UserError(f"{path}: invalid IR: {exc}") from exc
    return graph


def _check_exists(path: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")


def cmd_explain(args: argparse.Namespace) -> int:
    import minicomp
    from minicomp.ir.dot import to_dot_compare
    _check_exists(args.file)
    load_plugins(args.load)
    passes = pass_list(args.passes, "cpu")
    dot_path = writable_file(args.dot, "--dot") if args.dot else None
    svg_path = writable_file(args.svg, "--svg") if args.svg else None
    exe = shutil.which("dot") if args.svg else None
    if args.svg and exe is None:
        raise UserError("--svg needs Graphviz's 'dot' program (apt-get install graphviz); use --dot instead")
    model, inputs = model_and_inputs(args.file)
    _progress(f"compiling {args.file}")
    cm = minicomp.compile(model, inputs, target="cpu", passes=passes)
    print(cm.explain())
    dot = to_dot_compare(minicomp.trace(model, inputs), cm.graph, title=Path(args.file).stem)
    if dot_path is not None:
        dot_path.write_text(dot)
        print(f"wrote {args.dot}")
    if svg_path is not None:
        proc = subprocess.run([exe, "-Tsvg", "-o", str(svg_path)], input=dot, text=True, capture_output=True)
        if proc.returncode != 0:
            raise UserError(f"dot failed: {proc.stderr.strip()}")
        print(f"wrote {args.svg}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from minicomp.bench import run_bench
    if args.repeat is not None and args.repeat < 1:
        raise UserError(f"--repeat {args.repeat}: expected at least 1 timed run per case")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: expected at least 1")
        os.environ["MINICOMP_NUM_THREADS"] = str(args.threads)
    if args.json:
        writable_file(args.json, "--json")
    if args.plot:
        writable_file(args.plot, "--plot")
    elif args.json:
        writable_file(os.path.splitext(args.json)[0] + ".png", "--json (its plot beside it)")
    return run_bench(cases=args.cases, json_path=args.json, plot_path=args.plot, repeat=args.repeat,
                     progress=_progress, quick=args.quick, cold=args.cold)


_PASSES_HELP = ("comma-separated passes to run instead of the default pipeline; 'default' stands for it "
                "(default,my-pass appends one); passes of your own with --load")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minicomp", description="A small deep-learning compiler.")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="compile the examples, check them against PyTorch, print a table")
    d.add_argument("--target", action="append", choices=["cpu", "triton"], default=None,
                   help="backend(s) to run (default: cpu; triton uses TRITON_INTERPRET=1 without a GPU)")
    d.set_defaults(fn=cmd_demo)

    c = sub.add_parser("compile", help="compile FILE.py (defines model() and example_inputs())")
    c.add_argument("file")
    c.add_argument("--target", default="cpu", help="cpu (default), triton or cuda")
    c.add_argument("--print-ir-after-all", action="store_true")
    c.add_argument("--dump-dir")
    c.add_argument("--aot", metavar="sm_90", help="compile every Triton kernel ahead of time for this GPU")
    add_plugin_args(c, _PASSES_HELP)
    c.set_defaults(fn=cmd_compile)

    o = sub.add_parser("opt", help="run passes on a text IR file, print the result (like mlir-opt)")
    o.add_argument("file")
    add_plugin_args(o, None)
    o.add_argument("--passes", required=True, help="comma-separated pass names, e.g. dce,cse,fuse, or default; "
                                                   "passes of your own with --load")
    o.add_argument("--print-ir-after-all", action="store_true")
    o.set_defaults(fn=cmd_opt)

    e = sub.add_parser("explain", help="explain fusion and layout decisions; draw the graph")
    e.add_argument("file")
    e.add_argument("--svg")
    e.add_argument("--dot")
    add_plugin_args(e, _PASSES_HELP)
    e.set_defaults(fn=cmd_explain)

    b = sub.add_parser("bench", help="benchmark against PyTorch eager and torch.compile")
    from minicomp.bench import add_arguments as add_bench_arguments
    add_bench_arguments(b)  # the same options as python -m minicomp.bench
    b.set_defaults(fn=cmd_bench)

    x = sub.add_parser("explore", add_help=False, help="watch a model go through the passes, in the browser "
                                                       "(minicomp explore --help)")
    x.add_argument("rest", nargs=argparse.REMAINDER)
    x.set_defaults(fn=lambda a: cmd_explore(a.rest))
    return p


def cmd_explore(argv: list[str]) -> int:
    """``minicomp explore ...``: the pass explorer (:mod:`minicomp.explore.cli`) parses its own arguments."""
    from minicomp.explore.cli import main as explore_main
    return explore_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["explore"]:  # everything after it is the explorer's (argparse would take its --help)
        return cmd_explore(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:  # a model's own error is one line; torch's fake-tensor log repeats it with a traceback
        import logging
        logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("minicomp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from minicomp.errors import MinicompError
        user = isinstance(exc, (UserError, MinicompError))
        where = None if user else _raised_by_user_file(exc, getattr(args, "file", None))
        if where is not None:  # the user's model raised it (a shape mismatch in forward, ...)
            if args.verbose:
                traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"minicomp: error: {where}: {type(exc).__name__}: {first}", file=sys.stderr)
            return EXIT_USER_ERROR
        if args.verbose or not user and not _is_ir_error(exc):
            traceback.print_exc()
        if user or _is_ir_error(exc):
            print(f"minicomp: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"minicomp: internal error: {type(exc).__name__}: {exc} (please report; --verbose for details)",
              file=sys.stderr)
        return 1


def _raised_by_user_file(exc: Exception, path: str | None) -> str | None:
    """``path:LINE`` when ``exc`` was raised by the user's model file ``path`` (directly or by the
    torch call it made there), else None: raised inside minicomp, it is minicomp's error."""
    if not path or not path.endswith(".py"):
        return None
    import torch

    from minicomp.frontend.capture import SKIP_DIRS
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((os.path.abspath(tb.tb_frame.f_code.co_filename), tb.tb_lineno))
        tb = tb.tb_next
    frames.reverse()  # innermost first
    if not frames or frames[0][0].startswith(SKIP_DIRS) and not frames[0][0].startswith(torch_dir):
        return None
    for filename, line in frames:
        if not filename.startswith(SKIP_DIRS) and not filename.startswith("<"):
            return f"{path}:{line}" if filename == os.path.abspath(path) else None
    return None


def _is_ir_error(exc: Exception) -> bool:
    from minicomp.ir.ops import IRError
    names = {type(exc).__name__}
    return isinstance(exc, IRError) or bool(names & {"ParseError", "VerifyError"})


if __name__ == "__main__":
    sys.exit(main())
