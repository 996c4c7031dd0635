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

from collections.abc import Callable, Sequence
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
from culturesim_ray.report.method import Method, Vectors, vector_matrix  # noqa: F401  (re-exported)
from culturesim_ray.report.run_methods import (
    MIN_CULTURES,
    default_modality,
    run_cultures,
    run_methods,
)
from culturesim_ray.report.stats import (  # noqa: F401  (re-exported)
    GOLD_KINDS,
    Matrix,
    Pair,
    bootstrap_difference,
    bootstrap_resamples,
    bootstrap_spearman,
    ndcg_at_k,
    orient,
    pair_scores,
    rank_correlations,
    recall_at_k,
    score_matrix,
)

# ---------------------------------------------------------------- methods


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
    # the reference's pair scores and Spearman resamples, once per set of pairs
    ref_resampled: dict[tuple[Pair, ...], tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}
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
            both = ([p for p in scored if p[0] in ref[theme][0] and p[1] in ref[theme][0]]
                    if theme in ref else [])
            key = tuple(both)
            for cv, (name, pred) in _predictions(m, src, scored, folds, seed).items():
                # one pass over the resamples: the row's intervals and, when both ==
                # scored, its side of the paired difference
                scores = pair_scores(scored, pred)
                res = bootstrap_resamples(scored, scores, n_boot, seed)
                row = {"method": name, "kind": m.kind, "similarity": m.similarity,
                       "cv": cv, "theme": theme,
                       **score_matrix(scored, pred, k, n_boot, n_perm, seed, resampled=res)}
                same = len(both) == len(scored)  # both filters scored: then it is scored
                p_both = (scores if same else pair_scores(both, pred)) if len(both) >= 2 else None
                own = res["spearman"] if same else None
                if p_both is not None:
                    if key not in ref_resampled:  # the reference's, once a theme
                        r = pair_scores(both, ref[theme][1])
                        ref_resampled[key] = (r, bootstrap_spearman(both, r, n_boot, seed))
                    r, r_resampled = ref_resampled[key]
                    d = bootstrap_difference(both, p_both, r, n_boot, seed,
                                             ref_resampled=r_resampled, pred_resampled=own)
                    row.update(vs=reference, delta_pairs=len(both), delta_spearman=d["delta"],
                               delta_lo=d["delta_lo"], delta_hi=d["delta_hi"])
                rows.append(row)
    return rows


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
    from culturesim_ray.progress import advance

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
    covered = gold_cultures(named, gold_path, len(known))
    methods = run_methods(run_dir, modality, log=log, cultures=covered)
    if metrics:
        from culturesim_ray.report.metric_file import metric_method

        methods += [metric_method(path, run_dir, cultures=covered) for path in metrics]
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

    def progress(name: str) -> None:  # called as each method starts: the one before is done
        if done[0]:
            advance(1, len(methods))
        done[0] += 1
        log(f"evaluate [{done[0]}/{len(methods)}] {name}")

    raw = [m.name for m in methods if m.kind == "baseline" and "(raw baseline)" in m.name]
    rows = evaluate(gold, methods, k, progress, gold_kind, n_boot, n_perm, folds, seed,
                    reference=raw[0] if raw else None)
    advance(done[0] and 1, len(methods))
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
