"""Which text encoder reads a corpus: the embed job's vocabulary sample and the
text encoder `auto` (glue over `encoders.coverage`; the rule itself is pure).

`text_coverage` checks up to COVERAGE_SAMPLE texts, from up to COVERAGE_PARTS
staged partitions spread over the corpus, against a text encoder's vocabulary
in Ray tasks (tokenizer only, no model). `resolve_text_encoder` turns `auto`
into an encoder: minilm when adapted MiniLM weights or an image alignment are
set, else the one the run was embedded with when it has a fingerprint (a rerun
keeps its encoder, so a resumed run never mixes two), else `choose` on the
sample: minilm, or e5 (multilingual) when at least NOTE_SHARE of it is poorly
covered by MiniLM's English vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from culturesim_ray import io
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.encoders.coverage import NOTE_SHARE, CoverageCount, spread
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.pipeline.embed_stage import _map

COVERAGE_SAMPLE = 2000  # texts checked against a text encoder's vocabulary (encoders.coverage)
COVERAGE_PARTS = 16  # from at most this many partitions, evenly spaced (a bounded cost at any N)


def _coverage_part(part: pa.Table, encoder: str, kwargs: dict[str, Any],
                   limit: int) -> CoverageCount:
    """The vocabulary check of `encoder` on the first `limit` texts of one partition."""
    texts = [t for t in part.column("text").slice(0, limit).to_pylist() if isinstance(t, str)]
    check, lengths = registry.coverage_check(encoder), registry.length_check(encoder)
    return CoverageCount.of(encoder, texts, check(texts, **kwargs),
                            lengths(texts, **kwargs) if lengths is not None else None)


def text_coverage(todo: list[Any], cfg: EmbedConfig) -> CoverageCount | None:
    """The sample of the texts to embed (`todo`: staged partitions' refs), checked
    against cfg's text encoder; None when the encoder has no check (a multilingual
    or corpus-fitted encoder) or there is nothing to embed."""
    encoder = cfg.encoder("text")
    if registry.coverage_check(encoder) is None or not todo:
        return None
    kwargs = registry.encoder_kwargs(encoder, cfg)
    parts = [todo[i] for i in spread(len(todo), COVERAGE_PARTS)]
    limit = math.ceil(COVERAGE_SAMPLE / len(parts))
    return CoverageCount.merge(encoder, _map(_coverage_part, parts, encoder, kwargs, limit))


def choose(coverage: CoverageCount | None) -> tuple[str, str]:
    """(encoder, why) for `auto` from the default encoder's vocabulary sample."""
    default = registry.DEFAULTS["text"]
    if coverage is None or not coverage.sampled:
        return default, "no texts to sample"
    share = f"{coverage.poor} of {coverage.sampled} sampled texts ({coverage.share:.0%})"
    if coverage.share >= NOTE_SHARE:
        scripts = ", ".join(s.lower() for s, _ in coverage.scripts.most_common(3))
        return registry.AUTO_FALLBACK, (f"{share} are cut by {default}'s vocabulary into single "
                                        f"characters or unknown tokens ({scripts} script)")
    return default, f"{share} poorly covered by {default}'s vocabulary"


def recorded_text_encoder(layout: EmbedLayout, cfg: EmbedConfig) -> str | None:
    """The text encoder the run at `layout` recorded in its fingerprint (None: none)."""
    if not io.exists(layout.fingerprint, cfg.s3):
        return None
    return io.read_json(layout.fingerprint, cfg.s3).get("text", {}).get("encoder")


def resolve_text_encoder(cfg: EmbedConfig, layout: EmbedLayout,
                         todo: list[Any] | None) -> tuple[EmbedConfig, dict[str, Any] | None,
                                                          CoverageCount | None]:
    """cfg with `auto` resolved, the choice's record for the manifest (None: the
    encoder was given) and the sample it looked at (None: none taken). `todo`: the
    staged partitions' text rows to embed (`ingest.select`); without them (before
    the corpus is read) only what needs no sample is resolved: minilm for
    text_model / image_align, or the run's recorded encoder; cfg keeps `auto`
    otherwise."""
    if cfg.text_encoder != registry.AUTO:
        return cfg, None, None
    fixed = cfg.auto_text_encoder_fixed  # first: a run of another encoder is then refused
    if fixed is not None:
        return (cfg.with_text_encoder(fixed),
                {"given": registry.AUTO, "chosen": fixed,
                 "why": "adapted MiniLM weights or an image alignment are set"}, None)
    recorded = recorded_text_encoder(layout, cfg)
    if recorded is not None:
        return (cfg.with_text_encoder(recorded),
                {"given": registry.AUTO, "chosen": recorded,
                 "why": "the encoder this run was embedded with"}, None)
    if todo is None:
        return cfg, None, None
    coverage = text_coverage(todo, cfg.with_text_encoder(registry.DEFAULTS["text"]))
    chosen, why = choose(coverage)
    record = {"given": registry.AUTO, "chosen": chosen, "why": why}
    return cfg.with_text_encoder(chosen), record, coverage


def choice_line(choice: dict[str, Any]) -> str:
    """'ENCODER (auto: WHY)': what `auto` resolved to, as the job and the check say it."""
    return f"{choice['chosen']} (auto: {choice['why']})"


def coverage_notes(sampled: CoverageCount | None, todo: list[Any],
                   cfg: EmbedConfig) -> tuple[CoverageCount | None, list[str]]:
    """The vocabulary sample of cfg's (resolved) text encoder, `sampled` reused when it
    is that encoder's (the sample `auto` looked at), and the notes it gives: texts the
    vocabulary cuts into characters, texts longer than the encoder reads."""
    coverage = (sampled if sampled is not None and sampled.encoder == cfg.text_encoder
                else text_coverage(todo, cfg))
    if coverage is None:
        return None, []
    return coverage, [n for n in (coverage.note(registry.any_script_text_encoders()),
                                  coverage.length_note()) if n]
