"""A pre-norm transformer block (d=128, 4 heads) with hand-written attention.

x + Attn(LN(x)), then + MLP(LN(.)) with a 128->512->128 GELU MLP. The attention
is spelled out (one qkv Linear, head split, q @ k^T * scale, softmax, @ v, head
merge, output Linear) so that the compiler sees every op.

Run ``python examples/transformer_block.py [batch seq]`` to print its minicomp IR
and check the reference interpreter against eager PyTorch.
"""
from __future__ import annotations

import math
import sys

import torch
from torch import nn


class TransformerBlock(nn.Module):
    def __init__(self, d: int = 128, heads: int = 4, hidden: int = 512):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, s, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


def model() -> nn.Module:
    """The block in eval mode with deterministic weights (seed 0)."""
    torch.manual_seed(0)
    return TransformerBlock().eval()


def example_inputs(batch: int = 1, seq: int = 64) -> tuple[torch.Tensor, ...]:
    """One (batch, seq, 128) float32 input (seed 1); the benchmark uses 8x128."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, seq, 128, generator=g),)


def main(argv: list[str]) -> None:
    import numpy as np

    import minicomp
    from minicomp.ir.printer import print_graph

    m, inputs = model(), example_inputs(*map(int, argv))
    graph = minicomp.trace(m, inputs)
    print(print_graph(graph, elide_constants=True))
    got = minicomp.interpret(graph, *[t.numpy() for t in inputs])
    with torch.no_grad():
        want = m(*inputs)
    torch.testing.assert_close(torch.from_numpy(np.asarray(got[0])), want)
    print("interpreter matches eager PyTorch")


if __name__ == "__main__":
    main(sys.argv[1:])
