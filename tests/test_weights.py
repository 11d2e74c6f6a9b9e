"""Weights are read at call time unless frozen on request (issue 14, point 1; docs/reliability.md).

Every way of changing a weight after compile (in place, through ``.data``, assigning
``.data``, a new ``nn.Parameter``, even one that reuses a freed object's ``id()``) is seen
by the next call of ``minicomp.compile``'d models and of ``torch.compile(backend="minicomp")``.
``freeze=True`` bakes weights in as constants and recompiles (or raises) when they change,
except through ``.data``, which bypasses version counters (the documented difference).
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

import minicomp
from minicomp.errors import GuardError


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3).eval()


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fill(m):
    m.weight.fill_(1.0)


def _data_mul(m):
    m.weight.data.mul_(2.0)


def _data_assign(m):
    m.weight.data = torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(7))


def _new_parameter(m):
    m.weight = nn.Parameter(torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(8)))


UPDATES = [_fill, _data_mul, _data_assign, _new_parameter]


@pytest.mark.parametrize("update", UPDATES, ids=lambda f: f.__name__)
def test_compiled_model_sees_weight_updates(update):
    lin = _linear()
    x2, x3 = _x(2, 4), _x(3, 4, seed=2)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x2,), cache=False)
        update(lin)
        torch.testing.assert_close(cm(x2), lin(x2))  # compiled before the update
        torch.testing.assert_close(cm(x3), lin(x3))  # compiled after it


@pytest.mark.parametrize("update", UPDATES, ids=lambda f: f.__name__)
def test_torch_compile_sees_weight_updates(update):
    torch._dynamo.reset()
    lin = _linear()
    x = _x(2, 4)
    compiled = torch.compile(lin, backend="minicomp")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), lin(x))
        update(lin)
        torch.testing.assert_close(compiled(x), lin(x))


def test_torch_compile_new_parameter_reusing_a_freed_id():
    # The old backend keyed frozen parameters on (id, version): a new Parameter at the same
    # address with the same version got the old weights.
    torch._dynamo.reset()
    lin = _linear()
    x = _x(1, 4)
    compiled = torch.compile(lin, backend="minicomp")
    with torch.no_grad():
        compiled(x)
        old_id, old_version = id(lin.weight), lin.weight._version
        for seed in range(1000):
            p = nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(seed)))
            while p._version < old_version:
                p.mul_(1.0)
            lin.weight = p
            del p
            if id(lin.weight) == old_id:
                break
        torch.testing.assert_close(compiled(x), lin(x))


def test_weights_are_named_graph_inputs_after_the_user_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        cm = minicomp.compile(model, (_x(2, 4),), cache=False)
    assert [v.name for v in cm.graph.inputs] == ["input", "v0_weight", "v0_bias", "v2_weight", "v2_bias"]
    assert not [n for n in cm.graph.nodes if n.op == "constant" and n.result.type.numel > 1]


def test_buffers_are_read_at_call_time():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4).eval()
    x = _x(3, 4)
    with torch.no_grad():
        cm = minicomp.compile(bn, (x,), cache=False)
        bn.running_mean.add_(1.5)
        bn.running_var.mul_(3.0)
        torch.testing.assert_close(cm(x), bn(x))


def test_a_new_weight_shape_compiles_a_new_program():
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False)
        lin.weight = nn.Parameter(torch.randn(5, 4))
        lin.bias = nn.Parameter(torch.randn(5))
        torch.testing.assert_close(cm(x), lin(x))
    assert cm(x).shape == (2, 5) and len(cm._entries) == 2


def test_a_changed_weight_shape_is_a_guard_error_without_recompilation():
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False, recompile=False)
        lin.weight.data = torch.randn(3, 5)
        with pytest.raises(GuardError, match=r"weight 'weight' is float32\[3, 5\], compiled for float32\[3, 4\]"):
            cm(x)


def test_a_removed_weight_is_a_clear_error():
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False)
        lin.bias = None
        with pytest.raises(GuardError, match="'bias' is now NoneType"):
            cm(x)


def test_a_replaced_submodule_is_read_through_its_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(model, (x,), cache=False)
        model[0] = nn.Linear(4, 3)
        torch.testing.assert_close(cm(x), model(x))


def test_function_closures_are_read_at_call_time_and_fresh_constants_stay_constant():
    w = torch.randn(4, 4)

    def f(x):
        return x @ w + torch.tensor([1.0, 2.0, 3.0, 4.0])

    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(f, (x,), cache=False)
        assert len(cm.graph.inputs) == 2  # x and w; the fresh tensor is a constant
        w.mul_(-2.0)
        torch.testing.assert_close(cm(x), f(x))


def test_graph_module_parameters_are_read_at_call_time():
    lin = _linear()
    gm = torch.fx.symbolic_trace(nn.Sequential(lin, nn.Tanh()))
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(gm, (x,), cache=False)
        lin.weight.mul_(-1.0)
        torch.testing.assert_close(cm(x), gm(x))


@pytest.mark.parametrize("freeze", [False, True])
def test_the_program_cache_never_serves_another_models_weights(tmp_path, monkeypatch, freeze):
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(tmp_path / "cache"))
    x = _x(2, 4)
    with torch.no_grad():
        for seed in (0, 1):  # same structure, other weights: the second compile may hit the cache
            lin = _linear(seed)
            torch.testing.assert_close(minicomp.compile(lin, (x,), freeze=freeze)(x), lin(x))


# -- freeze=True ---------------------------------------------------------------------------
def test_freeze_bakes_weights_in_as_constants():
    lin = _linear()
    with torch.no_grad():
        cm = minicomp.compile(lin, (_x(2, 4),), cache=False, freeze=True)
    assert [v.name for v in cm.graph.inputs] == ["input"]


@pytest.mark.parametrize("update", [_fill, _data_assign, _new_parameter], ids=lambda f: f.__name__)
def test_freeze_recompiles_when_a_weight_changes(update):
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True)
        update(lin)
        torch.testing.assert_close(cm(x), lin(x))
        cm(x)
    assert cm._builds == 2


def test_freeze_without_recompilation_raises_on_a_changed_weight():
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True, recompile=False)
        lin.weight.add_(1.0)
        with pytest.raises(GuardError, match=r"'weight' was modified in place .*recompile=False"):
            cm(x)


def test_freeze_respects_the_recompile_limit():
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True, recompile_limit=2)
        lin.weight.add_(1.0)
        torch.testing.assert_close(cm(x), lin(x))
        lin.weight.add_(1.0)
        with pytest.raises(GuardError, match="recompile_limit"):
            cm(x)


def test_freeze_cannot_see_updates_through_data():
    # Documented (docs/reliability.md): ``.data`` has its own version counter, so an in-place
    # update through it is invisible to the frozen-weight guards, as with Inductor's freezing.
    lin = _linear()
    x = _x(2, 4)
    with torch.no_grad():
        cm = minicomp.compile(lin, (x,), cache=False, freeze=True)
        before = lin(x)
        lin.weight.data.mul_(2.0)
        torch.testing.assert_close(cm(x), before)
        assert not torch.allclose(lin(x), before)
