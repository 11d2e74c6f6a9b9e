"""A zoo of well-known architectures built from their libraries' own constructors.

Each entry builds a model with random weights (no downloads) in ``eval()`` mode, plus
example inputs: positional ``args`` and keyword ``kwargs`` (Hugging Face models take
``input_ids=``, ``attention_mask=``, ...). The sizes are small so that a test compiles
and checks every model in CI; :func:`build` with ``size="full"`` gives the library's
default configuration where one exists, for benchmarks.

The libraries (torchvision, timm, transformers; the ``zoo`` extra) are imported only
when a model is built. The torchvision wheel pinned beside the CPU torch is a CUDA build
whose C++ extension cannot load; :func:`import_torchvision` declares the two operator
schemas its import registers fakes for, so that the pure-Python model definitions load
(timm and transformers import torchvision too). No zoo model calls those operators.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ZooModel", "MODELS", "names", "build", "import_torchvision"]

#: The fake schemas torchvision's ``_meta_registrations`` needs (see the module docstring).
_TORCHVISION_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_FAKE_LIBRARIES: list[Any] = []  # keeps the declared schemas alive


def import_torchvision() -> Any:
    """``import torchvision``, declaring its two missing operator schemas first when its C++
    extension cannot provide them (a CUDA wheel beside a CPU torch). Idempotent."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
    for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[key]  # the failed import left half-initialized modules behind
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_SCHEMAS:
        lib.define(schema)
    _FAKE_LIBRARIES.append(lib)
    return importlib.import_module("torchvision")


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: ``make(size)`` returns ``(model, args, kwargs)``."""

    name: str
    library: str
    make: Callable[[str], tuple[torch.nn.Module, tuple, dict]] = field(repr=False)


def _image(size: str, tiny: int = 64, batch: int = 1) -> torch.Tensor:
    side = 224 if size == "full" else tiny
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def _tokens(vocab: int, seq: int = 16) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones(1, seq, dtype=torch.int64)}


# -- torchvision ---------------------------------------------------------------------------
def _tv(ctor: str, tiny_side: int = 64, **kwargs: Any) -> Callable[[str], tuple]:
    def make(size: str) -> tuple:
        models = import_torchvision().models
        return getattr(models, ctor)(weights=None, **kwargs), (_image(size, tiny_side),), {}
    return make


def _tv_vit(size: str) -> tuple:
    from_tv = import_torchvision().models
    if size == "full":
        return from_tv.vit_b_16(weights=None), (_image(size),), {}
    model = from_tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                      hidden_dim=64, mlp_dim=128, num_classes=10)
    return model, (_image(size, 32),), {}


# -- timm ----------------------------------------------------------------------------------
def _timm(name: str, tiny: dict[str, Any], tiny_side: int) -> Callable[[str], tuple]:
    def make(size: str) -> tuple:
        import_torchvision()
        import timm
        kwargs = {} if size == "full" else tiny
        return timm.create_model(name, pretrained=False, **kwargs), (_image(size, tiny_side),), {}
    return make


# -- Hugging Face transformers ---------------------------------------------------------------
def _hf(config_name: str, model_name: str, tiny: dict[str, Any],
        inputs: Callable[[Any], dict[str, torch.Tensor]]) -> Callable[[str], tuple]:
    def make(size: str) -> tuple:
        import_torchvision()
        import transformers
        torch.manual_seed(0)
        cfg_cls = getattr(transformers, config_name)
        config = cfg_cls(**({} if size == "full" else tiny), use_cache=False)
        model = getattr(transformers, model_name)(config)
        return model, (), inputs(config)
    return make


def _whisper_inputs(config: Any) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    frames = 2 * config.max_source_positions
    return {"input_features": torch.randn(1, config.num_mel_bins, frames, generator=g),
            "decoder_input_ids": torch.randint(0, config.vocab_size, (1, 8), generator=g)}


def _t5_inputs(config: Any) -> dict[str, torch.Tensor]:
    inputs = _tokens(config.vocab_size)
    inputs["decoder_input_ids"] = inputs["input_ids"][:, :8].clone()
    return inputs


def _wav2vec2_inputs(config: Any) -> dict[str, torch.Tensor]:
    return {"input_values": torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))}


_SMALL_TEXT = dict(vocab_size=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MODELS: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("resnet18", "torchvision", _tv("resnet18")),
    ZooModel("mobilenet_v3_small", "torchvision", _tv("mobilenet_v3_small")),
    ZooModel("efficientnet_b0", "torchvision", _tv("efficientnet_b0")),
    ZooModel("convnext_tiny", "torchvision", _tv("convnext_tiny")),
    ZooModel("vit_tv_tiny", "torchvision", _tv_vit),
    ZooModel("vit_tiny_timm", "timm", _timm("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2,
                                                                          num_classes=10), 32)),
    ZooModel("mobilevit_xxs", "timm", _timm("mobilevit_xxs", dict(num_classes=10), 64)),
    ZooModel("efficientformerv2_s0", "timm", _timm("efficientformerv2_s0", dict(img_size=64, num_classes=10), 64)),
    ZooModel("gpt2", "transformers", _hf("GPT2Config", "GPT2Model", dict(
        _SMALL_TEXT, n_layer=2, n_embd=64, n_head=4, n_positions=64), lambda c: _tokens(c.vocab_size))),
    ZooModel("bert", "transformers", _hf("BertConfig", "BertModel", dict(
        _SMALL_TEXT, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64), lambda c: _tokens(c.vocab_size))),
    ZooModel("distilbert", "transformers", _hf("DistilBertConfig", "DistilBertModel", dict(
        _SMALL_TEXT, n_layers=2, dim=64, n_heads=4, hidden_dim=128, max_position_embeddings=64),
        lambda c: _tokens(c.vocab_size))),
    ZooModel("t5", "transformers", _hf("T5Config", "T5Model", dict(
        _SMALL_TEXT, num_layers=2, num_decoder_layers=2, d_model=64, d_kv=16, d_ff=128, num_heads=4), _t5_inputs)),
    ZooModel("llama", "transformers", _hf("LlamaConfig", "LlamaModel", dict(
        _SMALL_TEXT, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=64), lambda c: _tokens(c.vocab_size))),
    ZooModel("whisper", "transformers", _hf("WhisperConfig", "WhisperModel", dict(
        _SMALL_TEXT, num_mel_bins=16, encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=32,
        max_target_positions=32, decoder_start_token_id=3), _whisper_inputs)),
    ZooModel("wav2vec2", "transformers", _hf("Wav2Vec2Config", "Wav2Vec2Model", dict(
        _SMALL_TEXT, num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4), _wav2vec2_inputs)),
]}


def names(library: str | None = None) -> list[str]:
    """The zoo's model names (of one ``library``: "torchvision", "timm" or "transformers")."""
    return [n for n, m in MODELS.items() if library is None or m.library == library]


def build(name: str, size: str = "tiny") -> tuple[torch.nn.Module, tuple, dict]:
    """``(model, args, kwargs)`` for zoo model ``name``: random weights, ``eval()`` mode.

    ``size``: "tiny" (the small configuration the tests use) or "full" (the library's
    default configuration and 224x224 images).
    """
    if name not in MODELS:
        raise KeyError(f"no zoo model {name!r}; the zoo has {', '.join(MODELS)}")
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    torch.manual_seed(0)
    model, args, kwargs = MODELS[name].make(size)
    return model.eval(), args, kwargs
