"""The compiled-model cache: Program JSON round trips, model keys, stored model entries."""
from __future__ import annotations

import importlib.util
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicomp import cache
from minicomp.ir.dtypes import DType
from minicomp.ir.kernel import Buffer, Call, Const, LoopKernel, Op, Program, Slot, Store, Var
from minicomp.ir.kernel_io import program_from_json, program_to_json
from minicomp.ir.lowering import lower_graph
from minicomp.ir.types import TensorType
from minicomp.model_key import model_key

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


# -- model keys --------------------------------------------------------------------------------
NET_SOURCE = '''
import torch
from torch import nn

SCALE = {scale}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) * SCALE


def fn(x):
    return torch.tanh(x) + SCALE
'''


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def netmod(tmp_path):
    path = tmp_path / "mc_key_net.py"
    path.write_text(NET_SOURCE.format(scale="2.0"))
    return _load_file(path, "mc_key_net_a")


def test_key_is_deterministic_and_sensitive_to_weights_and_inputs(netmod):
    m, x = netmod.Net().eval(), torch.randn(3, 8)
    key = model_key(m, (x,), "cpu", {})
    assert key is not None and len(key) == 64
    assert model_key(netmod.Net().eval(), (torch.randn(3, 8),), "cpu", {}) == key  # same weights, other values
    m2 = netmod.Net().eval()
    with torch.no_grad():
        m2.fc.weight[1, 2] += 1e-6
    assert model_key(m2, (x,), "cpu", {}) != key
    assert model_key(m, (torch.randn(4, 8),), "cpu", {}) != key
    assert model_key(m, (x.double(),), "cpu", {}) != key
    assert model_key(m, (x.t().contiguous().t(),), "cpu", {}) != key  # strides
    assert model_key(m, (x,), "interpret", {}) != key
    assert model_key(m, (x,), "cpu", {"threads": 1}) != key
    assert model_key(netmod.Net().train(), (x,), "cpu", {}) != key
    m3 = netmod.Net().eval()
    m3.register_buffer("extra", torch.zeros(2), persistent=False)
    assert model_key(m3, (x,), "cpu", {}) != key
    m4 = netmod.Net().eval()
    m4.factor = 3  # a plain attribute forward might read
    assert model_key(m4, (x,), "cpu", {}) != key


def test_fx_graph_modules_are_keyed_by_code_and_weights(netmod):
    x = torch.randn(3, 8)
    m = netmod.Net().eval()
    gm = torch.fx.symbolic_trace(m)
    key = model_key(gm, (x,), "cpu", {})
    assert key is not None and key == model_key(torch.fx.symbolic_trace(netmod.Net().eval()), (x,), "cpu", {})
    other = torch.fx.symbolic_trace(m)
    for node in other.graph.nodes:
        if node.target is torch.relu:
            node.target = torch.sigmoid
    other.recompile()
    assert model_key(other, (x,), "cpu", {}) != key


def test_key_changes_with_class_source(tmp_path, netmod):
    x = torch.randn(3, 8)
    key = model_key(netmod.Net().eval(), (x,), "cpu", {})
    path = tmp_path / "mc_key_net.py"
    fn_key = model_key(netmod.fn, (x,), "cpu", {})
    path.write_text(NET_SOURCE.format(scale="2.0").replace("torch.relu", "torch.sigmoid"))
    edited = _load_file(path, "mc_key_net_b")
    assert model_key(edited.Net().eval(), (x,), "cpu", {}) != key
    # fn's code is unchanged, but its source file changed: conservatively a new key.
    assert model_key(edited.fn, (x,), "cpu", {}) != fn_key
    path.write_text(NET_SOURCE.format(scale="2.0"))
    assert model_key(_load_file(path, "mc_key_net_a").Net().eval(), (x,), "cpu", {}) == key


def test_function_keys_cover_globals_and_closures(netmod):
    x = torch.randn(5)
    key = model_key(netmod.fn, (x,), "cpu", {})
    assert key is not None
    netmod.SCALE = 3.0  # a global the function reads
    assert model_key(netmod.fn, (x,), "cpu", {}) != key

    def make(w):
        return lambda t: t * w
    w = torch.ones(5)
    k1 = model_key(make(w), (x,), "cpu", {})
    assert None is not model_key(torch.relu, (x,), "cpu", {}) != model_key(torch.tanh, (x,), "cpu", {})
    assert k1 == model_key(make(w.clone()), (x,), "cpu", {})
    assert k1 != model_key(make(w * 2), (x,), "cpu", {})


def test_unkeyable_models_get_no_key(netmod):
    import functools
    x = torch.randn(3, 8)
    assert model_key(functools.partial(netmod.fn), (x,), "cpu", {}) is None
    m = netmod.Net().eval()
    m.register_forward_hook(lambda *a: None)
    assert model_key(m, (x,), "cpu", {}) is None
    m2 = netmod.Net().eval()
    m2.helper = object()
    assert model_key(m2, (x,), "cpu", {}) is None
    assert model_key(netmod.Net().eval(), (x.numpy(),), "cpu", {}) is None
    assert model_key(netmod.fn, (x,), "cpu", {"passes": [object()]}) is None


def test_key_is_the_same_in_a_fresh_process(tmp_path, netmod):
    x = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    here = [model_key(netmod.Net().eval(), (x,), "cpu", {"threads": 2}), model_key(netmod.fn, (x,), "cpu", {})]
    script = textwrap.dedent(f"""
        import importlib.util, torch
        from minicomp.model_key import model_key
        spec = importlib.util.spec_from_file_location("mc_key_net_a", {str(tmp_path / 'mc_key_net.py')!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        x = torch.arange(24, dtype=torch.float32).reshape(3, 8)
        print(model_key(mod.Net().eval(), (x,), "cpu", {{"threads": 2}}))
        print(model_key(mod.fn, (x,), "cpu", {{}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == here


# -- model entries -----------------------------------------------------------------------------
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "mc-cache"
    monkeypatch.setenv("MINICOMP_CACHE_DIR", str(d))
    return d


def _store(lowered, name="mlp"):
    import torch.utils._pytree as pytree

    from minicomp.codegen.llvm import compile_program
    m, x, graph, program = lowered[name]
    module = compile_program(program, name="mc_test")
    key = model_key(m, x, "cpu", {})
    obj_key = cache.cache_key("test object", name)
    spec = pytree.tree_structure((torch.ones(1), {"a": torch.ones(1)}))
    assert cache.store_model(key, program=program, module=module, obj_key=obj_key, threads=2, opt_level=3,
                             out_spec=spec, graph=graph, notes=["a note"], extra={"k": [1]})
    return key, obj_key, module


@pytest.mark.parametrize("name", EXAMPLES)
def test_model_entry_round_trip_runs(lowered, cache_dir, name):
    from minicomp.ir.printer import print_graph
    from minicomp.runtime import NativeProgram
    m, x, graph, program = lowered[name]
    key, obj_key, module = _store(lowered, name)
    assert cache.load(obj_key) == module.object_code
    hit = cache.lookup_model(key)
    assert hit is not None
    assert_same_program(hit.program, program)
    assert hit.object_code == module.object_code and hit.symbols == module.symbols
    assert (hit.name, hit.threads, hit.opt_level, hit.notes, hit.extra) == ("mc_test", 2, 3, ["a note"], {"k": [1]})
    loaded = hit.load_module()
    assert loaded.source("llvm-unopt") == module.source("llvm-unopt")
    native = NativeProgram(hit.program, loaded.entry_address, keepalive=loaded)
    with torch.no_grad():
        want = m(*x)
    a, b = torch.ones(1), torch.ones(1)
    assert hit.unflatten()([a, b]) == (a, {"a": b})
    torch.testing.assert_close(native(list(x))[0], want)
    assert print_graph(hit.load_graph()) == print_graph(graph)


def test_corrupt_or_incomplete_entries_miss(lowered, cache_dir):
    key, obj_key, _ = _store(lowered)
    model_path = cache_dir / f"{key}.model"
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    assert cache.lookup_model(key) is None
    assert not model_path.exists()

    key, obj_key, _ = _store(lowered)
    (cache_dir / f"{obj_key}.obj").write_bytes(b"garbage")
    assert cache.lookup_model(key) is None  # the object code must verify too

    key, obj_key, _ = _store(lowered)
    (cache_dir / f"{key}.graph").unlink()
    hit = cache.lookup_model(key)
    assert hit is not None and hit.load_graph() is None

    # A verified entry of another format (e.g. a future version) is a miss, and is removed.
    payload = cache.load(key, ".model")
    n = int.from_bytes(payload[:8], "little")
    head = payload[8:8 + n].replace(cache.MODEL_FORMAT.encode(), b"minicomp.model/0")
    cache.store(key, len(head).to_bytes(8, "little") + head + payload[8 + n:], ".model")
    assert cache.lookup_model(key) is None
    assert not model_path.exists()


def test_unserializable_output_structure_is_not_stored(lowered, cache_dir):
    import collections

    import torch.utils._pytree as pytree

    from minicomp.codegen.llvm import compile_program
    m, x, graph, program = lowered["mlp"]
    pair = collections.namedtuple("pair", "a b")
    spec = pytree.tree_structure(pair(torch.ones(1), torch.ones(1)))
    key = model_key(m, x, "cpu", {})
    assert not cache.store_model(key, program=program, module=compile_program(program), obj_key=key,
                                 threads=2, opt_level=3, out_spec=spec)
    assert cache.lookup_model(key) is None


def test_minicomp_fingerprint_follows_source_edits(tmp_path, monkeypatch):
    """The fingerprint (path, size, modification time of every source file) changes on any edit."""
    import os

    from minicomp import model_key as mk
    pkg = tmp_path / "mc_fp_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(mk, "_PACKAGES", ("mc_fp_pkg",))
    first = mk.minicomp_fingerprint()
    assert mk.minicomp_fingerprint() == first
    a = pkg / "sub" / "a.py"
    st = a.stat()
    a.write_text("x = 2\n")                                   # same size: only the mtime differs
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    second = mk.minicomp_fingerprint()
    assert second != first
    (pkg / "sub" / "b.py").write_text("")                     # a new file
    assert mk.minicomp_fingerprint() != second
