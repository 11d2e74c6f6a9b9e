"""The measurement code of ``minicomp bench`` and ``minicomp demo``: limits, roofline, cold compiles, JSON.

No timing is asserted (the machine may be shared): only that the measurements run, are
finite and have the meaning and the fields the docs promise.
"""
from __future__ import annotations

import functools
import json
import math
import os

import numpy as np
import pytest
import torch

import minicomp
from minicomp import roofline


def test_fma_loop_runs_the_requested_rounds_of_every_accumulator():
    loop = roofline._peak_loop()
    iters = 1000
    # acc_k starts at k; each round acc = acc * 0.999 + 0.001 (float32 FMAs)
    x, y = np.float32(0.999), np.float32(0.001)
    accs = np.arange(roofline.FMA_ACCUMULATORS, dtype=np.float64)
    for _ in range(iters):
        accs = accs * float(x) + float(y)
    got = loop.run(iters)
    assert len(got) == roofline.vector_lanes()
    np.testing.assert_allclose(got, [accs.sum()] * len(got), rtol=1e-4)
    # a different round count gives a different sum: the loop count is not ignored
    assert abs(loop.run(10)[0] - got[0]) > 1.0


def test_fma_module_is_vector_fmas_into_independent_accumulators():
    text = str(roofline.fma_module(8, accumulators=4))
    assert text.count('call <8 x float> @"llvm.fma.v8f32"') == 4


def test_measured_limits_are_finite_and_positive():
    lim = roofline.measure_limits(2, seconds=0.01, copy_bytes=8 << 20)
    for key in ("fma_peak_gflops", "fma_peak_gflops_1t", "copy_gbps", "copy_gbps_1t"):
        assert math.isfinite(lim[key]) and lim[key] > 0, key
    assert lim["threads"] == 2 and lim["fma_lanes_f32"] in (4, 8, 16)


def test_roofline_reads_flops_against_the_peak_and_bytes_against_the_copy_rate():
    limits = {"fma_peak_gflops": 100.0, "copy_gbps": 20.0}
    gemm = roofline.roofline(2e9, 12e6, 0.04, limits)  # 50 GFLOP/s
    assert gemm["bound"] == "compute" and gemm["fraction"] == pytest.approx(0.5)
    assert gemm["copy_fraction"] == pytest.approx(0.3e9 / 20e9)
    chain = roofline.roofline(0, 128e6, 0.016, limits)  # 8 GB/s
    assert chain["bound"] == "memory" and chain["fraction"] == pytest.approx(0.4) and "gflops" not in chain


def test_targets_compare_minicomp_with_issue_19_goals():
    from minicomp.bench import add_roofline
    from minicomp.bench_report import format_targets
    limits = {"fma_peak_gflops": 100.0, "copy_gbps": 20.0}
    gemm = {"name": "g", "eager_ms": 30.0, "inductor_ms": 30.0, "minicomp_ms": 25.0,
            "work": {"flops": 2_000_000_000, "bytes": 12_000_000}}
    add_roofline(gemm, limits, "fma")  # 80 GFLOP/s: exactly the goal
    assert gemm["target"]["met"] and gemm["target"]["value"] == pytest.approx(0.8)
    chain = {"name": "c", "eager_ms": 20.0, "inductor_ms": 20.0, "minicomp_ms": 16.0,
             "work": {"flops": 0, "bytes": 128e6}}
    add_roofline(chain, limits, "copy")  # 8 GB/s: 40%
    assert not chain["target"]["met"]
    small = {"name": "s", "eager_ms": 0.1, "inductor_ms": 0.1, "minicomp_ms": 0.03,
             "work": {"flops": 1e6, "bytes": 2e6}, "overhead": {"overhead_us": 12.5}}
    add_roofline(small, limits, "overhead")
    assert small["target"] == {"kind": "overhead", "value": 12.5, "goal": 10.0, "met": False}
    text = format_targets([gemm, chain, small])
    assert "g: 80% of the FMA peak" in text and "c: 40% of the copy bandwidth" in text and "MISSED" in text


def test_case_work_counts_matmul_flops_and_every_tensor_once():
    from minicomp.bench_cases import build, find, work
    fn, inputs = build(find("tiny_mm"))
    assert work(fn, inputs) == (2 * 64 ** 3, 3 * 64 * 64 * 4)
    conv = torch.nn.Conv2d(2, 3, 3, bias=False)
    flops, nbytes = work(conv, (torch.randn(1, 2, 5, 5),))
    assert flops == 2 * 3 * 2 * 9 * 3 * 3 and nbytes == 4 * (50 + 27 + 54)


def test_huge_pages_toggle_switches_the_advice_off_and_back(monkeypatch):
    from minicomp.bench import huge_pages_off, uses_huge_pages
    from minicomp.codegen.llvm.runtime import hugepages
    cm = minicomp.compile(lambda x: x * 2, (torch.randn(4 << 20),), cache=False)  # a 16 MiB output
    assert uses_huge_pages(cm)
    small = minicomp.compile(lambda x: x * 2, (torch.randn(16),), cache=False)
    assert not uses_huge_pages(small)
    calls = []
    monkeypatch.setattr(hugepages, "_MADVISE", lambda start, length, advice: calls.append(length))
    monkeypatch.delenv(hugepages.ENV, raising=False)
    with huge_pages_off():
        cm(torch.randn(4 << 20))
    assert calls == []
    assert hugepages.ENV not in os.environ  # as it was before
    cm(torch.randn(4 << 20))
    assert len(calls) == 1 and calls[0] >= 6 * hugepages.HUGE_PAGE  # the whole 2 MiB pages inside 16 MiB
    monkeypatch.setenv(hugepages.ENV, "1")
    with huge_pages_off():
        assert not hugepages.enabled()
    assert os.environ[hugepages.ENV] == "1"


def test_cold_compile_runs_in_a_fresh_process():
    from minicomp.bench_cold import fresh_compile_times
    got = fresh_compile_times("tiny_add", "minicomp", settle_s=0)
    for key in ("import_s", "startup_s", "cold_s", "warm_s", "cached_s"):
        assert math.isfinite(got[key]) and got[key] > 0, key
    assert got["cache_hit"] is True  # the cached compile was served from the child's own disk cache
    assert got["threads"] >= 1
    with pytest.raises(KeyError, match="no_such_case"):
        fresh_compile_times("no_such_case", "minicomp")
    with pytest.raises(ValueError, match="compiler"):
        fresh_compile_times("tiny_add", "tvm")


def test_bench_json_records_threads_limits_options_and_roofline(tmp_path, monkeypatch, capsys):
    import minicomp.bench as bench
    # Inductor's first compile takes many seconds: eager stands in for it here (the fields are
    # what is tested); the limits are measured briefly.
    monkeypatch.setattr(bench, "compile_inductor", lambda fn: fn)
    monkeypatch.setattr(roofline, "measure_limits",
                        functools.partial(roofline.measure_limits, seconds=0.01, copy_bytes=8 << 20))
    out = tmp_path / "b.json"
    assert bench.run_bench(["tiny_add", "tiny_mm"], str(out), str(tmp_path / "b.png"), repeat=20,
                           progress=lambda m: None, cold=False) == 0
    data = json.loads(out.read_text())
    m = data["machine"]
    assert set(m["threads"]) == {"minicomp", "eager", "inductor"} and m["threads"]["eager"] == torch.get_num_threads()
    assert m["limits"]["fma_peak_gflops"] > 0 and m["limits"]["copy_gbps"] > 0
    assert data["options"]["cases"] == ["tiny_add", "tiny_mm"] and data["options"]["cold"] is False
    rows = {r["name"]: r for r in data["cases"]}
    assert rows["tiny_add"]["roofline"]["minicomp"]["bound"] == "memory"
    assert rows["tiny_mm"]["roofline"]["minicomp"]["bound"] == "compute"
    for r in rows.values():
        frac = r["roofline"]["minicomp"]["fraction"]
        assert math.isfinite(frac) and frac > 0
        assert r["threads"] >= 1 and r["compile_s"]["method"] == "in process"
        o = r["overhead"]  # tiny cases: one native program, timed kernel by kernel
        assert o["kernels_us"] > 0 and o["entry_us"] > 0 and len(o["kernels"]) >= 1
    assert 0 < rows["tiny_mm"]["roofline"]["minicomp"]["fraction"] <= 1.5  # the FMA peak is a ceiling
    printed = capsys.readouterr().out
    assert "FMA peak" in printed and "limit" in printed and "% FMA" in printed and "% copy" in printed


def test_progress_bar_is_quiet_when_stderr_is_not_a_terminal(capsys):
    from minicomp.bench import _bar
    assert _bar(3) is None  # pytest captures stderr: not a terminal
    assert capsys.readouterr().err == ""


def test_demo_times_eager_and_minicomp_on_the_same_device():
    from minicomp.demo import _latencies_us
    model = torch.nn.Linear(8, 8).eval()
    x = torch.randn(2, 8)
    cm = minicomp.compile(model, (x,), cache=False)
    eager_us, mc_us = _latencies_us(model, cm, (x,), budget_s=0.1)
    assert eager_us > 0 and mc_us > 0 and math.isfinite(eager_us) and math.isfinite(mc_us)


def test_demo_leaves_cpu_targets_where_they_are():
    from minicomp.demo import _on_gpu
    model, x = torch.nn.Linear(4, 4), torch.randn(1, 4)
    assert _on_gpu(model, (x,), "cpu") == (model, (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_demo_times_a_gpu_target_against_eager_on_the_same_gpu():
    from minicomp.demo import _latencies_us, _on_gpu
    model, inputs = _on_gpu(torch.nn.Linear(64, 64).eval(), (torch.randn(8, 64),), "triton")
    assert next(model.parameters()).is_cuda and inputs[0].is_cuda
    cm = minicomp.compile(model, inputs, target="triton")
    assert cm.device.type == "cuda"
    eager_us, mc_us = _latencies_us(model, cm, inputs, budget_s=0.1)
    assert math.isfinite(eager_us) and math.isfinite(mc_us) and eager_us > 0 and mc_us > 0
