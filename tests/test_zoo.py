"""The model zoo (minicomp.zoo): real architectures from torchvision, timm and Hugging Face.

Each model is built from its library's constructor with random weights, compiled for the
CPU with ``fallback=False`` and compared with eager at float32's default tolerances, whole
output structure included (a ``ModelOutput`` comes back as a ``ModelOutput``).
:data:`EXPECTED_FAILURES` names the models that do not compile yet with the error they
raise; the xfail is strict, so a model that starts working fails the test until it is
taken off the list.
"""
from __future__ import annotations

import pytest
import torch

import minicomp
from minicomp import zoo
from minicomp.errors import DataDependentError, GuardError
from minicomp.frontend import trace_with_spec
from minicomp.frontend.keywords import bind
from minicomp.frontend.value_guards import ValueGuardError

try:
    zoo.import_torchvision()  # (declares the schemas a CUDA torchvision wheel lacks beside a CPU torch)
except ImportError:
    pytest.skip("torchvision is not installed (the 'zoo' extra)", allow_module_level=True)
pytest.importorskip("timm", reason="timm is not installed (the 'zoo' extra)")
pytest.importorskip("transformers", reason="transformers is not installed (the 'zoo' extra)")

#: Models whose Python reads tensor values while building masks (Hugging Face's mask code):
#: the frontend traces them specialized on the example's values behind guards
#: (``trace_with_spec(..., specialize=True)``); ``minicomp.compile`` does so once its call
#: path recompiles when a guard fails (requested in the driver), until then it raises.
SPECIALIZED = ("gpt2", "bert", "distilbert", "t5", "llama", "whisper")

#: zoo model -> (exception type, text its message contains).
EXPECTED_FAILURES: dict[str, tuple[type[BaseException], str]] = {
    name: (DataDependentError, "data-dependent Python ('Tensor.__bool__') at masking_utils.py")
    for name in SPECIALIZED}


def _params() -> list:
    out = []
    for name in zoo.names():
        if name in EXPECTED_FAILURES:
            exc, text = EXPECTED_FAILURES[name]
            out.append(pytest.param(name, marks=pytest.mark.xfail(raises=exc, strict=True, reason=text)))
        else:
            out.append(name)
    return out


@pytest.mark.parametrize("name", _params())
def test_zoo_model_compiles_natively_and_matches_eager(name):
    model, args, kwargs = zoo.build(name)
    fn, inputs = bind(model, args, kwargs)
    try:
        cm = minicomp.compile(fn, inputs, target="cpu")
    except Exception as err:
        if name in EXPECTED_FAILURES:
            assert EXPECTED_FAILURES[name][1] in str(err)
        raise
    with torch.no_grad():
        want = model(*args, **kwargs)
        got = cm(*inputs)
    assert type(got) is type(want)
    torch.testing.assert_close(got, want)
    assert cm.fallbacks == []


def _specialized(name: str):
    """(model, kwargs, traced, compiled graph) for a model traced specialized on its values."""
    model, args, kwargs = zoo.build(name)
    fn, inputs = bind(model, args, kwargs)
    traced = trace_with_spec(fn, inputs, specialize=True)  # weights as constants: inputs are the user's
    return model, fn, inputs, traced, minicomp.compile(traced.graph, inputs, target="cpu")


@pytest.mark.parametrize("name", SPECIALIZED)
def test_zoo_model_specialized_on_its_values_compiles_natively_and_matches_eager(name):
    model, fn, inputs, traced, cm = _specialized(name)
    assert traced.guards, "the model's mask code reads values"
    assert not any(n.op == "external" for n in cm.graph.nodes)
    with torch.no_grad():
        want = fn(*inputs)
    got = traced.unflatten(cm(*inputs))
    assert type(got) is type(want)
    torch.testing.assert_close(got, want)


def test_zoo_lists_the_issue_models():
    assert set(zoo.names("torchvision")) == {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
                                             "vit_tv_tiny"}
    assert set(zoo.names("timm")) == {"vit_tiny_timm", "mobilevit_xxs", "efficientformerv2_s0"}
    assert set(zoo.names("transformers")) == {"gpt2", "bert", "distilbert", "t5", "llama", "whisper", "wav2vec2"}
    with pytest.raises(KeyError, match="no zoo model 'resnet19'"):
        zoo.build("resnet19")


def _padded(inputs: dict) -> dict:
    mask = inputs["attention_mask"].clone()
    mask[:, -5:] = 0
    return {**inputs, "attention_mask": mask}


def test_value_reads_become_guards_and_a_changed_value_is_never_a_wrong_answer():
    """BERT's mask code skips the mask when ``padding_mask.all()``: traced with an all-ones mask,
    the program is specialized on that read; a padded mask takes the other path in eager, so the
    compiled program's guard output refuses it."""
    model, fn, inputs, traced, cm = _specialized("bert")
    assert len(traced.guards) == 1 and traced.guards[0].value is True
    assert traced.guards[0].where.startswith("masking_utils.py:")
    _, _, kwargs = zoo.build("bert")
    padded = fn.flatten(**_padded(kwargs))
    with pytest.raises(ValueGuardError, match=r"padding_mask.all\(\).* read True when traced and False now"):
        traced.unflatten(cm(*padded))
    with torch.no_grad():
        torch.testing.assert_close(traced.unflatten(cm(*inputs)), fn(*inputs))  # the traced path holds


def test_value_guard_error_is_a_guard_error():
    assert issubclass(ValueGuardError, GuardError)


def test_keyword_call_rejects_a_different_call():
    model, _, kwargs = zoo.build("distilbert")
    fn, _ = bind(model, (), kwargs)
    with pytest.raises(ValueError, match="differ from the traced call"):
        fn.flatten(input_ids=kwargs["input_ids"])
    with pytest.raises(ValueError, match="differ from the traced call"):
        fn.flatten(**kwargs, output_hidden_states=True)
