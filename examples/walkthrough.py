"""Follow one small model from PyTorch to machine code, printing every stage.

    python examples/walkthrough.py

1. PyTorch model -> minicomp graph IR (``minicomp.trace``)
2. the pass pipeline, printing the IR after each pass that changed it
3. the fused graph -> kernel descriptions (``lower_graph``)
4. kernel descriptions -> LLVM IR -> host assembly (``codegen.llvm``)
5. running the native code and comparing with PyTorch
"""
from __future__ import annotations

import torch

import minicomp
from minicomp.codegen.llvm import compile_program
from minicomp.ir.lowering import lower_graph
from minicomp.ir.printer import print_graph
from minicomp.passes.manager import PassContext, PassManager, default_pipeline


class TinyMLP(torch.nn.Module):
    """Linear -> GELU -> Linear, with a residual: small enough to read every stage."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def banner(title: str) -> None:
    print(f"\n{'=' * 20} {title} {'=' * (56 - len(title))}")


def main() -> None:
    torch.manual_seed(0)
    model, x = TinyMLP().eval(), torch.randn(4, 16)

    banner("1. traced graph IR")
    graph = minicomp.trace(model, (x,))
    print(print_graph(graph, elide_constants=True))

    banner("2. passes")
    ctx = PassContext(options={"target": "cpu"})
    last = print_graph(graph, elide_constants=True)
    for p in default_pipeline("cpu", ctx.options):
        graph = PassManager([p]).run(graph, ctx)
        text = print_graph(graph, elide_constants=True)
        if text != last:
            print(f"// ----- after {p.name} -----\n{text}")
        last = text
    print("\n".join(str(d) for d in ctx.decisions if d.kind in ("fused", "unfused")))

    banner("3. kernel descriptions")
    program = lower_graph(graph)
    for k in program.kernels:
        print(f"{k.name}: kind={k.kind}, inputs={[str(b.type) for b in k.inputs]}, "
              f"outputs={[str(b.type) for b in k.outputs]}")
    print(f"arena: {program.arena_bytes} bytes; {len(program.calls)} kernel calls in one entry function")

    banner("4. LLVM IR of the first kernel, and a taste of the assembly")
    module = compile_program(program, name="walkthrough")
    symbol, text = module.kernel_sources[0]
    print("\n".join(text.splitlines()[:40]), "\n  ...")
    asm = [ln for ln in module.source("asm").splitlines() if ln.startswith("\t") and not ln.startswith("\t.")]
    print("\n".join(asm[:16]), "\n  ...")

    banner("5. run and compare with PyTorch")
    cm = minicomp.compile(model, (x,), target="cpu")
    out = cm(x)
    torch.testing.assert_close(out, model(x))
    print(f"max |minicomp - torch| = {(out - model(x)).abs().max().item():.2e}  ({len(cm.kernels)} kernels)")


if __name__ == "__main__":
    with torch.no_grad():
        main()
