"""Every registered op that is not elementwise, run by the reference interpreter, against PyTorch.

One case builder per op (an op without one, here or in ``tests/interpreter_cases.py``, fails
``test_every_op_has_a_case``); views also check their ``view`` rule.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from interpreter_cases import (ALL, D, ELEMENTWISE, FINITE, FLOATS, NUMERIC, PER_OP, TAME, TORCH, array,
                               check, check_view_rule)
from minicomp.ir.ops import all_ops, get_op


# -- other categories: one case builder per op -----------------------------------------------------------
def _dims(draw, rank):
    return tuple(sorted(draw(st.sets(st.integers(0, rank - 1), max_size=rank)))) if rank else ()


def _reduce_case(fn, dtypes=ALL, attrs=lambda draw, r: {}):
    def case(draw):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        dtype = draw(st.sampled_from(dtypes))
        a = attrs(draw, len(shape))
        return [array(draw, dtype, shape, TAME)], [dtype], a, fn(a)
    return case


def _dims_keep(draw, rank):
    return {"dims": _dims(draw, rank), "keepdim": draw(st.booleans())}


def _dim(draw, rank):
    return draw(st.integers(0, max(rank - 1, 0)))


def _layer_norm_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    n, dt = draw(st.integers(1, len(shape))), draw(st.sampled_from(FLOATS))
    arrays = [array(draw, dt, shape, TAME)] + [array(draw, dt, shape[len(shape) - n:], FINITE) for _ in range(2)]
    attrs = {"normalized_ndim": n, "eps": draw(st.sampled_from([1e-5, 0.1]))}
    # against torch in f64: torch's own f16/bf16/f32 kernels differ in FMA use (see the reference)
    return arrays, [dt] * 3, attrs, lambda x, w, b: F.layer_norm(
        x.double(), x.shape[x.dim() - n:], w.double(), b.double(), attrs["eps"]).to(x.dtype)


def _batch_norm_case(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=4).filter(lambda s: s[1] > 0))
    dt = draw(st.sampled_from([D.f32, D.f64]))
    arrays = [array(draw, dt, shape, TAME)] + [array(draw, dt, (shape[1],), FINITE) for _ in range(4)]
    arrays[2] = np.abs(arrays[2])
    eps = draw(st.sampled_from([1e-5, 0.1]))
    return arrays, [dt] * 5, {"eps": eps}, lambda x, m, v, w, b: F.batch_norm(
        x.double(), m.double(), v.double(), w.double(), b.double(), False, 0.1, eps).to(x.dtype)


def _matmul_case(draw):
    ra, rb = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, min_side=1, max_side=3)).input_shapes
    m, k, n = (draw(st.integers(0, 4)) for _ in range(3))
    sa = batch[0][len(batch[0]) - max(ra - 2, 0):] + ((m, k) if ra > 1 else (k,))
    sb = batch[1][len(batch[1]) - max(rb - 2, 0):] + ((k, n) if rb > 1 else (k,))
    dt = draw(st.sampled_from(NUMERIC))
    return [array(draw, dt, sa, FINITE), array(draw, dt, sb, FINITE)], [dt, dt], {}, torch.matmul


def _linear_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    i, o, dt = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.sampled_from(FLOATS))
    shapes = [batch + (i,), (o, i)] + ([(o,)] if draw(st.booleans()) else [])
    return [array(draw, dt, s, FINITE) for s in shapes], [dt] * len(shapes), {}, F.linear


def _addmm_case(draw):
    m, k, n, dt = draw(st.integers(1, 4)), draw(st.integers(0, 4)), draw(st.integers(1, 4)), draw(st.sampled_from(FLOATS))
    bias = draw(st.sampled_from([(), (n,), (m, n), (1, n), (m, 1)]))
    attrs = {"beta": draw(st.sampled_from([0.0, 1.0, 0.5])), "alpha": draw(st.sampled_from([1.0, 2.0, -0.5]))}
    arrays = [array(draw, dt, bias, TAME), array(draw, dt, (m, k), FINITE), array(draw, dt, (k, n), FINITE)]
    return arrays, [dt] * 3, attrs, lambda c, a, b: torch.addmm(c, a, b, beta=attrs["beta"], alpha=attrs["alpha"])


def _conv_case(draw):
    g, cg, og = (draw(st.integers(1, 2)) for _ in range(3))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    attrs = {"stride": (draw(st.integers(1, 2)), draw(st.integers(1, 2))), "groups": g,
             "padding": (draw(st.integers(0, 2)), draw(st.integers(0, 1))),
             "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2)))}
    dt = draw(st.sampled_from([D.f32, D.f64, D.bf16]))
    shapes = [(n, g * cg, h, w), (g * og, cg, kh, kw)] + ([(g * og,)] if draw(st.booleans()) else [])
    return [array(draw, dt, s, FINITE) for s in shapes], [dt] * len(shapes), attrs, \
        lambda x, wt, b=None: F.conv2d(x, wt, b, attrs["stride"], attrs["padding"], attrs["dilation"], g)


def _pool_case(name):
    def case(draw):
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        attrs = {"kernel": k, "stride": draw(st.sampled_from([(), (1, 1), (2, 1), (2, 3)])),
                 "padding": (draw(st.integers(0, 1)), draw(st.integers(0, 1))), "ceil_mode": draw(st.booleans())}
        if name == "max_pool2d":
            attrs["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            dt = draw(st.sampled_from(NUMERIC))
            fn = lambda x: F.max_pool2d(x, k, attrs["stride"] or None, attrs["padding"], attrs["dilation"],  # noqa
                                        attrs["ceil_mode"])
        else:
            attrs["count_include_pad"] = draw(st.booleans())
            attrs["divisor"] = draw(st.sampled_from([None, 1, 3]))
            dt = draw(st.sampled_from([D.f32, D.f64, D.bf16]))
            fn = lambda x: F.avg_pool2d(x, k, attrs["stride"] or None, attrs["padding"], attrs["ceil_mode"],  # noqa
                                        attrs["count_include_pad"], attrs["divisor"])
        return [array(draw, dt, shape, TAME)], [dt], attrs, fn
    return case


def _any_array(draw, min_dims=0, dtype=None):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=0, max_side=4))
    dt = dtype or draw(st.sampled_from(ALL))
    return array(draw, dt, shape), dt


def _reshape_case(draw):
    sizes = draw(st.lists(st.integers(0, 4), max_size=5))
    def group(lst):
        cuts = sorted(draw(st.sets(st.integers(0, len(lst)), max_size=3)))
        return tuple(math.prod(lst[a:b]) for a, b in zip([0] + cuts, cuts + [len(lst)]) if b > a or not lst)
    x, dt = array(draw, D.f32, group(sizes)), D.f32
    target = group(draw(st.permutations(sizes)))
    return [x], [dt], {"shape": target}, lambda t: t.reshape(target)


def _permute_case(draw):
    x, dt = _any_array(draw)
    dims = tuple(draw(st.permutations(range(x.ndim))))
    return [x], [dt], {"dims": dims}, lambda t: t.permute(dims)


def _expand_case(draw):
    x, dt = _any_array(draw)
    lead = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    shape = lead + tuple(draw(st.sampled_from([s, -1])) if s != 1 else draw(st.integers(0, 3)) for s in x.shape)
    return [x], [dt], {"shape": shape}, lambda t: t.expand(shape)


def _slice_case(draw):
    x, dt = _any_array(draw, min_dims=1)
    dim = _dim(draw, x.ndim)
    size = x.shape[dim]
    start, end, step = draw(st.integers(0, size)), draw(st.integers(0, size)), draw(st.integers(1, 3))
    index = (slice(None),) * dim + (slice(start, end, step),)
    return [x], [dt], {"dim": dim, "start": start, "end": end, "step": step}, lambda t: t[index]


def _cat_case(draw):
    base = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
    dim = _dim(draw, len(base))
    shapes = [base[:dim] + (draw(st.integers(0, 3)),) + base[dim + 1:] for _ in range(draw(st.integers(1, 3)))]
    dts = [draw(st.sampled_from(ALL)) for _ in shapes]
    return [array(draw, d, s) for d, s in zip(dts, shapes)], dts, {"dim": dim}, lambda *ts: torch.cat(ts, dim)


def _split_case(draw):
    x, dt = _any_array(draw, min_dims=1)
    dim = _dim(draw, x.ndim)
    cuts = sorted(draw(st.lists(st.integers(0, x.shape[dim]), max_size=3)))
    sizes = tuple(b - a for a, b in zip([0] + cuts, cuts + [x.shape[dim]]))
    return [x], [dt], {"dim": dim, "sizes": sizes}, lambda t: torch.split(t, list(sizes), dim)


def _embedding_case(draw):
    n, d = draw(st.integers(1, 5)), draw(st.integers(0, 3))
    wdt, idt = draw(st.sampled_from(FLOATS)), draw(st.sampled_from([D.i32, D.i64]))
    ids_shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    arrays = [array(draw, wdt, (n, d)), array(draw, idt, ids_shape, ints=st.integers(0, n))]
    return arrays, [wdt, idt], {}, lambda w, i: F.embedding(i, w)


def _upsample_case(draw):
    shape = (draw(st.integers(0, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dt = draw(st.sampled_from(FLOATS))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return [array(draw, dt, shape)], [dt], {"size": size}, lambda t: F.interpolate(t, size=size, mode="nearest")


def _copy_case(draw):
    x, dt = _any_array(draw)
    return [x], [dt], {}, lambda t: t.clone()


_OPT_DTYPE = st.sampled_from([None, D.f32, D.f64, D.i64])
CASES = {
    "sum": _reduce_case(lambda a: lambda x: torch.sum(x, list(a["dims"]), a["keepdim"],
                                                      dtype=a["dtype"] and TORCH[a["dtype"]]),
                        attrs=lambda draw, r: {**_dims_keep(draw, r), "dtype": draw(_OPT_DTYPE)}),
    "mean": _reduce_case(lambda a: lambda x: torch.mean(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "amax": _reduce_case(lambda a: lambda x: torch.amax(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "amin": _reduce_case(lambda a: lambda x: torch.amin(x, list(a["dims"]), a["keepdim"]), attrs=_dims_keep),
    "argmax": _reduce_case(lambda a: lambda x: torch.argmax(x, a["dim"], a["keepdim"]),
                           attrs=lambda draw, r: {"dim": draw(st.one_of(st.none(), st.just(_dim(draw, r)))),
                                                  "keepdim": draw(st.booleans())}),
    "argmin": _reduce_case(lambda a: lambda x: torch.argmin(x, a["dim"], a["keepdim"]),
                           attrs=lambda draw, r: {"dim": draw(st.one_of(st.none(), st.just(_dim(draw, r)))),
                                                  "keepdim": draw(st.booleans())}),
    "var": _reduce_case(lambda a: lambda x: torch.var(x, list(a["dims"]), correction=a["correction"],
                                                      keepdim=a["keepdim"]),
                        attrs=lambda draw, r: {**_dims_keep(draw, r),
                                               "correction": draw(st.sampled_from([0.0, 1.0, 2.0, 0.5]))}),
    # torch accepts empty int tensors in softmax; the IR refuses ints outright
    "softmax": _reduce_case(lambda a: lambda x: torch.softmax(x, a["dim"]), FLOATS,
                            attrs=lambda draw, r: {"dim": _dim(draw, r)}),
    "log_softmax": _reduce_case(lambda a: lambda x: torch.log_softmax(x, a["dim"]), FLOATS,
                                attrs=lambda draw, r: {"dim": _dim(draw, r)}),
    "cumsum": _reduce_case(lambda a: lambda x: torch.cumsum(x, a["dim"], dtype=a["dtype"] and TORCH[a["dtype"]]),
                           attrs=lambda draw, r: {"dim": _dim(draw, r), "dtype": draw(_OPT_DTYPE)}),
    "layer_norm": _layer_norm_case, "batch_norm": _batch_norm_case,
    "matmul": _matmul_case, "linear": _linear_case, "addmm": _addmm_case, "conv2d": _conv_case,
    "max_pool2d": _pool_case("max_pool2d"), "avg_pool2d": _pool_case("avg_pool2d"),
    "reshape": _reshape_case, "permute": _permute_case, "expand": _expand_case, "slice": _slice_case,
    "cat": _cat_case, "split": _split_case, "embedding": _embedding_case, "upsample_nearest2d": _upsample_case,
    "copy": _copy_case,
}
FIXED = {"constant", "fused", "external"}  # tested by name below (external: tests/test_fallback.py)


def test_every_op_has_a_case():
    missing = set(all_ops()) - set(ELEMENTWISE) - set(CASES) - FIXED - {"full", "arange"}
    assert not missing, f"ops without a test case: {sorted(missing)}"


@pytest.mark.filterwarnings("ignore:var.... degrees of freedom:UserWarning")
@pytest.mark.parametrize("name", sorted(CASES))
@PER_OP
@given(data=st.data())
def test_op_matches_torch(name, data):
    arrays, dtypes, attrs, fn = CASES[name](data.draw)
    got = check(name, arrays, dtypes, attrs, fn)
    if got is not None and get_op(name).view is not None:
        check_view_rule(got[0], arrays[0], got[1])
