"""What a user sees when something goes wrong, and compiles from several threads (issue 14,
points 12, 13 and 17): one clear minicomp error naming the user's line, never torch's tracer
internals or minicomp's own files."""
from __future__ import annotations

import threading

import pytest
import torch

import minicomp
from minicomp.errors import DataDependentError, UnsupportedOpError

THIS_FILE = "test_errors.py"


# -- 12: concurrent compiles -------------------------------------------------------------------
def _run_threads(work, n: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_eight_threads_compile_different_models_at_once():
    def work(i: int) -> None:
        torch.manual_seed(i)
        m = torch.nn.Sequential(torch.nn.Linear(4 + i, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
        x = torch.randn(2, 4 + i)
        cm = minicomp.compile(m, (x,), target="cpu", cache=False)
        torch.testing.assert_close(cm(x), m(x))
    errors = _run_threads(work, 8)
    assert not errors, [repr(e)[:200] for e in errors]


def test_compiled_models_called_from_many_threads():
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).eval()
    cm = minicomp.compile(m, (torch.randn(4, 16),), target="cpu", cache=False)
    xs = [torch.randn(4, 16) for _ in range(8)]
    want = [m(x) for x in xs]

    def work(i: int) -> None:
        for _ in range(20):
            torch.testing.assert_close(cm(xs[i]), want[i])
    errors = _run_threads(work, 8)
    assert not errors, [repr(e)[:200] for e in errors]


# -- 13: data-dependent Python -------------------------------------------------------------------
def branch_on_value(x):
    if x.max() > 0:  # the line the error names
        return x * 2
    return x - 1


def values_to_python(x):
    return x * len([v for v in x.tolist() if v > 0])  # the line the error names


def value_as_size(x):
    n = int(x.sum().abs().round()) + 1  # the line the error names (int() reads the value)
    return torch.ones(n) * 2


@pytest.mark.parametrize("fn, code", [(branch_on_value, "if x.max() > 0:"),
                                      (values_to_python, "x.tolist()"),
                                      (value_as_size, "n = int(x.sum()")])
def test_data_dependent_python_is_one_error_naming_the_line(fn, code):
    x = torch.randn(8)
    with pytest.raises(UnsupportedOpError) as info:
        minicomp.compile(fn, (x,), target="cpu", cache=False)
    err = info.value
    assert isinstance(err, DataDependentError)
    assert err.where is not None and err.where.startswith(THIS_FILE + ":"), str(err)
    text = str(err)
    assert code in text and "fallback=True" in text and "torch.compile" in text
    assert len(text.splitlines()) == 1


def nonzero(x):
    return torch.nonzero(x > 0)


def masked(x):
    return x[x > 0] * 2


def unique(x):
    return torch.unique(x.round())


@pytest.mark.parametrize("fn", [branch_on_value, values_to_python, value_as_size, nonzero, masked, unique])
@pytest.mark.parametrize("target", ["cpu", "interpret"])
def test_fallback_runs_data_dependent_models_in_eager(fn, target):
    x = torch.randn(16)
    cm = minicomp.compile(fn, (x,), target=target, fallback=True, cache=False)
    assert cm.fallbacks, "the model must be reported as running in PyTorch"
    for inp in (x, -x.abs(), torch.randn(16)):
        torch.testing.assert_close(cm(inp), fn(inp))


def test_cli_reports_data_dependent_model_in_one_line(tmp_path, capsys):
    from minicomp.cli import main
    f = tmp_path / "ddmodel.py"
    f.write_text("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                 "        if x.sum() > 0:\n            return x\n        return -x\n\n\n"
                 "def model():\n    return M()\n\n\ndef example_inputs():\n    return (torch.randn(4),)\n")
    assert main(["compile", str(f)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("...")]
    assert len(err) == 1 and "ddmodel.py:6" in err[0] and "fallback=True" in err[0], err


# -- 17: locations inside nn layers --------------------------------------------------------------
class UsesLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.pool = torch.nn.AdaptiveMaxPool1d(3)  # no minicomp mapping

    def forward(self, x):
        y = self.lin(x)
        return self.pool(y)  # the line the error names


def test_unsupported_op_inside_an_nn_layer_names_the_users_line():
    with pytest.raises(UnsupportedOpError) as info:
        minicomp.compile(UsesLayer().eval(), (torch.randn(2, 8),), target="cpu", cache=False)
    assert info.value.where == f"{THIS_FILE}:{_line_of('return self.pool(y)')}", str(info.value)


def test_nn_sequential_error_never_names_minicomp_files():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.AdaptiveMaxPool1d(3)).eval()
    with pytest.raises(UnsupportedOpError) as info:
        minicomp.compile(model, (torch.randn(2, 8),), target="cpu", cache=False)  # the line the error names
    err = info.value
    for own in ("driver.py", "capture.py", "importer.py", "frontend", "calls.py"):
        assert own not in str(err), str(err)
    assert err.where == f"{THIS_FILE}:{_line_of('minicomp.compile(model, (torch.randn(2, 8),)')}", str(err)


def test_user_frame_skips_torch_and_minicomp_frames():
    import os

    import minicomp.driver
    from minicomp.frontend.importer import user_frame
    torch_file = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "module.py")
    trace = (f'File "/home/me/model.py", line 12, in forward\n    return self.block(x)\n'
             f'File "{torch_file}", line 1775, in _call_impl\n    return forward_call(*args)\n'
             f'File "{minicomp.driver.__file__}", line 331, in _build_entry\n    traced = trace(...)\n')
    assert user_frame(trace) == ("model.py:12", "return self.block(x)")
    assert user_frame(f'File "{minicomp.driver.__file__}", line 331, in f\n    x\n') == (None, "")


def _line_of(text: str) -> int:
    """The line of this file holding ``text`` (so that the tests do not hard-code line numbers)."""
    import inspect
    lines = inspect.getsource(inspect.getmodule(_line_of)).splitlines()
    return next(i + 1 for i, line in enumerate(lines) if text in line and "_line_of" not in line)
