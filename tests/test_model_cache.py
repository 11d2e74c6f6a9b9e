"""The compiled-program cache: Program JSON round trips, graph keys, stored entries, and the
invariant that a cached program is only ever what a fresh compile would produce now."""
from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicomp
from minicomp import cache
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Buffer, Const, LoopKernel, Op, Store, Var
from minicomp.ir.program import Call, Program, Slot
from minicomp.ir.kernel_io import program_from_json, program_to_json
from minicomp.ir.lowering import lower_graph
from minicomp.ir.types import TensorType
from minicomp import program_cache
from minicomp.frontend import trace_with_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("mlp", "lenet", "transformer_block")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"_mc_example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lowered(name: str):
    from minicomp.frontend import trace
    from minicomp.passes.manager import PassContext, PassManager, default_pipeline
    ex = _example(name)
    m, x = ex.model(), ex.example_inputs()
    graph = PassManager(default_pipeline("cpu"), verify=False).run(trace(m, x), PassContext())
    return m, x, graph, lower_graph(graph)


@pytest.fixture(scope="module")
def lowered():
    return {name: _lowered(name) for name in EXAMPLES}


def assert_same_program(a: Program, b: Program) -> None:
    fields_a = (a.kernels, a.slots, a.calls, a.arena_bytes, a.num_inputs, a.num_outputs, a.aliases)
    fields_b = (b.kernels, b.slots, b.calls, b.arena_bytes, b.num_inputs, b.num_outputs, b.aliases)
    assert repr(fields_a) == repr(fields_b)
    if "nan" not in repr(fields_a):  # NaN != NaN under ==; the JSON text below compares its bits
        assert fields_a == fields_b
    assert program_to_json(a)[0] == program_to_json(b)[0]
    assert len(a.constants) == len(b.constants)
    for x, y in zip(a.constants, b.constants):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array(x, order="C").tobytes() == np.array(y, order="C").tobytes()


def round_trip(p: Program) -> Program:
    text, consts = program_to_json(p)
    q = program_from_json(text, consts)
    assert program_to_json(q)[0] == text  # the text is canonical
    return q


# -- kernel_io ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_programs_round_trip(lowered, name):
    p = lowered[name][3]
    assert p.constants, "the examples have weights"
    assert_same_program(round_trip(p), p)


@settings(max_examples=30)
@given(st.data())
def test_random_programs_round_trip(data):
    from minicomp.testing import graphs
    case = data.draw(graphs(max_nodes=6, dtypes=(DType.f32, DType.f16, DType.bf16, DType.i32, DType.i64,
                                                  DType.bool), special_values=True))
    p = lower_graph(case.graph)
    assert_same_program(round_trip(p), p)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_special_floats_and_shared_subexpressions_round_trip():
    nan_payload = struct.unpack("<d", bytes.fromhex("0100000000f8ffff"))[0]  # a negative NaN with payload
    consts = [Const(v, DType.f64) for v in (-0.0, math.inf, -math.inf, nan_payload, 1e-310, 0.1)]
    shared = Op("mul", (Var(0), Var(0)), DType.i64)
    value = consts[0]
    for c in consts[1:]:
        value = Op("add", (value, c), DType.f64)
    t = TensorType(DType.f64, (4,))
    k = LoopKernel("k", "pointwise", (), (Buffer("out", t),), (4,), (),
                   (Store(0, Op("add", (shared, shared), DType.i64), value),))
    p = Program((k,), (Slot("output", 0, t),), (Call(0, (0,)),), 0, 0, 1,
                constants=(np.array(np.float32(-0.0)), np.zeros((0, 3), np.int64)))
    text, arrays = program_to_json(p)
    assert text.count('"mul"') == 1  # a shared subexpression is written once
    q = program_from_json(text, arrays)
    idx = q.kernels[0].stages[0].index
    assert idx.args[0] is idx.args[1]  # and shared again after loading
    got = []
    v = q.kernels[0].stages[0].value
    while isinstance(v, Op):
        got.append(v.args[1].value)
        v = v.args[0]
    got.append(v.value)
    assert [_bits(x) for x in reversed(got)] == [_bits(c.value) for c in consts]
    assert q.constants[0].shape == () and q.constants[1].shape == (0, 3)
    assert_same_program(q, p)


def test_bad_documents_are_rejected(lowered):
    text, consts = program_to_json(lowered["mlp"][3])
    with pytest.raises(ValueError, match="constant"):
        program_from_json(text, consts[:-1])
    with pytest.raises(ValueError, match="constant 0"):
        program_from_json(text, [consts[0].astype(np.float64)] + consts[1:])
    with pytest.raises(ValueError):
        program_from_json("{not json", consts)
    with pytest.raises(ValueError, match="not a minicomp.program"):
        program_from_json('{"format": "other"}', [])
    with pytest.raises(ValueError, match="record"):
        program_from_json(text.replace('"LoopKernel"', '"Evil"').replace('"MatmulKernel"', '"Evil"'), consts)


# -- a cached program is what a fresh compile gives now (issue 14, point 2) ------------------------
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "mc-cache"
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(d))
    return d


def fresh(model, x, **options):
    """A compile whose program cannot come from the cache."""
    return minicomp.compile(model, (x,), cache=False, **options)(x)


def cached(model, x, **options):
    """A compile that may use the cache, always from this line: source locations (for ``torch.nn``
    layers, the line that called compile) are part of the traced graph, so of the key."""
    return minicomp.compile(model, (x,), **options)


class ClassScaled(torch.nn.Module):
    factor = 2.0   # a class attribute: forward reads it at trace time

    def forward(self, x):
        return x * self.factor


def test_class_attribute_change_is_not_served_stale(cache_dir, monkeypatch):
    x = torch.randn(4, 8)
    m = ClassScaled()
    torch.testing.assert_close(cached(m, x)(x), x * 2)
    monkeypatch.setattr(ClassScaled, "factor", 3.0)
    got = cached(m, x)(x)
    torch.testing.assert_close(got, fresh(m, x))
    torch.testing.assert_close(got, x * 3)


class UsesHelper(torch.nn.Module):
    def __init__(self, helpers):
        super().__init__()
        self.helpers = helpers  # another module; forward calls a function that reads its global

    def forward(self, x):
        return self.helpers.scaled(x)


def test_other_modules_global_change_is_not_served_stale(cache_dir, tmp_path, monkeypatch):
    path = tmp_path / "mc_helpers_mod.py"
    path.write_text("SCALE = 2.0\n\n\ndef scaled(x):\n    return x * SCALE\n")
    spec = importlib.util.spec_from_file_location("mc_helpers_mod", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    monkeypatch.setitem(sys.modules, "mc_helpers_mod", helpers)
    x = torch.randn(4, 8)
    m = UsesHelper(helpers)
    torch.testing.assert_close(cached(m, x)(x), x * 2)
    helpers.SCALE = -1.5
    got = cached(m, x)(x)
    torch.testing.assert_close(got, fresh(m, x))
    torch.testing.assert_close(got, x * -1.5)


def add_ones(x):
    return x + torch.ones(8)  # torch.ones takes the default dtype


def test_default_dtype_change_is_not_served_stale(cache_dir):
    x = torch.randn(4, 8)
    torch.testing.assert_close(cached(add_ones, x)(x), x + 1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = cached(add_ones, x)(x)
        want = add_ones(x)
        assert want.dtype == torch.float64
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, fresh(add_ones, x))
    finally:
        torch.set_default_dtype(old)


def test_unchanged_model_is_a_hit_that_skips_passes_lowering_and_llvm(cache_dir, monkeypatch):
    from minicomp import driver
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(3, 8)
    first = cached(m, x)
    assert list(cache_dir.glob("*.model"))

    def boom(*args, **kwargs):
        raise AssertionError("a hit must not run this")
    monkeypatch.setattr(driver, "_run_passes", boom)
    monkeypatch.setattr(driver, "lower_graph", boom)
    monkeypatch.setattr("minicomp.codegen.llvm.module._object_code", boom)
    second = cached(m, x)
    with torch.no_grad():
        torch.testing.assert_close(second(x), m(x))
    assert second.graph is not None and str(second.graph) == str(first.graph)
    assert [k.name for k in second.kernels] == [k.name for k in first.kernels]


def test_weights_of_the_traced_graph_are_in_the_key(cache_dir):
    """Whatever the traced graph holds as constants (weights, or captured tensors) is hashed."""
    x = torch.randn(3, 8)
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = torch.nn.Linear(8, 4).eval()
        with torch.no_grad():
            torch.testing.assert_close(cached(m, x)(x), m(x))
    w = torch.randn(8)
    for scale in (1.0, 2.0):
        captured = w * scale
        torch.testing.assert_close(cached(lambda t: t + captured, x)(x), x + captured)


# -- graph keys ------------------------------------------------------------------------------------
def _key(fn, x, target="cpu", options=None, passes=None, fallback=False):
    traced = trace_with_spec(fn, (x,))
    return program_cache.graph_key(traced.graph, traced.out_spec, target, options or {}, passes, fallback)


def test_graph_key_is_deterministic_and_covers_every_input():
    x = torch.randn(3, 8)
    key = _key(torch.tanh, x)
    assert key is not None and len(key) == 64 and key == _key(torch.tanh, torch.randn(3, 8))
    others = [_key(torch.sigmoid, x), _key(torch.tanh, torch.randn(4, 8)), _key(torch.tanh, x.double()),
              _key(torch.tanh, x, target="interpret"), _key(torch.tanh, x, options={"threads": 1}),
              _key(torch.tanh, x, options={"fuse": False}), _key(torch.tanh, x, passes=["dce"]),
              _key(torch.tanh, x, passes=[]), _key(torch.tanh, x, fallback=True),
              _key(lambda t: (torch.tanh(t),), x), _key(lambda t: {"a": torch.tanh(t)}, x)]
    assert None not in others and len({key, *others}) == len(others) + 1
    assert _key(torch.tanh, x, options={"cache": False}) == key  # the switch itself is not a property


def test_graph_key_hashes_constant_bytes_even_when_the_printer_elides_them():
    w = torch.randn(64)
    w2 = w.clone()
    w2[37] = w2[37].item() + 1e-6
    x = torch.randn(64)
    assert _key(lambda t: t * w, x) == _key(lambda t: t * w.clone(), x)
    assert _key(lambda t: t * w, x) != _key(lambda t: t * w2, x)


def test_what_cannot_be_keyed_safely_gets_no_key():
    from minicomp.passes.manager import get_pass
    x = torch.randn(3, 8)

    class MyPass:
        name = "mine"

        def run(self, graph, ctx):
            return graph
    assert _key(torch.tanh, x, passes=[MyPass()]) is None
    assert _key(torch.tanh, x, passes=["no-such-pass"]) is None
    assert _key(torch.tanh, x, options={"kn_weight": lambda *a: True}) is None
    assert _key(torch.tanh, x, passes=[get_pass("dce"), "cse"]) is not None  # minicomp's own passes
    m = torch.nn.Sequential(torch.nn.Linear(8, 8))
    traced = trace_with_spec(lambda t: torch.sort(t).values, (x,), fallback=True)  # an external node
    assert any(n.op == "external" for n in traced.graph.nodes)
    assert program_cache.graph_key(traced.graph, traced.out_spec, "cpu", {}, None, True) is None
    assert _key(m, x) is not None


def test_user_registered_pass_name_gets_no_key(monkeypatch):
    from minicomp.passes import manager
    manager.get_pass("dce")  # the built-in passes are registered
    monkeypatch.setitem(manager._PASSES, "mc-test-user-pass", lambda: manager.get_pass("dce"))
    assert _key(torch.tanh, torch.randn(3), passes=["mc-test-user-pass"]) is None


def test_minicomp_fingerprint_hashes_content_not_times(tmp_path, monkeypatch):
    """An edit that keeps the file's size and modification time still changes the fingerprint."""
    import os
    pkg = tmp_path / "mc_fp_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(program_cache, "_PACKAGES", ("mc_fp_pkg",))
    first = program_cache.minicomp_fingerprint()
    assert program_cache.minicomp_fingerprint() == first
    a = pkg / "sub" / "a.py"
    st = a.stat()
    a.write_text("x = 2\n")                                   # same size, and the same times restored
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = program_cache.minicomp_fingerprint()
    assert second != first
    (pkg / "sub" / "b.py").write_text("")                     # a new file
    assert program_cache.minicomp_fingerprint() != second


# -- entries -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLES)
def test_model_entry_round_trip_runs(lowered, cache_dir, name):
    from minicomp.ir.printer import print_graph
    from minicomp.runtime import NativeProgram
    m, x, graph, program = lowered[name]
    key = cache.cache_key("test entry", name)
    assert program_cache.store_model(key, program, "mc_test", graph, notes=["a note"])
    hit = program_cache.lookup_model(key, graph)
    assert hit is not None and (hit.name, hit.notes) == ("mc_test", ["a note"])
    assert_same_program(hit.program, program)
    module = program_cache.compile_cpu(hit.program, hit.name, {})
    native = NativeProgram(hit.program, module.entry_address, keepalive=module)
    with torch.no_grad():
        torch.testing.assert_close(native(list(x))[0], m(*x))
    assert print_graph(hit.load_graph()) == print_graph(graph)


def test_corrupt_or_foreign_format_entries_miss_and_go(lowered, cache_dir):
    m, x, graph, program = lowered["mlp"]
    key = cache.cache_key("test entry")
    assert program_cache.store_model(key, program, "mc_test", graph)
    path = cache_dir / f"{key}.model"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert program_cache.lookup_model(key, graph) is None and not path.exists()

    assert program_cache.store_model(key, program, "mc_test", graph)
    (cache_dir / f"{key}.graph").unlink()
    hit = program_cache.lookup_model(key, graph)
    assert hit is not None and hit.load_graph() is None

    payload = cache.load(key, ".model")  # a verified entry of another format (a future version)
    n = int.from_bytes(payload[:8], "little")
    head = payload[8:8 + n].replace(program_cache.MODEL_FORMAT.encode(), b"minicomp.model/0")
    cache.store(key, len(head).to_bytes(8, "little") + head + payload[8 + n:], ".model")
    assert program_cache.lookup_model(key, graph) is None and not path.exists()


def test_entry_that_does_not_fit_the_call_is_never_run(cache_dir):
    """Point 9: a program stored under a key is checked against the traced graph's input and
    output types; one that does not fit is dropped and the model compiled afresh."""
    x = torch.randn(4, 8)

    def double(t):
        return t * 2
    traced = trace_with_spec(double, (x,))
    key = program_cache.graph_key(traced.graph, traced.out_spec, "cpu", minicomp.compile(double, (x,))._options,
                                  None, False)
    assert (cache_dir / f"{key}.model").exists()
    for other in (lambda t: t.sum(), lambda t: (t > 0), lambda t: t[:3] * 2):
        wrong = lower_graph(trace_with_spec(other, (x,)).graph)
        assert not program_cache.fits(wrong, traced.graph)
        assert program_cache.store_model(key, wrong, "mc_double")
        torch.testing.assert_close(minicomp.compile(double, (x,))(x), x * 2)
    assert program_cache.fits(lower_graph(traced.graph), traced.graph)
