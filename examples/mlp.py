"""A two-layer MLP: Linear 256->1024, GELU, Linear 1024->256 on a (1, 256) input.

Run ``python examples/mlp.py`` to print its minicomp IR and check the reference
interpreter against eager PyTorch.
"""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 256, d_hidden: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_hidden, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def model() -> nn.Module:
    """The MLP in eval mode with deterministic weights (seed 0)."""
    torch.manual_seed(0)
    return MLP().eval()


def example_inputs(batch: int = 1) -> tuple[torch.Tensor, ...]:
    """One (batch, 256) float32 input (seed 1)."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 256, generator=g),)


def main() -> None:
    import numpy as np

    import minicomp
    from minicomp.ir.printer import print_graph

    m, inputs = model(), example_inputs()
    graph = minicomp.trace(m, inputs)
    print(print_graph(graph, elide_constants=True))
    got = minicomp.interpret(graph, *[t.numpy() for t in inputs])
    with torch.no_grad():
        want = m(*inputs)
    torch.testing.assert_close(torch.from_numpy(np.asarray(got[0])), want)
    print("interpreter matches eager PyTorch")


if __name__ == "__main__":
    main()
