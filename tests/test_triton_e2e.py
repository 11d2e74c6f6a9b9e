"""End to end on the Triton backend: trace a model, run the GPU pass pipeline, lower to a
Program, generate Triton, run it under Triton's interpreter and compare with eager."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from minicomp.codegen.triton import aot_compile, generate

lowering = pytest.importorskip("minicomp.ir.lowering", reason="needs ir/lowering (graph -> Program)")


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def run_program(program, inputs):
    """Run a Program's generated module the way a driver does: allocate outputs, pass constants."""
    from minicomp.guards import TORCH_DTYPE
    from minicomp.runtime import constant_tensor
    consts = [constant_tensor(program.constants[s.index], s.type.dtype)
              for s in sorted((s for s in program.slots if s.kind == "const"), key=lambda s: s.index)]
    result = [torch.empty(0) for _ in range(program.num_outputs)]
    for s in program.slots:
        if s.kind == "output":
            result[s.index] = torch.empty(s.type.shape, dtype=TORCH_DTYPE[s.type.dtype])
    return generate(program).load()(*inputs, *result, *consts)  # aliased outputs come back as copies


def compile_graph(model, inputs):
    from minicomp.frontend import trace
    from minicomp.passes.manager import PassContext, PassManager, default_pipeline
    graph = trace(model, inputs)
    ctx = PassContext(options={"target": "gpu"})
    graph = PassManager(default_pipeline("gpu", {})).run(graph, ctx)
    return lowering.lower_graph(graph)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.ln = nn.LayerNorm(16)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x, img):
        y = torch.softmax(self.ln(torch.nn.functional.gelu(self.fc(x))), dim=-1)
        z = torch.nn.functional.max_pool2d(torch.relu(self.conv(img)), 2)
        return y * 2 - 1, z.sum(dim=(2, 3))


def test_small_model_matches_eager():
    torch.manual_seed(0)
    model = Small().eval()
    inputs = (torch.randn(3, 12), torch.randn(2, 2, 6, 6))
    program = compile_graph(model, inputs)
    got = run_program(program, inputs)
    want = model(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach())
    failed = [r for r in aot_compile(generate(program)) if not r.ok]
    assert not failed, [f"{r.kernel}: {r.error[-300:]}" for r in failed]
