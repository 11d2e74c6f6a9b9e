"""LeNet-5 on a 1x1x28x28 image: two conv/ReLU/max-pool stages and three Linear layers.

Run ``python examples/lenet.py`` to print its minicomp IR and check the reference
interpreter against eager PyTorch.
"""
from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def model() -> nn.Module:
    """LeNet-5 in eval mode with deterministic weights (seed 0)."""
    torch.manual_seed(0)
    return LeNet5().eval()


def example_inputs(batch: int = 1) -> tuple[torch.Tensor, ...]:
    """One (batch, 1, 28, 28) float32 image batch (seed 1)."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 1, 28, 28, generator=g),)


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
