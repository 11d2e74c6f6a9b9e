"""PyTorch meaning of every IR op: the differential oracle for minicomp.

This table is written independently of the interpreter (``ir/interpreter.py``)
and of the op registry's numpy references, so comparing minicomp with it is a
real differential test. Each rule turns operand variable names, operand types
and attributes into one PyTorch *source expression*; :func:`torch_source`
assembles a graph into a standalone Python function and :func:`torch_fn`
executes that same source. The repro scripts of :mod:`minicomp.testing.repro`
embed it, so what a bug report shows is exactly what the test ran.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from minicomp.ir.dtypes import DType, promote
from minicomp.ir.graph import Graph, Value
from minicomp.ir.types import TensorType

TORCH_DTYPE = {DType.f32: "torch.float32", DType.f64: "torch.float64", DType.f16: "torch.float16",
               DType.bf16: "torch.bfloat16", DType.i32: "torch.int32", DType.i64: "torch.int64",
               DType.bool: "torch.bool"}

Rule = Callable[[list[str], list[TensorType], dict[str, Any]], str]


def _r(v: Any) -> str:
    """Python source for an attribute value."""
    if isinstance(v, DType):
        return TORCH_DTYPE[v]
    if isinstance(v, float) and not np.isfinite(v):
        return f"float('{v}')"
    if isinstance(v, tuple):
        return "(" + "".join(_r(x) + ", " for x in v) + ")"
    if isinstance(v, (np.integer, np.floating)):
        return repr(v.item())
    return repr(v)


def _fn(name: str) -> Rule:
    return lambda a, t, at: f"{name}({', '.join(a)})"


def _dims(t: TensorType, dims: tuple[int, ...]) -> str:
    return _r(tuple(dims) if dims else tuple(range(t.rank)))


def _promoting(name: str, skip: int = 0) -> Rule:
    """``name(*args)``, casting operands explicitly where PyTorch's promotion differs from the IR's.

    The IR promotes by dtype alone (:func:`minicomp.ir.dtypes.promote`); PyTorch lets
    a 0-d tensor of another dtype *not* promote a dimensioned one. When a 0-d operand
    takes part in a mixed-dtype op, operands are cast to the IR's promoted dtype so
    the oracle computes the IR's meaning. ``skip`` leading operands (``where``'s
    condition) take no part in promotion.
    """
    def rule(a: list[str], t: list[TensorType], at: dict[str, Any]) -> str:
        dts = [x.dtype for x in t[skip:]]
        args = list(a)
        if len(set(dts)) > 1 and any(x.rank == 0 for x in t[skip:]):
            common = dts[0]
            for d in dts[1:]:
                common = promote(common, d)
            args = a[:skip] + [x if d is common else f"{x}.to({TORCH_DTYPE[common]})"
                               for x, d in zip(a[skip:], dts)]
        extra = "".join(f", {k}={_r(v)}" for k, v in at.items() if k == "rounding_mode")
        return f"{name}({', '.join(args)}{extra})"
    return rule


def _slice(a: list[str], t: list[TensorType], at: dict[str, Any]) -> str:
    idx = ":, " * at["dim"] + f"{at['start']}:{at['end']}:{at.get('step', 1)}"
    return f"{a[0]}[{idx}]"


def _clamp(a: list[str], t: list[TensorType], at: dict[str, Any]) -> str:
    return f"torch.clamp({a[0]}, min={_r(at.get('min'))}, max={_r(at.get('max'))})"


_UNARY = ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "erf",
          "reciprocal", "floor", "isnan", "logical_not"]
_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "maximum": "maximum", "minimum": "minimum", "pow": "pow",
           "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
           "logical_and": "logical_and", "logical_or": "logical_or", "logical_xor": "logical_xor",
           "remainder": "remainder", "fmod": "fmod"}

#: op name -> rule producing a PyTorch expression (a tuple expression for ``split``).
RULES: dict[str, Rule] = {
    **{op: _fn(f"torch.{op}") for op in _UNARY},
    **{op: _promoting(f"torch.{fn}") for op, fn in _BINARY.items()},
    "silu": _fn("F.silu"),
    "relu6": _fn("F.relu6"),
    "leaky_relu": lambda a, t, at: f"F.leaky_relu({a[0]}, {_r(at['negative_slope'])})",
    "hardtanh": lambda a, t, at: f"F.hardtanh({a[0]}, {_r(at['min_val'])}, {_r(at['max_val'])})",
    "gelu": lambda a, t, at: f"F.gelu({a[0]}, approximate={_r(at['approximate'])})",
    "clamp": _clamp,
    "cast": lambda a, t, at: f"{a[0]}.to({_r(at['dtype'])})",
    "div": _promoting("torch.div"),
    "where": _promoting("torch.where", skip=1),
    # reductions
    "sum": lambda a, t, at: (f"torch.sum({a[0]}, dim={_dims(t[0], at['dims'])}, keepdim={at['keepdim']}, "
                             f"dtype={_r(at.get('dtype'))})"),
    "mean": lambda a, t, at: f"torch.mean({a[0]}, dim={_dims(t[0], at['dims'])}, keepdim={at['keepdim']})",
    "amax": lambda a, t, at: f"torch.amax({a[0]}, dim={_dims(t[0], at['dims'])}, keepdim={at['keepdim']})",
    "amin": lambda a, t, at: f"torch.amin({a[0]}, dim={_dims(t[0], at['dims'])}, keepdim={at['keepdim']})",
    "argmax": lambda a, t, at: f"torch.argmax({a[0]}, dim={_r(at.get('dim'))}, keepdim={at['keepdim']})",
    "argmin": lambda a, t, at: f"torch.argmin({a[0]}, dim={_r(at.get('dim'))}, keepdim={at['keepdim']})",
    "var": lambda a, t, at: (f"torch.var({a[0]}, dim={_dims(t[0], at['dims'])}, "
                             f"correction={_r(at['correction'])}, keepdim={at['keepdim']})"),
    "softmax": lambda a, t, at: f"torch.softmax({a[0]}, {at['dim']})",
    "log_softmax": lambda a, t, at: f"torch.log_softmax({a[0]}, {at['dim']})",
    # Evaluated in float64 and rounded once: eager's float32 kernel computes x*rstd - mean*rstd, which
    # cancels badly on near-constant rows (rstd ~ 1/sqrt(eps)); the oracle should be the exact value.
    "layer_norm": lambda a, t, at: (f"F.layer_norm({a[0]}.double(), {_r(t[0].shape[t[0].rank - at['normalized_ndim']:])}, "
                                    f"{a[1]}.double(), {a[2]}.double(), eps={_r(at['eps'])}).to({a[0]}.dtype)"),
    "batch_norm": lambda a, t, at: (f"F.batch_norm({a[0]}, {a[1]}, {a[2]}, {a[3]}, {a[4]}, training=False, "
                                    f"eps={_r(at['eps'])})"),
    "cumsum": lambda a, t, at: f"torch.cumsum({a[0]}, {at['dim']}, dtype={_r(at.get('dtype'))})",
    # contractions
    "matmul": _fn("torch.matmul"),
    "linear": _fn("F.linear"),
    "addmm": lambda a, t, at: f"torch.addmm({', '.join(a)}, beta={_r(at['beta'])}, alpha={_r(at['alpha'])})",
    "conv2d": lambda a, t, at: (f"F.conv2d({a[0]}, {a[1]}, {a[2] if len(a) > 2 else None}, "
                                f"stride={_r(at['stride'])}, padding={_r(at['padding'])}, "
                                f"dilation={_r(at['dilation'])}, groups={at['groups']})"),
    "max_pool2d": lambda a, t, at: (f"F.max_pool2d({a[0]}, {_r(at['kernel'])}, {_r(at['stride'])}, "
                                    f"{_r(at['padding'])}, {_r(at['dilation'])}, ceil_mode={at['ceil_mode']})"),
    "avg_pool2d": lambda a, t, at: (f"F.avg_pool2d({a[0]}, {_r(at['kernel'])}, {_r(at['stride'])}, "
                                    f"{_r(at['padding'])}, ceil_mode={at['ceil_mode']}, "
                                    f"count_include_pad={at['count_include_pad']}, "
                                    f"divisor_override={_r(at.get('divisor'))})"),
    # movement
    "reshape": lambda a, t, at: f"torch.reshape({a[0]}, {_r(at['shape'])})",
    "permute": lambda a, t, at: f"{a[0]}.permute({_r(at['dims'])})",
    "expand": lambda a, t, at: f"{a[0]}.expand({_r(at['shape'])})",
    "slice": _slice,
    "cat": lambda a, t, at: f"torch.cat([{', '.join(a)}], {at['dim']})",
    "split": lambda a, t, at: f"torch.split({a[0]}, {_r(list(at['sizes']))}, {at['dim']})",
    "embedding": lambda a, t, at: f"F.embedding({a[1]}, {a[0]})",
    "upsample_nearest2d": lambda a, t, at: f"F.interpolate({a[0]}, size={_r(at['size'])}, mode='nearest')",
    "copy": lambda a, t, at: f"{a[0]}.clone()",
    # generators
    "full": lambda a, t, at: f"torch.full({_r(at['shape'])}, {_r(at['value'])}, dtype={_r(at['dtype'])})",
    "arange": lambda a, t, at: (f"torch.arange({_r(at['start'])}, {_r(at['end'])}, {_r(at['step'])}, "
                                f"dtype={_r(at['dtype'])})"),
}


def supported(graph: Graph) -> bool:
    """Whether every node of ``graph`` has a PyTorch rule (``fused`` nodes have none)."""
    return all(n.op == "constant" or n.op in RULES for n in graph.nodes)


def torch_source(graph: Graph, fn_name: str = "torch_fn",
                 upcast_constants: bool = False) -> tuple[str, dict[str, np.ndarray]]:
    """Python source of a function computing ``graph`` with PyTorch, and its constants.

    The function takes the graph inputs as torch tensors (bf16 as ``torch.bfloat16``)
    and returns a tuple of output tensors. Constants are read from a dict ``C`` of
    numpy arrays (keyed by the returned dict's keys) that the caller provides.
    ``upcast_constants`` is for the float64 oracle run, whose inputs are upcast too:
    floating constants become float64 (exact: every float value is a float64 value),
    and so does every float16/bfloat16/float32 result, after its own rounding (a
    ``cast`` to float16 still rounds to float16), so float64 values never meet float32
    ones in ops that require one dtype (matmul, batch_norm).
    """
    names: dict[int, str] = {}
    consts: dict[str, np.ndarray] = {}

    def var(v: Value) -> str:
        return names[id(v)]

    for i, v in enumerate(graph.inputs):
        names[id(v)] = f"a{i}"
    lines = [f"def {fn_name}({', '.join(names[id(v)] for v in graph.inputs)}):"]
    for k, node in enumerate(graph.nodes):
        outs = [f"v{k}_{j}" for j in range(len(node.results))]
        if node.op == "constant":
            key = f"c{len(consts)}"
            consts[key] = np.asarray(node.attrs["value"])
            dt = DType.f64 if upcast_constants and node.attrs["dtype"].is_float else node.attrs["dtype"]
            expr = f"torch.from_numpy(C[{key!r}].copy()).to({TORCH_DTYPE[dt]})"
        elif node.op in RULES:
            expr = RULES[node.op]([var(o) for o in node.operands], [o.type for o in node.operands], node.attrs)
        else:
            raise NotImplementedError(f"no PyTorch rule for op '{node.op}' in minicomp.testing.torch_ref")
        if upcast_constants and len(node.results) == 1 and node.result.type.dtype in (DType.f32, DType.f16,
                                                                                        DType.bf16):
            expr = f"({expr}).to(torch.float64)"  # explicit dtypes (cast, full, ...): rounded, then float64
        target = outs[0] if node.opdef.num_results == 1 else "(" + ", ".join(outs) + ",)"
        lines.append(f"    {target} = {expr}")
        for r, name in zip(node.results, outs):
            names[id(r)] = name
    lines.append(f"    return ({''.join(var(v) + ', ' for v in graph.outputs)})")
    return "\n".join(lines) + "\n", consts


def torch_fn(graph: Graph, upcast_constants: bool = False) -> Callable[..., tuple]:
    """A callable running ``graph`` with PyTorch eager: torch tensors in, tuple of tensors out
    (``upcast_constants``: see :func:`torch_source`)."""
    import torch
    import torch.nn.functional as F
    source, consts = torch_source(graph, upcast_constants=upcast_constants)
    scope: dict[str, Any] = {"torch": torch, "F": F, "C": consts}
    exec(compile(source, f"<torch_ref {graph.name}>", "exec"), scope)
    return scope["torch_fn"]


def encode_array(a: np.ndarray) -> str:
    """Base64 of the ``.npy`` bytes of ``a`` (for embedding values in repro scripts)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)
