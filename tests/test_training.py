"""Training (issue 18): compiled forward and backward graphs give eager's gradients and losses.

* The decompositions of :mod:`minicomp.frontend.aten_backward` equal eager's backward ops
  (eager, no compile: conv, max pooling with ties and NaN, embedding, NLL, layer norm, views).
* OpInfo's gradient samples of the ops training uses: every sample whose forward minicomp
  compiles is trained strictly (no PyTorch fallback allowed) and gives eager's gradients
  (reference interpreter target: it checks the decomposed graphs without code generation).
* Whole models (MLP, LeNet, a transformer block) trained for 20 SGD steps through
  ``torch.compile(backend="minicomp")`` and ``minicomp.compile`` follow eager's losses, with
  every forward and backward graph native, and no ATen compute op during a compiled backward.
* DistributedDataParallel with 2 gloo processes gives single-process gradients.
"""
from __future__ import annotations

import os
import sys
import tempfile

import pytest
import torch
import torch._dynamo
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import minicomp
from minicomp import training
from minicomp.dynamo import make_backend
from minicomp.errors import MinicompError
from minicomp.frontend import aten_backward as ab

aten = torch.ops.aten
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "examples"))


def _close(got, want, msg=""):
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{msg}: {m}")


# -- decompositions against eager's backward ops ---------------------------------------------
@pytest.mark.parametrize("n,ci,co,h,w,k,s,p,d,g", [
    (2, 3, 4, 9, 8, 3, 1, 1, 1, 1), (2, 4, 6, 11, 10, 3, 2, 1, 1, 2), (1, 2, 2, 12, 12, 5, 3, 2, 2, 1),
    (2, 6, 6, 7, 7, 3, 2, 0, 1, 6), (2, 1, 6, 28, 28, 5, 1, 2, 1, 1), (1, 2, 3, 6, 9, 1, 2, 0, 1, 1)])
def test_convolution_backward_is_eager_s(n, ci, co, h, w, k, s, p, d, g):
    x, wt = torch.randn(n, ci, h, w), torch.randn(co, ci // g, k, k)
    args = ([co], [s, s], [p, p], [d, d], False, [0, 0], g, [True, True, True])
    grad = torch.randn_like(aten.convolution(x, wt, None, *args[1:-1]))
    for got, want, name in zip(ab.convolution_backward(grad, x, wt, *args),
                               aten.convolution_backward(grad, x, wt, *args), "input weight bias".split()):
        _close(got, want, name)


@pytest.mark.parametrize("h,w,k,s,p,d,ceil", [
    (8, 8, 2, 2, 0, 1, False), (9, 9, 3, 2, 1, 1, False), (10, 11, 3, 2, 1, 1, True), (7, 7, 2, 1, 0, 1, False),
    (9, 9, 3, 2, 1, 2, False), (5, 5, 2, 2, 0, 1, True)])
def test_max_pool_backward_is_eager_s_with_ties_and_nan(h, w, k, s, p, d, ceil):
    x = torch.randn(2, 3, h, w)
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum of a window gets the gradient
    x[1, 1, 0, 0] = x[1, 1, 1, 1] = float("nan")  # NaN: the last NaN of a window gets it
    x[1, 2] = float("-inf")
    params = ([k, k], [s, s], [p, p], [d, d], ceil)
    out, idx = aten.max_pool2d_with_indices(x, *params)
    grad = torch.randn_like(out)
    _close(ab.max_pool2d_with_indices_backward(grad, x, *params, idx),
           aten.max_pool2d_with_indices_backward(grad, x, *params, idx), "max_pool2d")


@pytest.mark.parametrize("h,w,k,s,p,ceil,include_pad,divisor", [
    (8, 8, 2, 2, 0, False, True, None), (9, 9, 3, 2, 1, False, True, None), (9, 9, 3, 2, 1, False, False, None),
    (10, 11, 3, 2, 1, True, True, None), (10, 11, 3, 2, 1, True, False, None), (7, 7, 3, 1, 1, False, True, 5)])
def test_avg_pool_backward_is_eager_s(h, w, k, s, p, ceil, include_pad, divisor):
    x = torch.randn(2, 3, h, w)
    params = ([k, k], [s, s], [p, p], ceil, include_pad, divisor)
    grad = torch.randn_like(aten.avg_pool2d(x, *params))
    _close(ab.avg_pool2d_backward(grad, x, *params), aten.avg_pool2d_backward(grad, x, *params), "avg_pool2d")


@pytest.mark.parametrize("padding_idx,by_freq", [(-1, False), (2, False), (-1, True)])
def test_embedding_backward_is_eager_s(padding_idx, by_freq):
    ids, grad = torch.randint(0, 7, (3, 5)), torch.randn(3, 5, 4)
    _close(ab.embedding_dense_backward(grad, ids, 7, padding_idx, by_freq),
           aten.embedding_dense_backward(grad, ids, 7, padding_idx, by_freq), "embedding")


@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_nll_loss_forward_and_backward_are_eager_s(reduction, weighted, ignore_index):
    x, t = torch.randn(6, 5).log_softmax(-1), torch.randint(0, 5, (6,))
    t[0] = 2
    wt = torch.rand(5) if weighted else None
    want = aten.nll_loss_forward(x, t, wt, reduction, ignore_index)
    got = ab.nll_loss_forward(x, t, wt, reduction, ignore_index)
    _close(got[0], want[0], "loss")
    _close(got[1], want[1], "total weight")
    grad = torch.randn_like(want[0])
    _close(ab.nll_loss_backward(grad, x, t, wt, reduction, ignore_index, want[1]),
           aten.nll_loss_backward(grad, x, t, wt, reduction, ignore_index, want[1]), "grad")


def test_layer_norm_statistics_and_view_backwards_are_eager_s():
    x, w, b = torch.randn(3, 4, 8), torch.randn(8), torch.randn(8)
    for got, want in zip(ab.native_layer_norm(x, [8], w, b, 1e-5), aten.native_layer_norm(x, [8], w, b, 1e-5)):
        _close(got, want, "layer norm")
    a, b = torch.randn(100), torch.randn(100)
    for w in (0.1, 0.9, torch.rand(100), torch.tensor(0.7)):
        torch.testing.assert_close(ab.lerp(a, b, w), torch.lerp(a, b, w))
    for sizes, dim, i in [([3, 4, 5], 1, 2), ([3, 4, 5], -1, -1)]:
        g = torch.randn_like(torch.randn(sizes).select(dim, i))
        _close(ab.select_backward(g, sizes, dim, i), aten.select_backward(g, sizes, dim, i), "select")
    for sizes, dim, start, end, step in [([7, 9], 1, 1, 8, 3), ([10], 0, 0, 10, 4), ([5, 6], 1, -4, 2**63 - 1, 2)]:
        g = torch.randn_like(aten.slice(torch.randn(sizes), dim, start, end, step))
        _close(ab.slice_backward(g, sizes, dim, start, end, step),
               aten.slice_backward(g, sizes, dim, start, end, step), "slice")


# -- OpInfo gradient samples -------------------------------------------------------------------
#: The ops a training step of the supported models uses, and how many samples each (spread over the list).
OPINFO_OPS = {
    "nn.functional.conv2d": 4, "nn.functional.max_pool2d": 4, "nn.functional.avg_pool2d": 3,
    "nn.functional.layer_norm": 3, "softmax": 3, "log_softmax": 3, "nn.functional.gelu": 2,
    "nn.functional.silu": 2, "nn.functional.embedding": 2,
    "nn.functional.nll_loss": 4, "nn.functional.cross_entropy": 3, "nn.functional.mse_loss": 2,
    "nn.functional.relu": 2, "sigmoid": 2, "tanh": 1, "nn.functional.linear": 3, "nn.functional.batch_norm": 4,
    "matmul": 3, "sum": 2, "mean": 2,
}


def _opinfo(name: str):
    from torch.testing._internal.common_methods_invocations import op_db
    return next(o for o in op_db if o.name == name and o.variant_test_name == "")


def _sample_fn(op, sample):
    """(f(*tensors) -> floating outputs, the sample's tensors with their requires_grad)."""
    leaves, spec = pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    where = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]

    def fn(*tensors):
        vals = list(leaves)
        for i, t in zip(where, tensors):
            vals[i] = t
        inp, args, kwargs = pytree.tree_unflatten(vals, spec)
        out = op(inp, *args, **kwargs)
        return tuple(o for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor) and o.is_floating_point())
    tensors = [leaves[i].detach().clone().requires_grad_(leaves[i].requires_grad) for i in where]
    return fn, tensors


def _grads(fn, tensors, cotangents=None):
    outs = fn(*tensors)
    cotangents = cotangents or [torch.randn_like(o) for o in outs]
    need = [t for t in tensors if t.requires_grad]
    pairs = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
    got = torch.autograd.grad([o for o, _ in pairs], need, [c for _, c in pairs], allow_unused=True)
    return outs, got, cotangents


@pytest.mark.parametrize("name", OPINFO_OPS)
def test_opinfo_gradients_compile_strictly_and_match_eager(name):
    """Each sample whose forward minicomp compiles trains with no PyTorch fallback and eager's gradients."""
    op = _opinfo(name)
    samples = list(op.sample_inputs("cpu", torch.float32, requires_grad=True))
    picked = samples[::max(1, len(samples) // OPINFO_OPS[name])][:OPINFO_OPS[name]]
    checked = 0
    for sample in picked:
        fn, tensors = _sample_fn(op, sample)
        if not any(t.requires_grad for t in tensors) or not fn(*tensors) or any(t.numel() == 0 for t in tensors):
            continue
        try:  # the forward alone, with the training decompositions (nll_loss has no inference mapping)
            with torch.no_grad():
                training.aot_callable(fn, target="interpret", strict=True)(*[t.detach() for t in tensors])
        except MinicompError:
            continue  # the forward is not supported: not a training question
        want_outs, want, cot = _grads(fn, tensors)
        got_outs, got, _ = _grads(training.aot_callable(fn, target="interpret", strict=True), tensors, cot)
        for g, w in zip(got_outs, want_outs):
            _close(g, w, f"{name} output {sample}")
        for g, w in zip(got, want):
            _close(g, w, f"{name} gradient {sample}")
        checked += 1
    assert checked, f"no sample of {name} was checked"


# -- whole models ------------------------------------------------------------------------------
class _MLP(nn.Module):
    """Linear, GELU, Linear; a forward of its own (Dynamo compiles no frame of torch.nn's own
    ``Sequential.forward`` when DistributedDataParallel calls it)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def _mlp() -> nn.Module:
    return _MLP()


def _lenet() -> nn.Module:
    from lenet import LeNet5
    return LeNet5()


def _block() -> nn.Module:
    from transformer_block import TransformerBlock
    return TransformerBlock(d=32, heads=2, hidden=64)


def _convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2),
                         nn.Tanh(), nn.Flatten(), nn.Linear(6, 10))


def _data(name: str, step: int):
    g = torch.Generator().manual_seed(step)
    if name == "convnet":
        return torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    if name == "mlp":
        return torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
    if name == "lenet":
        return torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g)
    return torch.randn(2, 8, 32, generator=g), torch.randn(2, 8, 32, generator=g)


MODELS = {"mlp": _mlp, "lenet": _lenet, "block": _block}
SMALL = {"mlp": _mlp, "convnet": _convnet}


def _loss(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out, y) if name == "block" else nn.functional.cross_entropy(out, y)


class _AtenRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(str(func))
        return func(*args, **(kwargs or {}))


#: What a compiled backward may dispatch: allocation of outputs, copies, and AOTAutograd's own
#: ``detach`` of saved tensors; no arithmetic.
ALLOWED_ATEN = {"aten.empty.memory_format", "aten.empty_like.default", "aten.clone.default", "aten.detach.default",
                "aten.alias.default"}


def _train(name: str, model: nn.Module, step_fn, steps: int = 20) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for i in range(steps):
        x, y = _data(name, i)
        opt.zero_grad(set_to_none=True)
        loss = step_fn(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", MODELS)
def test_torch_compile_trains_natively_like_eager(name):
    """20 SGD steps: the same losses as eager, every graph native, the backward without ATen compute."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = MODELS[name]()
    model = MODELS[name]()
    model.load_state_dict(eager.state_dict())
    want = _train(name, eager, lambda x, y: _loss(name, eager(x), y))
    step = torch.compile(lambda x, y: _loss(name, model(x), y), backend=make_backend("cpu", strict=True))
    with training.record() as records:
        got = _train(name, model, step, steps=19)
    x, y = _data(name, 19)
    model.zero_grad(set_to_none=True)  # else accumulating into .grad is an add_ (eager's, not ours)
    loss = step(x, y)
    seed = torch.ones(())
    recorder = _AtenRecorder()
    with recorder:
        loss.backward(seed)
    got.append(loss.item())
    assert {r.kind for r in records} == {"forward", "backward"} and all(r.native for r in records), records
    assert recorder.seen <= ALLOWED_ATEN, recorder.seen - ALLOWED_ATEN
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_minicomp_compile_in_training_mode_trains_natively_like_eager(name):
    """A model compiled by minicomp.compile and called with grad needed trains as eager does, with
    compiled forward and backward graphs (the eager backward is only a listed fallback)."""
    torch.manual_seed(0)
    eager = SMALL[name]()
    model = SMALL[name]()
    model.load_state_dict(eager.state_dict())
    want = _train(name, eager, lambda x, y: _loss(name, eager(x), y))
    compiled = minicomp.compile(model, (_data(name, 0)[0],), cache=False)
    with training.record() as records:
        got = _train(name, model, lambda x, y: _loss(name, compiled(x), y))
    assert sorted(r.kind for r in records) == ["backward", "forward"] and all(r.native for r in records), records
    assert compiled._last.grad.fallbacks == []
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-5)


def test_minicomp_compile_second_derivatives_and_buffers_follow_eager():
    """create_graph=True takes the listed eager backward; batch norm's running statistics update as eager's."""
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
    model.load_state_dict(eager.state_dict())
    x = torch.randn(5, 6, requires_grad=True)
    compiled = minicomp.compile(model.eval(), (x.detach(),), cache=False)
    (g,) = torch.autograd.grad(compiled(x).square().sum(), x, create_graph=True)
    (want,) = torch.autograd.grad(eager.eval()(x).square().sum(), x, create_graph=True)
    _close(g, want, "first derivative")
    _close(torch.autograd.grad(g.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0], "second derivative")


# -- data parallel -----------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # Buckets of ~1 KiB (the first one too; its default is 1 MiB): Dynamo's DDP optimizer splits
        # this small model's graph into several, each compiled by minicomp.
        dist._DEFAULT_FIRST_BUCKET_BYTES = 1024
        torch.manual_seed(0)
        model = _mlp()
        ddp = DistributedDataParallel(model, bucket_cap_mb=1024 / 2**20)
        compiled = torch.compile(ddp, backend=make_backend("cpu", strict=True))
        x, y = _data("mlp", 0)
        half = x.shape[0] // world
        with training.record() as records:
            _loss("mlp", compiled(x[rank * half:(rank + 1) * half]), y[rank * half:(rank + 1) * half]).backward()
        torch.save({"grads": {n: p.grad for n, p in model.named_parameters()},
                    "graphs": [(r.kind, r.native) for r in records]}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_gives_single_process_gradients():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data("mlp", 0)
    _loss("mlp", model(x), y).backward()
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2)
        results = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    for res in results:
        kinds = [k for k, _ in res["graphs"]]
        assert kinds.count("forward") >= 2 and all(native for _, native in res["graphs"]), res["graphs"]
        for name, p in model.named_parameters():
            _close(res["grads"][name], p.grad, name)


# -- optimizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
                                  lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=True),
                                  lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False)],
                         ids=["sgd", "adamw", "adamw-single-tensor"])
def test_compiled_optimizer_step_is_eager_s_in_a_few_kernels_over_all_parameters(make):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    model.load_state_dict(eager.state_dict())
    opt_eager, opt = make(eager.parameters()), make(model.parameters())
    step = torch.compile(opt.step, backend=make_backend("cpu", strict=True))
    with training.record() as records:
        for i in range(3):
            x = torch.randn(4, 8, generator=torch.Generator().manual_seed(i))
            for m in (eager, model):
                m.zero_grad()
                m(x).square().mean().backward()
            opt_eager.step()
            step()
    for p, q in zip(model.parameters(), eager.parameters()):
        _close(p, q, "parameter")
    assert records and all(r.native and r.kind == "inference" for r in records), records
    # the update formulas: a few fused kernels over the concatenated parameters, not one per parameter
    # (the rest gather the parameters into one buffer and copy the results out)
    n_params = len(list(model.parameters()))
    for r in records:
        if opt.defaults["foreach"]:
            assert 0 < r.compute_kernels < n_params, (r.compute_kernels, n_params)
        else:  # the single-tensor implementation: fused kernels per parameter
            assert 0 < r.compute_kernels


# -- dropout -----------------------------------------------------------------------------------
def test_training_mode_dropout_compiles_with_torch_s_distribution_and_seed():
    """Native masking of uniform numbers drawn by torch's generator: p of the elements dropped, the rest
    scaled by 1/(1-p), the same numbers after the same ``torch.manual_seed``, gradients through the mask."""
    torch._dynamo.reset()
    drop = torch.compile(lambda t: nn.functional.dropout(t, 0.3, True), backend=make_backend("cpu", strict=True))
    x = torch.ones(400, 100, requires_grad=True)
    with training.record() as records:
        torch.manual_seed(1)
        y = drop(x)
        y.sum().backward()
    assert all(r.native for r in records) and any(r.notes for r in records), records
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # 40,000 draws: 5 standard deviations
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    torch.manual_seed(1)
    assert torch.equal(drop(x), y)
    assert not torch.equal(drop(x), y)


# -- the Triton backend ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:no CUDA device:RuntimeWarning")
def test_triton_target_compiles_forward_and_backward_natively():
    """The Triton backend (its interpreter where there is no GPU) runs both graphs with eager's gradients."""
    pytest.importorskip("triton")
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    model.load_state_dict(eager.state_dict())
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    step = torch.compile(lambda x: nn.functional.cross_entropy(model(x), y),
                         backend=make_backend("triton", strict=True))
    with training.record() as records:
        step(x).backward()
    nn.functional.cross_entropy(eager(x), y).backward()
    assert sorted(r.kind for r in records) == ["backward", "forward"] and all(r.native for r in records), records
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        _close(p.grad, q.grad, name)


def test_batch_norm_in_training_mode_updates_running_statistics_like_eager():
    """Batch statistics in the compiled forward and backward; running mean/var and the batch count
    written back as eager's (AOTAutograd copies the new buffer values into the module)."""
    torch._dynamo.reset()

    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 3))
    torch.manual_seed(0)
    eager, model = build(), build()
    model.load_state_dict(eager.state_dict())
    x, y = torch.randn(4, 2, 6, 6), torch.tensor([0, 1, 2, 0])
    step = torch.compile(lambda x: nn.functional.cross_entropy(model(x), y), backend=make_backend("cpu", strict=True))
    with training.record() as records:
        for _ in range(2):
            model.zero_grad()
            step(x).backward()
    for _ in range(2):
        eager.zero_grad()
        nn.functional.cross_entropy(eager(x), y).backward()
    assert records and all(r.native for r in records), records
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        _close(p.grad, q.grad, name)
    for (name, b), c in zip(model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(b, c, msg=lambda m: f"{name}: {m}")


def test_out_of_range_target_raises_as_eager_does():
    """A class index outside [0, C) (not ignore_index) is an IndexError in eager; the one-hot
    selection would give it loss 0, so the bounds check of the compiled embedding raises it."""
    torch.manual_seed(0)
    m = torch.nn.Linear(5, 5)
    x = torch.randn(3, 5)
    step = torch.compile(lambda inp, tgt: torch.nn.functional.cross_entropy(m(inp), tgt), backend="minicomp")
    step(x, torch.tensor([0, 1, 2])).backward()
    with pytest.raises(IndexError):
        step(x, torch.tensor([0, 7, 2])).backward()
    with pytest.raises(IndexError):
        step(x, torch.tensor([0, -3, 2])).backward()
