"""The machine's limits, measured in the run that uses them, and where a case stands against them.

Two limits make the roofline of a CPU:

* the **FMA peak** (:func:`fma_peak_gflops`): a native loop of vector fused multiply-adds into
  independent accumulators, built here with llvmlite's IRBuilder for the host's widest vectors
  (AVX-512, AVX2 or SSE), run on ``threads`` threads at once. Each accumulator is a chain of
  FMAs, and there are more chains than FMA units times their latency, so the units never wait:
  the loop runs at the rate the cores can issue FMAs. A FLOP is a multiply or an add (an FMA
  is two), as GEMM rates count them.
* the **copy bandwidth** (:func:`copy_gbps`): ``threads`` threads each ``memmove`` their share of
  a buffer much larger than the caches into a destination already touched (no page faults),
  counted as bytes read plus bytes written, as the bench counts a case's bytes.

Both are the best of a few repetitions: a busy machine only ever makes a run slower, so the
fastest run is the closest to what the hardware allows. A case's place against them
(:func:`roofline`) is its rate over the limit that binds it: a case with FLOPs to do (matrix
products, convolutions, attention) is read against the FMA peak, a case without (elementwise
ops, softmax, layer norm) against the copy bandwidth. The model cases count as compute-bound
although their FLOPs per byte can fall below the ridge point (peak / bandwidth): their weights
(at most a few MiB) stay in the caches between calls, so main memory's bandwidth does not bound
them, and their GB/s over it can exceed 1.
"""
from __future__ import annotations

import ctypes
import functools
import math
import threading
import time
from collections.abc import Callable

#: Independent accumulators of the FMA loop: more than FMA units x latency on current x86
#: cores (2 units x 4 cycles), and with the two operands they fit 16 vector registers (AVX2).
FMA_ACCUMULATORS = 12
#: Bytes each copy-bandwidth repetition moves from source to destination (past any L3 here).
COPY_BYTES = 128 << 20


@functools.lru_cache(maxsize=None)
def _target_machine():
    """A target machine for the host CPU with its features (AVX2, AVX-512...)."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(), opt=3)


def vector_lanes() -> int:
    """float32 lanes of the host's widest vector registers (16 with AVX-512F, 8 with AVX, else 4)."""
    import llvmlite.binding as llvm
    feats = llvm.get_host_cpu_features()
    return 16 if feats.get("avx512f") else 8 if feats.get("avx") else 4


def fma_module(lanes: int, accumulators: int = FMA_ACCUMULATORS):
    """``void mc_peak_fma(i64 iters, float x, float y, float* out)``: ``iters`` rounds of one
    ``acc[i] = fma(acc[i], x, y)`` per accumulator (vectors of ``lanes`` floats), then the sum
    of the accumulators stored to ``out[0..lanes)`` so that no FMA is dead code.

    ``x`` and ``y`` are arguments, so nothing folds; ``llvm.fma`` is never reassociated (no
    fast-math flags), so every FMA of the source is one FMA instruction."""
    from llvmlite import ir
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, lanes)
    module = ir.Module(name="minicomp_peak_fma")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, f32, f32, f32.as_pointer()]), "mc_peak_fma")
    iters, x, y, out = fn.args
    fma = ir.Function(module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}f32")
    entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    splat = ir.Constant(vec, ir.Undefined)
    xv, yv = splat, splat
    for lane in range(lanes):
        xv = b.insert_element(xv, x, ir.Constant(ir.IntType(32), lane))
        yv = b.insert_element(yv, y, ir.Constant(ir.IntType(32), lane))
    b.cbranch(b.icmp_signed(">", iters, ir.Constant(i64, 0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(i64, "i")
    accs = [b.phi(vec, f"acc{k}") for k in range(accumulators)]
    nxt = [b.call(fma, [a, xv, yv]) for a in accs]
    i_next = b.add(i, ir.Constant(i64, 1))
    b.cbranch(b.icmp_signed("<", i_next, iters), loop, done)
    i.add_incoming(ir.Constant(i64, 0), entry)
    i.add_incoming(i_next, loop)
    for k, (a, n) in enumerate(zip(accs, nxt)):
        a.add_incoming(ir.Constant(vec, [float(k)] * lanes), entry)
        a.add_incoming(n, loop)
    b.position_at_end(done)
    finals = []
    for k in range(accumulators):
        p = b.phi(vec)
        p.add_incoming(ir.Constant(vec, [float(k)] * lanes), entry)
        p.add_incoming(nxt[k], loop)
        finals.append(p)
    total = finals[0]
    for p in finals[1:]:
        total = b.fadd(total, p)
    b.store(total, b.bitcast(out, vec.as_pointer()), align=4)
    b.ret_void()
    return module


class _PeakLoop:
    """The FMA loop of :func:`fma_module`, JIT-compiled for the host (kept alive with its engine)."""

    def __init__(self, lanes: int):
        import llvmlite.binding as llvm
        tm = _target_machine()
        mod = llvm.parse_assembly(str(fma_module(lanes)))
        mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
        mod.verify()
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()
        self.lanes = lanes
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_float, ctypes.c_float, ctypes.c_void_p)
        self.fn = proto(self.engine.get_function_address("mc_peak_fma"))
        self.flops_per_iter = 2 * lanes * FMA_ACCUMULATORS

    def run(self, iters: int) -> list[float]:
        """Run ``iters`` rounds on this thread; the lanes of the accumulators' sum."""
        out = (ctypes.c_float * self.lanes)()
        # x just below 1 and a small y: every accumulator converges to y / (1 - x), never a
        # denormal, infinity or NaN (which could slow the units down).
        self.fn(iters, 0.999, 0.001, ctypes.addressof(out))
        return list(out)


@functools.lru_cache(maxsize=None)
def _peak_loop() -> _PeakLoop:
    return _PeakLoop(vector_lanes())


def on_threads(threads: int, work: Callable[[int], object]) -> float:
    """Seconds from releasing ``threads`` Python threads at once, each calling ``work(index)``
    (a native call that drops the GIL), until the last one finishes."""
    start = threading.Barrier(threads + 1)
    pool = [threading.Thread(target=lambda k=k: (start.wait(), work(k))) for k in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def fma_peak_gflops(threads: int, seconds: float = 0.1, repeats: int = 3) -> float:
    """The best FMA rate of ``repeats`` runs of :func:`fma_module`'s loop on ``threads`` threads
    at once, each run about ``seconds`` long, in GFLOP/s."""
    loop = _peak_loop()
    probe = 100_000
    t = on_threads(1, lambda _: loop.run(probe))
    iters = max(probe, int(probe * seconds / max(t, 1e-6)))
    best = min(on_threads(threads, lambda _: loop.run(iters)) for _ in range(repeats))
    return threads * iters * loop.flops_per_iter / best / 1e9


def copy_gbps(threads: int, nbytes: int = COPY_BYTES, repeats: int = 5) -> float:
    """The best rate of ``repeats`` copies of ``nbytes`` bytes, split over ``threads`` threads
    (``memmove`` of one slice each), in GB/s of bytes read plus bytes written."""
    import numpy as np
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)  # written once: its pages are mapped before the timed copies
    np.copyto(dst, src)
    step = -(-nbytes // threads) // 64 * 64 or nbytes
    slices = [(k * step, min(step, nbytes - k * step)) for k in range(threads) if k * step < nbytes]
    s, d = src.ctypes.data, dst.ctypes.data

    def work(k):
        off, n = slices[k]
        ctypes.memmove(d + off, s + off, n)
    best = min(on_threads(len(slices), work) for _ in range(repeats))
    return 2 * nbytes / best / 1e9


def measure_limits(threads: int, *, seconds: float = 0.1, copy_bytes: int = COPY_BYTES) -> dict:
    """FMA peak and copy bandwidth on ``threads`` threads and on one, with what they were measured
    with (``seconds`` per FMA run, ``copy_bytes`` per copy)."""
    return {"threads": threads, "fma_lanes_f32": vector_lanes(), "fma_accumulators": FMA_ACCUMULATORS,
            "fma_peak_gflops": round(fma_peak_gflops(threads, seconds), 1),
            "fma_peak_gflops_1t": round(fma_peak_gflops(1, seconds), 1),
            "copy_gbps": round(copy_gbps(threads, copy_bytes), 2), "copy_gbps_1t": round(copy_gbps(1, copy_bytes), 2),
            "copy_bytes": copy_bytes}


def roofline(flops: float, nbytes: float, seconds: float, limits: dict) -> dict:
    """Where a run of ``seconds`` doing ``flops`` FLOPs over ``nbytes`` bytes stands: its rates,
    each over its limit, which limit binds (``bound``: compute when there are FLOPs, see the
    module docstring) and the fraction of that one (``fraction``)."""
    peak, bw = limits["fma_peak_gflops"], limits["copy_gbps"]
    out: dict = {"flops": int(flops), "bytes": int(nbytes)}
    if flops:
        out["gflops"] = flops / seconds / 1e9
        out["fma_fraction"] = out["gflops"] / peak
    if nbytes:
        out["gbps"] = nbytes / seconds / 1e9
        out["copy_fraction"] = out["gbps"] / bw
    compute = bool(flops)
    out["bound"] = "compute" if compute else "memory"
    out["fraction"] = out["fma_fraction" if compute else "copy_fraction"] if (flops or nbytes) else math.nan
    return out
