"""The shape-independent parts of the packed GEMM: declared by kernels, defined once per process.

Every packed matmul kernel calls the same three functions (one set per accumulator /
storage dtype; one micro-kernel per k), so LLVM optimizes and compiles the heavy SIMD
code once instead of once per kernel; only each kernel's loop nest and epilogue are
kernel-specific. Sizes and strides are runtime arguments.

The helpers :func:`micro`, :func:`packa` and :func:`packb` return the function of that
name in ``module``: a *declaration* in a kernel module, a definition (external linkage)
in a :class:`LibraryModule`. :mod:`.runtime.library` builds the definitions from the names
alone (:func:`define`), compiles them once per process and registers their symbols, so
kernel modules compiled separately (or loaded from a cache) share one copy.

* ``micro(apan, bpan, tile, kk)`` (one per distinct k): ``tile[MR x NR] = sum_p apan[p, :MR] (outer) bpan[p, :NR]``
  with the MR x NR accumulators in SIMD registers (``fma`` for floats).
* ``cmicro(apan, x, tile, nci, plane, rs)`` (one per kernel size and column dilation): the tile of the
  implicit-GEMM convolution of :mod:`.conv_gemm`, B read in place from the padded input.
* ``packa(A, ap, aoff, i0, m, kk, sm, sk, rows)``: rows ``i0 .. i0+rows`` of A
  (element ``(i, p)`` at ``aoff + i*sm + p*sk``) into MR-row panels, element
  ``(p, r)`` of panel ``ia`` at ``(ia*kk + p)*MR + r``; rows >= m read as zero.
* ``packb`` body ``(params, begin, end)`` for :func:`~.parallel.parallel_for`: panels
  [begin, end) of (batch x NR-column panel) of B into ``Bp`` (``k x NR`` each,
  zero-padded), with ``params`` a :data:`PACKB_PARAMS` struct.
"""
from __future__ import annotations

from llvmlite import ir

from minicomp.codegen.llvm import convert
from minicomp.codegen.llvm.control import carried_loop, for_range, splat
from minicomp.codegen.llvm.intrinsics import call
from minicomp.codegen.llvm.runtime.jit import host_vector_bits
from minicomp.codegen.llvm.types import I32, I64, PTR, VOID, register_type, storage_type
from minicomp.ir.dtypes import DType

#: Rows of the micro-kernels' register tiles (MR x 2 vectors of accumulators). AVX-512's 32
#: vector registers hold 8 x 2 accumulators plus the B vectors and a broadcast; AVX2's 16
#: hold 6 x 2 (8 rows beat 6 on AVX-512 for both the GEMM and the implicit-GEMM convolution).
MR = 8 if host_vector_bits() >= 512 else 6
#: Most taps :func:`cmicro` unrolls (one copy of its body per tap).
MAX_TAPS = 49
#: Prefix of every function this module defines (what :mod:`.runtime.library` provides).
PREFIX = "mc.gemm."

#: (B, Bp, B batch-offset table, n, k, B stride along k, B stride along n, panels per batch)
PACKB_PARAMS = ir.LiteralStructType([PTR, PTR, PTR, I64, I64, I64, I64, I64])


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


class LibraryModule(ir.Module):
    """A module in which the helpers below *define* their functions (external linkage)."""


def _shared(module: ir.Module, name: str, args: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder | None]:
    """The function ``name`` and, when it is a new definition (``module`` is a
    :class:`LibraryModule`), a builder at its entry; else None (existing, or a declaration)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing, None
    fn = ir.Function(module, ir.FunctionType(VOID, args), name=name)
    if not isinstance(module, LibraryModule):
        return fn, None  # a declaration: the process-wide library defines it
    fn.attributes.add("noinline")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def define(module: LibraryModule, name: str) -> ir.Function:
    """Define the function ``name`` (as :func:`micro`, :func:`cmicro`, :func:`packa` or :func:`packb` name it) in
    ``module``; ValueError for any other name."""
    parts = name[len(PREFIX):].split(".") if name.startswith(PREFIX) else []
    try:
        if parts[0] == "micro" and len(parts) in (3, 4):
            const_k = None
            if len(parts) == 4:
                if not parts[3].startswith("k"):
                    raise ValueError
                const_k = _positive(parts[3][1:])
            return _check(micro(module, DType[parts[1]], _positive(parts[2], 64), const_k), name)
        if parts[0] == "cmicro" and len(parts) == 5 and parts[4].startswith("d"):
            kh, kw = (_positive(v, MAX_TAPS) for v in parts[3].split("x"))
            if kh * kw > MAX_TAPS:
                raise ValueError(name)
            return _check(cmicro(module, DType[parts[1]], _positive(parts[2], 64), kh, kw,
                                 _positive(parts[4][1:], 1 << 20)), name)
        if parts[0] == "packa" and len(parts) == 3:
            return _check(packa(module, DType[parts[1]], DType[parts[2]]), name)
        if parts[0] == "packb" and len(parts) == 4:
            return _check(packb(module, DType[parts[1]], DType[parts[2]], _positive(parts[3], 128)), name)
    except (ValueError, IndexError, KeyError):
        pass
    raise ValueError(f"{name!r} is not a shared GEMM function")


def _positive(text: str, limit: int = 1 << 40) -> int:
    if not text.isdigit() or not 0 < int(text) <= limit or str(int(text)) != text:
        raise ValueError(text)
    return int(text)


def _check(fn: ir.Function, name: str) -> ir.Function:
    if fn.name != name:  # e.g. a dtype spelled another way
        raise ValueError(name)
    return fn


def _load_as(b, ptr, off, sdt: DType, acc: DType) -> ir.Value:
    raw = b.load(b.gep(ptr, [off], inbounds=True, source_etype=storage_type(sdt)), typ=storage_type(sdt))
    return convert.cast(b, convert.from_storage(b, raw, sdt), sdt, acc)


def micro(module: ir.Module, acc: DType, W: int, const_k: int | None = None) -> ir.Function:
    """``void micro(ptr apan, ptr bpan, ptr tile, i64 kk)`` (kk >= 1), NR = 2*W columns.

    With ``const_k`` the function ignores ``kk`` and runs ``const_k`` steps (one copy per k:
    LLVM schedules a loop of constant trip count better than a runtime one).
    """
    suffix = f".k{const_k}" if const_k is not None else ""
    fn, b = _shared(module, f"{PREFIX}micro.{acc.name}.{W}{suffix}", [PTR, PTR, PTR, I64])
    if b is None:
        return fn
    apan, bpan, tile, kk = fn.args
    if const_k is not None:
        kk = _c(const_k)
    T = register_type(acc)
    NR, nv = 2 * W, 2
    vt = ir.VectorType(T, W)
    zero = ir.Constant(vt, [convert.constant(0, acc)] * W)
    esize = acc.itemsize  # element alignment only: never assume more of a pointer

    def step(p, accs):  # accs[r * nv + c]: tile row r, vector c
        bv = [b.load(b.gep(bpan, [b.add(b.mul(p, _c(NR)), _c(c * W))], source_etype=T), typ=vt, align=esize)
              for c in range(nv)]
        new = []
        for r in range(MR):
            a = splat(b, b.load(b.gep(apan, [b.add(b.mul(p, _c(MR)), _c(r))], source_etype=T), typ=T), vt)
            if acc.is_float:
                new += [call(b, "llvm.fma", a, bv[c], accs[r * nv + c]) for c in range(nv)]
            else:
                new += [b.add(b.mul(a, bv[c]), accs[r * nv + c]) for c in range(nv)]
        return new
    new = carried_loop(b, "mk", kk, 1, [zero] * (MR * nv), step)
    for r in range(MR):
        for c in range(nv):
            b.store(new[r * nv + c], b.gep(tile, [_c(r * NR + c * W)], source_etype=T), align=esize)
    b.ret_void()
    return fn


def cmicro(module: ir.Module, acc: DType, W: int, kh: int, kw: int, dw: int) -> ir.Function:
    """``void cmicro(ptr apan, ptr x, ptr tile, i64 nci, i64 plane, i64 rs)`` (nci >= 1): the
    implicit-GEMM convolution tile, NR = 2*W columns, ``kh x kw`` taps (unrolled), column
    dilation ``dw``, input row stride ``rs`` (the row dilation times the padded row length):
    ``tile[r, c] = sum_{ci < nci, i < kh, j < kw} apan[((ci*kh + i)*kw + j)*MR + r]
    * x[ci*plane + i*rs + j*dw + c]``. ValueError for an integer ``acc``."""
    if not acc.is_float:
        raise ValueError(f"cmicro accumulates floats, not {acc.name}")
    fn, b = _shared(module, f"{PREFIX}cmicro.{acc.name}.{W}.{kh}x{kw}.d{dw}", [PTR] * 3 + [I64] * 3)
    if b is None:
        return fn
    apan, x, tile, nci, plane, rs = fn.args
    T = register_type(acc)
    vt = ir.VectorType(T, W)
    esize = acc.itemsize
    ntaps = kh * kw
    zero = ir.Constant(vt, [convert.constant(0, acc)] * W)

    def step(ci, cur):  # cur[r * 2 + h]: tile row r, vector h
        cur = list(cur)
        arow = b.gep(apan, [b.mul(ci, _c(ntaps * MR))], source_etype=T)
        xrow = b.gep(x, [b.mul(ci, plane)], source_etype=T)
        for i in range(kh):
            xi = b.gep(xrow, [b.mul(_c(i), rs)], source_etype=T)
            for j in range(kw):
                t = i * kw + j
                bv = [b.load(b.gep(xi, [_c(j * dw + h * W)], source_etype=T), typ=vt, align=esize) for h in range(2)]
                for r in range(MR):
                    a = splat(b, b.load(b.gep(arow, [_c(t * MR + r)], source_etype=T), typ=T), vt)
                    cur[r * 2:r * 2 + 2] = [call(b, "llvm.fma", a, bv[h], cur[r * 2 + h]) for h in range(2)]
        return cur
    # the taps are unrolled already: LLVM's unroll analysis of the body only costs time
    cur = carried_loop(b, "mk", nci, 1, [zero] * (MR * 2), step, unroll=False)
    for r in range(MR):
        for h in range(2):
            b.store(cur[r * 2 + h], b.gep(tile, [_c(r * 2 * W + h * W)], source_etype=T), align=esize)
    b.ret_void()
    return fn


def packa(module: ir.Module, acc: DType, sdt: DType) -> ir.Function:
    """``void packa(ptr A, ptr ap, i64 aoff, i64 i0, i64 m, i64 kk, i64 sm, i64 sk, i64 rows)``."""
    fn, b = _shared(module, f"{PREFIX}packa.{acc.name}.{sdt.name}", [PTR, PTR] + [I64] * 7)
    if b is None:
        return fn
    A, ap, aoff, i0, m, kk, sm, sk, rows = fn.args
    T = register_type(acc)
    zero = convert.constant(0, acc)
    npanels = b.udiv(b.add(rows, _c(MR - 1)), _c(MR))
    last = b.sub(m, _c(1))
    with for_range(b, 0, npanels, name="ia") as ia:
        rbase = b.add(i0, b.mul(ia, _c(MR)))
        rowoffs, inside = [], []
        for r in range(MR):
            row = b.add(rbase, _c(r))
            inside.append(b.icmp_signed("<", row, m))
            rowoffs.append(b.add(aoff, b.mul(_smin(b, row, last), sm)))
        dbase = b.mul(b.mul(ia, kk), _c(MR))
        with for_range(b, 0, kk, name="p") as p:
            poff = b.mul(p, sk)
            dst = b.add(dbase, b.mul(p, _c(MR)))
            for r in range(MR):
                v = _load_as(b, A, b.add(rowoffs[r], poff), sdt, acc)
                b.store(b.select(inside[r], v, zero), b.gep(ap, [b.add(dst, _c(r))], source_etype=T))
    b.ret_void()
    return fn


def packb(module: ir.Module, acc: DType, sdt: DType, NR: int) -> ir.Function:
    """The parallel body ``void packb(ptr params, i64 begin, i64 end)`` (see module doc)."""
    fn, b = _shared(module, f"{PREFIX}packb.{acc.name}.{sdt.name}.{NR}", [PTR, I64, I64])
    if b is None:
        return fn
    params, begin, end = fn.args
    T = register_type(acc)
    zero32 = ir.Constant(I32, 0)
    f = [b.load(b.gep(params, [zero32, ir.Constant(I32, i)], source_etype=PACKB_PARAMS),
                typ=PACKB_PARAMS.elements[i]) for i in range(len(PACKB_PARAMS.elements))]
    B, bp, boffs, n, kk, sk, sn, npan = f
    zero = convert.constant(0, acc)
    with for_range(b, begin, end, name="pan") as pan:
        bidx = b.udiv(pan, npan)
        jp = b.urem(pan, npan)
        boff = b.load(b.gep(boffs, [bidx], source_etype=I64), typ=I64)
        base = b.mul(pan, b.mul(kk, _c(NR)))
        j0 = b.mul(jp, _c(NR))
        ncols = _smin(b, _c(NR), b.sub(n, j0))
        cbase = b.add(boff, b.mul(j0, sn))
        with for_range(b, 0, kk, name="p") as p:
            rowbase = b.add(base, b.mul(p, _c(NR)))
            src = b.add(cbase, b.mul(p, sk))
            with for_range(b, 0, NR, name="z") as c:
                b.store(zero, b.gep(bp, [b.add(rowbase, c)], source_etype=T))
            with for_range(b, 0, ncols, name="c") as c:
                v = _load_as(b, B, b.add(src, b.mul(c, sn)), sdt, acc)
                b.store(v, b.gep(bp, [b.add(rowbase, c)], source_etype=T))
    b.ret_void()
    return fn
