"""Train LeNet-5 with minicomp and with eager PyTorch, side by side, on synthetic digits.

The data: ten random 28x28 "digit" prototypes (seed 0); each sample is one of them,
shifted by up to two pixels and with Gaussian noise, labelled with its prototype.
Both copies of the model start from the same weights and see the same batches; the
compiled one runs ``torch.compile(model, backend="minicomp")`` (forward and backward
compiled natively, see docs/training.md) or, with ``--api minicomp``, ``minicomp.compile``.
Prints the loss of each epoch for both, the final test accuracy, and the time per
training step (forward, backward, SGD step; compile time excluded).

Run ``python examples/train.py [--epochs 3] [--batch 32] [--api torch|minicomp]``.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from lenet import LeNet5


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy, shifted copies of ten fixed prototypes: images (n, 1, 28, 28) and labels (n,)."""
    protos = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    images = torch.stack([torch.roll(protos[c], (int(dy), int(dx)), dims=(1, 2))
                          for c, (dy, dx) in zip(labels.tolist(), shifts)])
    return images + 0.5 * torch.randn(images.shape, generator=g), labels


def train_epoch(model: nn.Module, call, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch: int) -> tuple[float, list[float]]:
    """One pass over (x, y): (mean loss, seconds of each step)."""
    model.train()
    total, times = 0.0, []
    for i in range(0, len(x) - batch + 1, batch):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(call(x[i:i + batch]), y[i:i + batch])
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        total += loss.item()
    return total / len(times), times


def accuracy(call, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (call(x).argmax(-1) == y).float().mean().item()


def main() -> None:
    import minicomp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--api", choices=("torch", "minicomp"), default="torch")
    args = ap.parse_args()
    x, y = synthetic_digits(args.samples, seed=1)
    tx, ty = synthetic_digits(256, seed=2)
    torch.manual_seed(0)
    eager = LeNet5()
    model = LeNet5()
    model.load_state_dict(eager.state_dict())
    if args.api == "torch":
        compiled = torch.compile(model, backend="minicomp")
    else:
        compiled = minicomp.compile(model, (x[:args.batch],))
    runs = {"eager": (eager, eager), "minicomp": (model, compiled)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for k, (m, _) in runs.items()}
    steps: dict[str, list[float]] = {k: [] for k in runs}
    print(f"LeNet-5, {args.samples} synthetic digits, batch {args.batch}, SGD(momentum 0.9), api={args.api}")
    print(f"{'epoch':>5} {'eager loss':>11} {'minicomp loss':>14}")
    for epoch in range(args.epochs):
        losses = {}
        for k, (m, call) in runs.items():
            losses[k], times = train_epoch(m, call, opts[k], x, y, args.batch)
            steps[k] += times[1:] if epoch == 0 else times  # the first compiled step compiles
        print(f"{epoch:>5} {losses['eager']:>11.5f} {losses['minicomp']:>14.5f}")
    for k, (_, call) in runs.items():
        ms = 1e3 * sorted(steps[k])[len(steps[k]) // 2]
        print(f"{k:>8}: test accuracy {accuracy(call, tx, ty):.3f}, median step {ms:.2f} ms")
    drift = max((a - b).abs().max().item() for a, b in zip(eager.parameters(), model.parameters()))
    print(f"largest weight difference after training: {drift:.2e}")


if __name__ == "__main__":
    main()
