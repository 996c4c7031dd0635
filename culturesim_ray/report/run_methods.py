"""The methods `culturesim evaluate` scores on a run directory: the trained model's
heads (RUN/train), the TF-IDF baseline, the raw culture means under every S1
similarity and the item-level read-outs (RUN/embed), read for the cultures the
gold names alone (`run_methods`), and the run's cultures read without a vector
(`run_cultures`, `default_modality`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray.report.method import Method, Vectors, vector_matrix
from culturesim_ray.schema import corpus_keys
from culturesim_ray.vectors import as_matrix

MIN_CULTURES = 3  # 3 cultures, 3 pairs: the fewest a rank correlation over pairs can use


def similarity_methods(vectors: dict[str, Vectors], label: str) -> list[Method]:
    """One method per similarity function of SPEC S1 over the same vectors, and the
    per-dimension metric of `culturesim fit-metric` (fitted on the gold, so scored by
    cross-validation like the learned similarity)."""
    from culturesim_ray.ops import similarity as S

    return [Method(f"{label} + {name}", "similarity", vectors, name)
            for name in (*S.NAMES, "dimension_metric")]


def _pooled(vectors: np.ndarray, cultures: Sequence[str],
            themes: Sequence[Sequence[str] | None] | None) -> dict[str, Vectors]:
    from culturesim_ray.ops.pooling import pool

    return pool(vectors, cultures, themes, "mean")


def _only(vectors: Vectors, cultures: Collection[str]) -> Vectors:
    """The rows of `vectors` whose culture is one of `cultures`, in order."""
    names, v = vectors
    keep = [i for i, c in enumerate(names) if c in cultures]
    return [names[i] for i in keep], v[keep]


def embedded_texts(rows: Iterable[dict[str, Any]], source_rows: Sequence[str]
                   ) -> tuple[list[int], list[str]]:
    """The corpus texts of the embedded text items, whose corpus rows are
    `source_rows` (the embeddings' `source_row`), in corpus order (rows may be
    streamed: only the texts kept are held): (each text's
    position in source_rows, the texts). Rows the embed job quarantined have no
    embedded item, so the TF-IDF baseline scores the raw baseline's items. Corpus
    order, because the LSA fit depends on the order of its rows."""
    where = {r: j for j, r in enumerate(source_rows)}
    keep: list[int] = []
    texts: list[str] = []
    for r in rows:
        j = where.get(r.get("_source_row"))
        if j is not None:
            keep.append(j)
            texts.append(corpus_keys(r)["text"])  # a spreadsheet's `Text` column too
    return keep, texts


def _source_rows(embed: str, modality: str, cultures: Collection[str] | None = None
                 ) -> list[str] | None:
    """Each embedded item's corpus row (the embeddings' order; of `cultures` only when
    given), or None for an older embed run whose files do not record it."""
    import pyarrow as pa

    from culturesim_ray import runs

    try:
        table = runs.read_embeddings(embed, modality, columns=["source_row"],
                                     cultures=cultures)[modality]
    except (pa.ArrowInvalid, KeyError):
        return None
    return table.column("source_row").to_pylist()


def default_modality(embed: str) -> str:
    """The modality whose raw culture means are the baselines when none is named: the
    one that covers the most cultures (so the baselines score the most gold pairs),
    text on a tie, then the one with the most embedded items."""
    import pyarrow.compute as pc

    from culturesim_ray import runs

    cover = {m: (len(pc.unique(t.column("culture"))), m == "text", t.num_rows)
             for m, t in runs.read_embeddings(embed, columns=["culture"]).items() if t.num_rows}
    if not cover:
        raise FileNotFoundError(f"{embed}: no embedded items to evaluate")
    return max(sorted(cover), key=cover.__getitem__)


def run_cultures(run_dir: str | Path, modality: str) -> set[str]:
    """The cultures a run's methods can score: the trained model's (RUN/train) and
    those of the embedded `modality` items, read without any vector."""
    import pyarrow.compute as pc

    from culturesim_ray import io, runs
    from culturesim_ray.layout import RunLayout

    layout = RunLayout(str(run_dir))
    names: set[str] = set()
    if Path(layout.train.culture_embeddings).exists():
        table = io.read_table(layout.train.culture_embeddings, columns=["culture"])
        names |= set(pc.unique(table.column("culture")).to_pylist())
    for t in runs.read_embeddings(layout.embed.root, modality, columns=["culture"]).values():
        names |= set(pc.unique(t.column("culture")).to_pylist())
    return names


def run_methods(run_dir: str | Path, modality: str | None = None, tfidf_dim: int = 256,
                log: Callable[[str], None] = print,
                cultures: Collection[str] | None = None) -> list[Method]:
    """The trained model (RUN/train), the TF-IDF baseline and the raw-embedding
    methods (RUN/embed, `modality`; None: `default_modality`) of a run directory.
    cultures: score these alone (the gold's): the other cultures' items and texts
    are not read, so memory grows with the gold, not the corpus (the model's culture
    map is still fitted on every culture, as `culturesim allpairs` fits it)."""
    from culturesim_ray import io, runs, tables
    from culturesim_ray.layout import RunLayout
    from culturesim_ray.ops import similarity as S

    run = Path(run_dir)
    methods: list[Method] = []
    layout = RunLayout(str(run))
    model_emb = Path(layout.train.culture_embeddings)
    if model_emb.exists():
        heads = runs.read_culture_embeddings(model_emb)
        model_config = io.read_json(layout.train.model_config)
        whitening = runs.read_map_whitening(layout.train.root, model_config)
        sims = {h: runs.head_similarity(model_config, h, v, whitening)
                for h, (_, v) in heads.items()}
        if cultures is not None:
            heads = {h: _only(v, cultures) for h, v in heads.items()}
        sim = sims.get("general", "cosine")
        if sim == "cosine":
            methods.append(Method("trained model (heads, cosine)", "model", heads))
        else:  # the run's culture map: a head's raw part over the modalities each pair
            # shares (through the run's whitening), its learned part at map_learned or at
            # map_learned_share of the raw spread
            mats = {h: vector_matrix(v, S.cosine if sims[h] == "cosine" else sims[h])
                    for h, v in heads.items()}
            learned = "" if sim.learned == 1.0 else f", learned x{sim.learned:.3g}"
            if sim.learned_share:
                learned += f" ({sim.learned_share:g} of the raw spread)"
            white = ", whitened raw means" if whitening else ""
            methods.append(Method(f"trained model (heads, modality cosine{learned}{white})",
                                  "model", heads, sim.name, mats))
    else:
        log(f"evaluate: no trained model at {model_emb}; model row left out")
    embed = layout.embed.root
    if modality is None:
        modality = default_modality(embed)
        log(f"evaluate: raw baselines over the {modality} items (--modality to choose)")
    embedded = runs.read_embeddings(embed, modality, cultures=cultures)
    if modality not in embedded:
        raise FileNotFoundError(f"{embed}: no {modality} embeddings to evaluate")
    t = embedded[modality]
    x = as_matrix(t.column("vector"), f"{embed} ({modality} embeddings)")
    themes = t.column("themes").to_pylist() if "themes" in t.column_names else None
    item_cultures = t.column("culture").to_pylist()
    names = sorted(set(item_cultures))
    if len(names) < MIN_CULTURES:
        raise ValueError(f"{embed}: the {modality} items are of {len(names)} culture(s) {names}; "
                         f"agreement with gold over culture pairs needs at least {MIN_CULTURES}")
    raw = _pooled(x, item_cultures, themes)
    label = f"mean {runs.embed_manifest(embed)['encoders'][modality]['name']}"
    if modality == "text":
        corpus = runs.embed_manifest(embed).get("corpus")
        found = bool(corpus) and io.exists(corpus)
        source = _source_rows(embed, modality, cultures) if found else None
        if found and source is None:
            log(f"evaluate: {embed} records no source rows (an older embed run); "
                "TF-IDF baseline left out")
        elif source is not None:
            from culturesim_ray.encoders.tfidf import TfidfEncoder

            keep, texts = embedded_texts(tables.iter_corpus_rows(corpus), source)
            enc = TfidfEncoder.fit(texts, dim=tfidf_dim)
            vec = enc.encode(texts).vectors
            methods.append(Method("TF-IDF (LSA) mean, cosine", "baseline", _pooled(
                vec, [item_cultures[j] for j in keep],
                [themes[j] for j in keep] if themes is not None else None)))
        else:
            log(f"evaluate: corpus {corpus} not found; TF-IDF baseline left out")
    methods.append(Method(f"{label} (raw baseline), cosine", "baseline", raw, "cosine"))
    methods += [m for m in similarity_methods(raw, label) if m.similarity != "cosine"]
    from culturesim_ray.report.item_methods import readout_methods, set_level_methods

    items = f"{runs.embed_manifest(embed)['encoders'][modality]['name']} items"
    methods += set_level_methods(x, item_cultures, items)
    methods += readout_methods(x, item_cultures, themes, items, log)
    return methods
