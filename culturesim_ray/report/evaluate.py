"""Agreement with expert judgements (SPEC R2, S2). Pure: no ray.

Gold pairs (culture_a, culture_b, score[, theme]) are compared with the
similarity each method assigns to the same pairs (statistics in
`report.stats`, conventions there; every value is finite):

- Spearman and Kendall (tau-b) over all gold pairs, each with a 95% bootstrap
  interval over cultures, and a Mantel permutation p-value for the Spearman;
- recall@k and nDCG@k per culture over its gold partners, averaged.

Distance-type gold (`gold_kind="distance"`, bigger = less similar) is negated
first, so every metric reads "higher = better agreement".

Methods: the trained model's heads (cosine; the general head by the run's culture
map, `ops.modality_cosine.ModalityCosine`: each pair's raw part over the
modalities both cultures have, the learned part at the run's `map_learned`, as
the all-pairs job does), the TF-IDF baseline (fitted on
the corpus texts, mean per culture, cosine), the mean of raw embeddings under
every similarity function of SPEC S1, and methods with precomputed (C, C)
matrices. The learned similarity and the per-dimension metric (`ops.metric`, as
`culturesim fit-metric` fits it) are fitted on gold pairs, so each is scored by
cross-validation twice: leave-cultures-out (the headline, `cv="cultures"`: no
pair touching a scored culture is in its model's training set) and pair-level
(`cv="pairs"`: a culture's other gold pairs train its model, interpolation).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray.report.evaluate_view import format_table, plot_evaluation
from culturesim_ray.report.fitted_cv import (  # noqa: F401  (re-exported)
    CV_LABELS,
    FITTED,
    culture_folds,
    cv_matrix,
    learned_cv_matrix,
    metric_cv_matrix,
)
from culturesim_ray.report.gold_file import (  # noqa: F401  (re-exported)
    GENERAL,
    GoldError,
    GoldSet,
    read_gold_rows,
    validate_gold,
)
from culturesim_ray.report.method import Method, Vectors
from culturesim_ray.report.stats import (  # noqa: F401  (re-exported)
    GOLD_KINDS,
    Matrix,
    Pair,
    bootstrap_difference,
    ndcg_at_k,
    orient,
    pair_scores,
    rank_correlations,
    recall_at_k,
    score_matrix,
)
from culturesim_ray.schema import corpus_keys

# ---------------------------------------------------------------- methods


def vector_matrix(vectors: Vectors, sim: Callable[[Any, Any], Any]) -> Matrix:
    """(cultures, (C, C) float64) similarity matrix of the vectors under `sim`."""
    import torch

    cultures, x = vectors
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return list(cultures), sim(t, t).double().numpy()


def _predictions(m: Method, src: Any, scored: Sequence[Pair], folds: int,
                 seed: int) -> dict[str, tuple[str, Matrix]]:
    """cv label ("" unless fitted on gold) -> (row name, predicted matrix) of one method
    and head."""
    from culturesim_ray.ops import similarity as S

    if m.matrices:
        return {"": (m.name, src)}
    if m.similarity in FITTED:
        return {cv: (f"{m.name} ({label})", FITTED[m.similarity](src, scored, cv, folds, seed))
                for cv, label in CV_LABELS.items()}
    return {"": (m.name, vector_matrix(src, S.get(m.similarity)))}


def evaluate(gold: GoldSet, methods: Sequence[Method], k: int = 3,
             progress: Callable[[str], None] | None = None, gold_kind: str | None = None,
             n_boot: int = 1000, n_perm: int = 999, folds: int = 5,
             seed: int = 0, reference: str | None = None) -> list[dict[str, Any]]:
    """One row per (method, theme) with `score_matrix`'s fields plus method, kind,
    similarity, cv ("cultures" / "pairs" for the two rows of a similarity fitted on gold,
    "" otherwise) and theme. Themes a method has no scores for are left out.
    gold_kind: "similarity" / "distance" (default: the GoldSet's kind).
    reference: the name of one of `methods` (e.g. the raw baseline); every row of a
    theme the reference scores then also gets vs, delta_spearman, delta_lo, delta_hi
    (`stats.bootstrap_difference`: the row's Spearman minus the reference's on the
    gold pairs both score, with its paired 95% interval) and delta_pairs."""
    gold_kind = gold_kind or gold.kind
    themes = {t: orient(p, gold_kind) for t, p in sorted(gold.by_theme().items())}
    ref: dict[str, tuple[set[str], Matrix]] = {}
    if reference is not None:
        by_name = [m for m in methods if m.name == reference]
        if not by_name:
            raise ValueError(f"evaluate: no method named {reference!r} to compare against")
        r = by_name[0]
        for theme, pairs in themes.items():
            src = r.matrices.get(theme) if r.matrices else r.vectors.get(theme)
            if src is not None:
                ref[theme] = (set(src[0]),
                              next(iter(_predictions(r, src, pairs, folds, seed).values()))[1])
    rows = []
    for m in methods:
        if progress:
            progress(m.name)
        for theme, pairs in themes.items():
            src = m.matrices.get(theme) if m.matrices else m.vectors.get(theme)
            if src is None:
                continue
            have = set(src[0])
            scored = [p for p in pairs if p[0] in have and p[1] in have]
            if len(scored) < 2:
                continue
            for cv, (name, pred) in _predictions(m, src, scored, folds, seed).items():
                row = {"method": name, "kind": m.kind, "similarity": m.similarity,
                       "cv": cv, "theme": theme,
                       **score_matrix(scored, pred, k, n_boot, n_perm, seed)}
                if theme in ref:
                    both = [p for p in scored if p[0] in ref[theme][0] and p[1] in ref[theme][0]]
                    if len(both) >= 2:
                        d = bootstrap_difference(both, pair_scores(both, pred),
                                                 pair_scores(both, ref[theme][1]), n_boot, seed)
                        row.update(vs=reference, delta_pairs=len(both),
                                   delta_spearman=d["delta"], delta_lo=d["delta_lo"],
                                   delta_hi=d["delta_hi"])
                rows.append(row)
    return rows


def similarity_methods(vectors: dict[str, Vectors], label: str) -> list[Method]:
    """One method per similarity function of SPEC S1 over the same vectors, and the
    per-dimension metric of `culturesim fit-metric` (fitted on the gold, so scored by
    cross-validation like the learned similarity)."""
    from culturesim_ray.ops import similarity as S

    return [Method(f"{label} + {name}", "similarity", vectors, name)
            for name in (*S.NAMES, "dimension_metric")]


# ---------------------------------------------------------------- a run

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


MIN_CULTURES = 3  # 3 cultures, 3 pairs: the fewest a rank correlation over pairs can use


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
        sims = {h: runs.head_similarity(model_config, h, v) for h, (_, v) in heads.items()}
        if cultures is not None:
            heads = {h: _only(v, cultures) for h, v in heads.items()}
        sim = sims.get("general", "cosine")
        if sim == "cosine":
            methods.append(Method("trained model (heads, cosine)", "model", heads))
        else:  # the run's culture map: a head's raw part over the modalities each pair
            # shares, its learned part at the run's map_learned
            mats = {h: vector_matrix(v, S.cosine if sims[h] == "cosine" else sims[h])
                    for h, v in heads.items()}
            learned = "" if sim.learned == 1.0 else f", learned x{sim.learned:g}"
            methods.append(Method(f"trained model (heads, modality cosine{learned})", "model",
                                  heads, sim.name, mats))
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
    col = t.column("vector").combine_chunks()
    x = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(col), -1)
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


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """`evaluate`'s rows as evaluation.csv: one column per field any row has (a theme
    without the reference has no delta fields: those cells stay empty)."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        fields = list(dict.fromkeys(key for r in rows for key in r))
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def gold_cultures(gold: GoldSet, gold_path: str | Path, run: int) -> set[str]:
    """The run's cultures the usable gold pairs name (of the `run` cultures it has);
    fewer than MIN_CULTURES is an error (a rank correlation over culture pairs needs
    them)."""
    covered = {c for a, b, _, _ in gold.pairs for c in (a, b)}
    if len(covered) < MIN_CULTURES:
        raise GoldError(f"{gold_path}: the usable gold pairs name {len(covered)} of the run's "
                        f"{run} cultures {sorted(covered)}; a rank correlation over culture "
                        f"pairs needs pairs over at least {MIN_CULTURES}")
    return covered


def run_evaluation(run_dir: str | Path, gold_path: str | Path, k: int = 3,
                   out: str | Path | None = None, modality: str | None = None,
                   strict: bool = False, log: Callable[[str], None] = print,
                   gold_kind: str | None = None, n_boot: int = 1000, n_perm: int = 999,
                   folds: int = 5, seed: int = 0,
                   metrics: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Evaluate every method of the run against the gold file; writes
    OUT/evaluation.csv, evaluation.json (with the gold kind and the resampling
    settings) and evaluation.png (default OUT = RUN/evaluation). metrics: files of
    `culturesim fit-metric` (fitted on other runs), each scored as one more row.
    gold_kind None: what the gold file says (`gold_file.validate_gold`). The result's
    `notes` are lines for the user beside the table (a gold kind read from the
    file; a raw baseline that runs clearly against the gold)."""
    import json

    from culturesim_ray import io
    from culturesim_ray.layout import RunLayout

    io.require_local(run_dir, "evaluate: run directory", "it reads the run's train/ files")
    if out is not None:
        io.require_local(out, "evaluate --out", "it writes the CSV, JSON and chart there")
    gold_rows = read_gold_rows(gold_path)  # a missing or broken gold file fails first
    if modality is None:
        modality = default_modality(RunLayout(str(run_dir)).embed.root)
        log(f"evaluate: raw baselines over the {modality} items (--modality to choose)")
    # the cultures the gold names: the methods read their items alone
    known = sorted(run_cultures(run_dir, modality))
    named = validate_gold(gold_rows, known, strict, str(gold_path), gold_kind)
    methods = run_methods(run_dir, modality, log=log,
                          cultures=gold_cultures(named, gold_path, len(known)))
    if metrics:
        from culturesim_ray.report.metric_file import metric_method

        methods += [metric_method(path, run_dir) for path in metrics]
    gold = validate_gold(gold_rows, known, strict, str(gold_path), gold_kind,
                         themes=sorted({h for m in methods for h in m.heads()}))
    gold_cultures(gold, gold_path, len(known))
    gold_kind = gold.kind
    notes = [f"evaluate: gold kind {gold_kind} ({gold.kind_from})"] if gold.kind_from else []
    notes += [f"evaluate: {gold.renamed_note()}"] if gold.renamed else []
    notes += [f"evaluate: {gold.asymmetric_note()}"] if gold.asymmetric else []
    for reason, n in gold.skipped.items():
        log(f"evaluate: skipped {n} gold pair(s): {reason}")
    log(f"evaluate: {len(gold.pairs)} gold pairs ({gold_kind}), {len(methods)} methods, k={k}")
    done = [0]

    def progress(name: str) -> None:
        done[0] += 1
        log(f"evaluate [{done[0]}/{len(methods)}] {name}")

    raw = [m.name for m in methods if m.kind == "baseline" and "(raw baseline)" in m.name]
    rows = evaluate(gold, methods, k, progress, gold_kind, n_boot, n_perm, folds, seed,
                    reference=raw[0] if raw else None)
    notes += kind_warning(rows, raw[0] if raw else None, gold_kind)
    out = Path(out) if out else Path(run_dir) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "evaluation.csv")
    (out / "evaluation.json").write_text(json.dumps(
        {"gold": str(gold_path), "gold_kind": gold_kind, "k": k, "pairs": len(gold.pairs),
         "skipped": gold.skipped, "renamed": gold.renamed,
         "asymmetric_pairs": len(gold.asymmetric), "n_boot": n_boot, "n_perm": n_perm,
         "folds": folds,
         "seed": seed, "rows": rows}, indent=2, default=float, allow_nan=False))
    plot_evaluation(rows, out / "evaluation.png", k)
    table = format_table(rows, k)
    log(table)
    return {"rows": rows, "table": table, "out": str(out), "skipped": gold.skipped,
            "notes": notes}


def kind_warning(rows: Sequence[dict[str, Any]], reference: str | None,
                 gold_kind: str) -> list[str]:
    """A line when the reference (raw baseline) row of the general theme agrees with
    the gold significantly the wrong way round (Spearman < 0, Mantel p >= 0.99: the
    gold's orientation looks flipped, e.g. distances read as similarities)."""
    general = [r for r in rows if r["method"] == reference and r["theme"] == GENERAL]
    if not general or not (general[0]["spearman"] < 0 and general[0]["mantel_p"] >= 0.99):
        return []
    other = "distance" if gold_kind == "similarity" else "similarity"
    return [f"evaluate: the raw baseline runs against the gold (Spearman "
            f"{general[0]['spearman']:.3f}, Mantel p {general[0]['mantel_p']:.3f}): if a "
            f"bigger gold score means {'less' if other == 'distance' else 'more'} similar, "
            f"rerun with --gold-kind {other}"]
