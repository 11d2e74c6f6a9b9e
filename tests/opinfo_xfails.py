"""The ledger of the OpInfo sweep (tests/test_opinfo.py): each sample expected to fail.

Keys are ``(opinfo_key, dtype_name, sample_id)``: ``opinfo_key`` is the OpInfo name,
plus ``.variant`` when the OpInfo has a variant_test_name; ``sample_id`` is what
``test_opinfo.sample_id`` gives: ``#i``, the sample's index in the OpInfo's list of
usable samples for that dtype, then its input, args and kwargs with tensors shown as
dtype[shape] (pytest's id for the sample is ``<op>-<dtype>-#i``). Each value says how
the sample fails:

* :class:`Raises`: minicomp raises this error type, with this text in the message;
* :class:`Differs`: minicomp's values differ from eager's on at most ``elements``
  elements by at most ``max_abs`` (a known numeric difference, explained in ``why``).

Anything else fails the test: an unlisted sample that does not match eager, a listed
one that matches (remove its entry), another error or a larger difference, an entry
that names no swept sample. Measured with torch 2.13.0 (CPU).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Raises:
    """minicomp raises ``error`` (the exception's class name) with ``message`` in its text."""

    error: str
    message: str

    def __str__(self) -> str:
        return f"raises {self.error}: {self.message}"


@dataclass(frozen=True)
class Differs:
    """minicomp's result differs from eager's on at most ``elements`` elements, by at most
    ``max_abs``; ``why`` says why that is not a wrong answer."""

    elements: int
    max_abs: float
    why: str

    def __str__(self) -> str:
        return f"differs from eager on <= {self.elements} element(s) by <= {self.max_abs:g} ({self.why.split(':')[0]})"


def _entries(op: str, dtype: str, entry: Raises | Differs, *sample_ids: str) -> dict:
    return {(op, dtype, s): entry for s in sample_ids}


# max_pool2d(return_indices=True): minicomp imports only the pooled values, not the indices.
_POOL_INDICES = Raises("CompileError", "but minicomp only imports its main result")
# Training-mode batch norm (batch statistics, running stats updated in place) is not compiled.
_BN_TRAINING = Raises("UnsupportedOpError", "training-mode batch norm (no running statistics); call model.eval()")
# narrow with a 0-d tensor as start traces to Python `add` on the start, which is not imported.
_NARROW_TENSOR_START = Raises("UnsupportedOpError", "unsupported op '<built-in function add>'")
# embedding with max_norm renormalizes the weight in place (aten.embedding_renorm).
_EMBEDDING_RENORM = Raises("UnsupportedOpError", "unsupported op 'aten.embedding_renorm.default'")

XFAILS: dict[tuple[str, str, str], Raises | Differs] = {
    **_entries('nn.functional.batch_norm', 'float32', _BN_TRAINING,
        '#0 f32[5,5,5] f32[5] f32[5] f32[5] f32[5] training=True momentum=0.5 eps=0.6',
        '#2 f32[3,1] f32[1] f32[1] f32[1] f32[1] training=True momentum=0.0',
        '#5 f32[3,2,3,4] f32[2] f32[2] f32[2] f32[2] training=True momentum=-1.0 eps=0.5',
        '#8 f32[2,1] f32[1] f32[1] f32[1] f32[1] training=True',
        '#11 f32[1,2,3] None None None None training=True'),
    **_entries('nn.functional.batch_norm', 'float64', _BN_TRAINING,
        '#5 f64[3,2,3,4] f64[2] f64[2] f64[2] f64[2] training=True momentum=-1.0 eps=0.5',
        '#11 f64[1,2,3] None None None None training=True'),
    **_entries('nn.functional.max_pool2d', 'float32', _POOL_INDICES,
        '#84 f32[1,2,3,6] kernel_size=(3,2) stride=2 ceil_mode=False padding=0 dilation=1 return_indices=True',
        '#206 f32[1,2,3,6] kernel_size=3 stride=(2,1) ceil_mode=False padding=0 dilation=(1,2) return_indices=True',
        '#332 f32[1,2,6,6] kernel_size=3 stride=None ceil_mode=False padding=(1,1) dilation=1 return_indices=True',
        '#484 f32[1,2,6,6] kernel_size=3 stride=(2,1) ceil_mode=True padding=1 dilation=1 return_indices=True',
        '#700 f32[2,2,3,6] kernel_size=(3,2) stride=(2,1) ceil_mode=True padding=1 dilation=1 return_indices=True',
        '#1078 f32[2,2,6,6] kernel_size=3 stride=(2,1) ceil_mode=False padding=(1,1) dilation=(1,2) '
        'return_indices=True'),
    **_entries('nn.functional.max_pool2d', 'float64', _POOL_INDICES,
        '#766 f64[2,2,3,6] kernel_size=3 stride=None ceil_mode=False padding=(1,1) dilation=(1,2) return_indices=True'),
    **_entries('narrow', 'float32', _NARROW_TENSOR_START,
        '#1 f32[5,5,5] 1 i64[] 2',
        '#3 f32[5,5,5] -1 i64[] 2',
        '#5 f32[5,5,5] 1 i64[] 0',
        '#7 f32[5,5,5] -1 i64[] 0',
        '#9 f32[5,5,5] 2 i64[] 2'),
    **_entries('narrow', 'float64', _NARROW_TENSOR_START,
        '#7 f64[5,5,5] -1 i64[] 0',
        '#9 f64[5,5,5] 2 i64[] 2'),
    **_entries('narrow', 'int64', _NARROW_TENSOR_START,
        '#5 i64[5,5,5] 1 i64[] 0',
        '#9 i64[5,5,5] 2 i64[] 2'),
    **_entries('narrow', 'bool', _NARROW_TENSOR_START,
        '#1 b8[5,5,5] 1 i64[] 2'),
    **_entries('nn.functional.embedding', 'float32', _EMBEDDING_RENORM,
        '#5 f32[5,5] i64[2,2] max_norm=1.0',
        '#6 f32[5,5] i64[2,2] max_norm=1.0 norm_type=1.0',
        '#9 f32[5,5] i64[3,3] sparse=True scale_grad_by_freq=True padding_idx=0 max_norm=1.0'),
    ("matmul", "float32", "#13 f32[10] f32[5,5,10,5]"): Differs(
        elements=1, max_abs=1.9e-5,
        why="rounding order, not a wrong value: minicomp accumulates the 10-term dot products with fma, eager's "
            "small-bmm loop rounds each product before adding it; one element (2.33, from products summing to "
            "about 300 in magnitude) lands 1.9e-5 apart; both results are within float32's dot-product error "
            "bound of the float64 product (test_matmul_rounding_difference_is_within_float32_bound)"),
}
