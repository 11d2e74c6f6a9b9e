"""Launch configuration: block sizes and warps from simple size heuristics.

Every generated kernel is described by a :class:`KernelSource`: its source text,
its pointer parameters, the constexpr block sizes chosen here, the grid as a
function of those block sizes, and (for the optional GPU autotuner) a few
alternative configurations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from minicomp.ir.dtypes import DType

#: Largest reduction block kept in registers before a kernel loops over the inner dims.
MAX_RBLOCK = 2048


@dataclass(frozen=True)
class Config:
    """Constexpr block sizes plus ``num_warps`` for one launch."""

    blocks: tuple[tuple[str, int], ...]
    num_warps: int = 4

    def kwargs(self) -> str:
        """The launch's keyword arguments as source: ``XBLOCK=..., num_warps=...``."""
        parts = [f"{k}={v}" for k, v in self.blocks] + [f"num_warps={self.num_warps}"]
        return ", ".join(parts)


@dataclass
class KernelSource:
    """One generated ``@triton.jit`` kernel and how to launch it.

    ``grid`` is Python source of a tuple over the names in ``config.blocks``
    (e.g. ``"(triton.cdiv(4096, BLOCK),)"``); ``params`` are the pointer
    arguments in call order with their dtypes.
    """

    name: str
    text: str
    params: list[tuple[str, DType]]
    config: Config
    grid: str
    alternatives: list[Config] = field(default_factory=list)
    empty: bool = False  # nothing to compute (a size-0 output): the launch is skipped


def pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    p = 1
    while p < n:
        p *= 2
    return p


def warps_for(elements: int) -> int:
    """num_warps for a block of ``elements`` lanes."""
    return 1 if elements <= 128 else 2 if elements <= 512 else 4 if elements <= 2048 else 8


def pointwise_config(numel: int) -> tuple[Config, list[Config]]:
    """BLOCK over a flat iteration space of ``numel`` points."""
    block = min(1024, pow2(numel))
    alts = [Config((("BLOCK", b),), warps_for(b)) for b in (256, 512, 1024, 2048) if b != block and b <= pow2(numel)]
    return Config((("BLOCK", block),), warps_for(block)), alts


def reduction_config(rows: int, inner: int, max_rblock: int) -> tuple[Config, bool]:
    """(XBLOCK, RBLOCK) for ``rows`` outer points reducing ``inner`` points; True if looped."""
    looped = inner > max_rblock
    rblock = min(pow2(inner), max_rblock)
    xblock = max(1, min(pow2(rows), 1024 // rblock if rblock <= 1024 else 1, 64))
    return Config((("XBLOCK", xblock), ("RBLOCK", rblock)), warps_for(xblock * rblock)), looped


def matmul_config(m: int, n: int, k: int) -> tuple[Config, list[Config]]:
    """(BM, BN, BK) tiles; tl.dot needs every tile dim >= 16."""
    bm, bn, bk = (max(16, min(t, pow2(d))) for t, d in ((64, m), (64, n), (32, k)))
    base = Config((("BM", bm), ("BN", bn), ("BK", bk)), 4)
    alts = [Config((("BM", a), ("BN", b), ("BK", c)), w)
            for a, b, c, w in ((128, 128, 32, 8), (128, 64, 32, 4), (64, 128, 32, 4), (32, 32, 32, 2))
            if a <= pow2(max(m, 16)) and b <= pow2(max(n, 16)) and (a, b, c) != (bm, bn, bk)]
    return base, alts
