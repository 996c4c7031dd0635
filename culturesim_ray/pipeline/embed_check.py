"""`culturesim embed --check`: the embed job's reading, validation and text sample,
without embedding or writing anything (glue over the job's own stages: the same
rules, so the check finds what the run would).

The corpus is read and validated by the same Ray tasks (`embed_stage._stage`),
so the rows it counts as usable or bad are those a run would embed or
quarantine (an image or melody file that is not there too; a file that is
there but does not decode is found only by reading it, as the run does), and an
output directory that holds vectors already is read to say
how many a run would skip or why it would be refused. The driver receives
counts: per (status, modality, field), per (culture, modality), the first few
bad rows, and the vocabulary sample's summary.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import partial
from typing import Any

from culturesim_ray import fingerprint, ingest, io, tables
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.names import alike_note
from culturesim_ray.pipeline.embed_choice import (
    choice_line,
    coverage_notes,
    resolve_text_encoder,
)
from culturesim_ray.pipeline.embed_report import CheckReport
from culturesim_ray.pipeline.embed_stage import _map, _map_refs, stage_counted
from culturesim_ray.pipeline.embed_state import vector_settings
from culturesim_ray.schema import MODALITIES
from culturesim_ray.uris import UriRoots

EXAMPLES = 3  # bad rows quoted


def run_check(corpus: str, out: str, cfg: EmbedConfig | None = None, log: Any = print,
              address: str | None = None) -> CheckReport:
    """What `run_embed(corpus, out, cfg)` would embed, quarantine and note."""
    from culturesim_ray.pipeline.ray_env import init_ray

    cfg = cfg or EmbedConfig()
    layout = EmbedLayout(out)
    files = tables.list_corpus_files(corpus, cfg.s3)
    roots = UriRoots.of(corpus, cfg.uri_roots)
    init_ray(address)
    staged, counts = stage_counted(files, roots, layout, cfg)
    log(f"read {sum(counts.values())} rows from {corpus} ({len(files)} file(s))")
    usable = {m: counts[("todo", m, None)] + counts[("done", m, None)] for m in MODALITIES}
    reasons: Counter[str] = Counter()
    for (status, _, field), n in counts.items():
        if status == "bad":
            reasons[field] += n
    examples = sorted(e for part in _map(ingest.first_bad, staged, EXAMPLES) for e in part)
    items: dict[str, dict[str, int]] = defaultdict(dict)
    for part in _map(ingest.culture_counts, staged):
        for culture, modality, n in part:
            items[modality][culture] = items[modality].get(culture, 0) + n
    if counts[("todo", "image", None)] or counts[("todo", "sequence", None)]:
        # a file that is not there: quarantined when a run fetches it (nothing is read here)
        exists = partial(io.existing_uris, s3=cfg.s3)
        for per, first in _map(ingest.missing_files, staged, exists, EXAMPLES):
            for modality, culture, n in per:
                usable[modality] -= n
                reasons["uri"] += n
                items[modality][culture] -= n
            examples = sorted([*examples, *first])
    text_todo = (_map_refs(ingest.select, staged, "todo", "text")
                 if counts[("todo", "text", None)] else [])
    resolved, choice, sampled = resolve_text_encoder(cfg, layout, text_todo)
    encoder, notes = None, []
    if usable["text"]:
        encoder = choice_line(choice) if choice else resolved.text_encoder
        notes += coverage_notes(sampled, text_todo, resolved)[1]
    names = alike_note({c for per in items.values() for c in per})
    notes += [names] if names else []
    return CheckReport(corpus=corpus, files=len(files), rows_in=sum(counts.values()),
                       usable=usable, done=sum(counts[("done", m, None)] for m in MODALITIES),
                       reasons=dict(sorted(reasons.items())),
                       examples=[e for _, e in examples[:EXAMPLES]],
                       items={m: {c: n for c, n in sorted(items[m].items()) if n}
                              for m in MODALITIES if any(items[m].values())},
                       encoder=encoder, notes=notes,
                       refused=_refused(layout, resolved, usable))


def _refused(layout: EmbedLayout, cfg: EmbedConfig, usable: dict[str, int]) -> str | None:
    """Why a run with cfg into `layout` would be refused (vectors of other settings
    there, in a modality the corpus has rows of), or None."""
    if not io.exists(layout.fingerprint, cfg.s3):
        return None
    recorded = io.read_json(layout.fingerprint, cfg.s3)
    if cfg.text_encoder == registry.AUTO:  # no texts to choose for: what a run records
        cfg = cfg.with_text_encoder(registry.DEFAULTS["text"])
    current = vector_settings(cfg)
    why = [f"{m}: {fingerprint.describe(recorded[m], current[m])}" for m in MODALITIES
           if usable[m] and recorded.get(m) and fingerprint.differing(recorded[m], current[m])]
    return "; ".join(why) + " (--overwrite replaces them)" if why else None
