"""The ``minicomp`` command line (also ``python -m minicomp``).

Commands: ``demo``, ``compile``, ``opt``, ``explain``, ``bench``. A user error
(missing file, no ``model()``, unsupported op) prints one line and exits with
status 2; ``--verbose`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from types import ModuleType

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


def _progress(msg: str) -> None:
    print(f"... {msg}", file=sys.stderr, flush=True)


# -- commands ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from minicomp.demo import run_demo
    return run_demo(targets=args.target, progress=_progress)


def cmd_compile(args: argparse.Namespace) -> int:
    import minicomp
    arch = _aot_arch(args.aot) if args.aot else None
    if arch is not None and args.target not in ("triton", "cuda"):
        raise UserError("--aot needs --target triton")
    module = load_model_file(args.file)
    m, inputs = module.model(), tuple(module.example_inputs())
    dump = Path(args.dump_dir) if args.dump_dir else None
    _progress(f"compiling {args.file} for {args.target}")
    cm = minicomp.compile(m, inputs, target=args.target, dump_dir=dump,
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
    from minicomp.ir.parser import parse
    from minicomp.passes.manager import PassManager, get_pass
    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{args.file}: no such file")
    graph = parse(path.read_text())
    names = [p for p in args.passes.split(",") if p]
    try:
        passes = [get_pass(n) for n in names]
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from exc
    pm = PassManager(passes, verify=True, print_after_all=args.print_ir_after_all)
    graph = pm.run(graph)
    print(str(graph), end="")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import minicomp
    from minicomp.ir.dot import to_dot_compare
    module = load_model_file(args.file)
    model, inputs = module.model(), tuple(module.example_inputs())
    _progress(f"compiling {args.file}")
    cm = minicomp.compile(model, inputs, target="cpu")
    print(cm.explain())
    dot = to_dot_compare(minicomp.trace(model, inputs), cm.graph, title=Path(args.file).stem)
    if args.dot:
        Path(args.dot).write_text(dot)
        print(f"wrote {args.dot}")
    if args.svg:
        exe = shutil.which("dot")
        if exe is None:
            raise UserError("--svg needs Graphviz's 'dot' program (apt-get install graphviz); use --dot instead")
        proc = subprocess.run([exe, "-Tsvg", "-o", args.svg], input=dot, text=True, capture_output=True)
        if proc.returncode != 0:
            raise UserError(f"dot failed: {proc.stderr.strip()}")
        print(f"wrote {args.svg}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from minicomp.bench import run_bench
    return run_bench(cases=args.cases, json_path=args.json, plot_path=args.plot, repeat=args.repeat,
                     progress=_progress)


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
    c.add_argument("--target", choices=["cpu", "triton", "cuda"], default="cpu")
    c.add_argument("--print-ir-after-all", action="store_true")
    c.add_argument("--dump-dir")
    c.add_argument("--aot", metavar="sm_90", help="compile every Triton kernel ahead of time for this GPU")
    c.set_defaults(fn=cmd_compile)

    o = sub.add_parser("opt", help="run passes on a text IR file, print the result (like mlir-opt)")
    o.add_argument("file")
    o.add_argument("--passes", required=True, help="comma-separated pass names, e.g. dce,cse,fuse")
    o.add_argument("--print-ir-after-all", action="store_true")
    o.set_defaults(fn=cmd_opt)

    e = sub.add_parser("explain", help="explain fusion and layout decisions; draw the graph")
    e.add_argument("file")
    e.add_argument("--svg")
    e.add_argument("--dot")
    e.set_defaults(fn=cmd_explain)

    b = sub.add_parser("bench", help="benchmark against PyTorch eager and torch.compile")
    b.add_argument("--json")
    b.add_argument("--plot", default=None, help="PNG of the ratios (default: beside --json)")
    b.add_argument("--cases", nargs="*")
    b.add_argument("--repeat", type=int, default=None, help="timed runs per case (default: adaptive)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("minicomp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from minicomp.errors import MinicompError
        user = isinstance(exc, (UserError, MinicompError))
        if args.verbose or not user and not _is_ir_error(exc):
            traceback.print_exc()
        if user or _is_ir_error(exc):
            print(f"minicomp: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"minicomp: internal error: {type(exc).__name__}: {exc} (please report; --verbose for details)",
              file=sys.stderr)
        return 1


def _is_ir_error(exc: Exception) -> bool:
    from minicomp.ir.ops import IRError
    names = {type(exc).__name__}
    return isinstance(exc, IRError) or bool(names & {"ParseError", "VerifyError"})


if __name__ == "__main__":
    sys.exit(main())
