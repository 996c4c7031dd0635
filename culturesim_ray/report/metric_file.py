"""A metric fitted on one run's gold, saved, and scored on another run (`culturesim
fit-metric`, `culturesim evaluate --metric`): the glue around `ops.metric`.

The file is JSON: the encoder and modality whose raw culture means it weights, the
weights, the blend weight b, and what it was fitted on (run, gold file, kind,
cultures, pairs), so an evaluation can say how many cultures the two runs share
(a fit scored on its own cultures reads its gold back, not a transfer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray.ops.metric import (
    DEFAULT_B,
    blended_matrix,
    fit_dimension_weights,
    named_pair_products,
    unit_rows,
)
from culturesim_ray.report.method import Method, Vectors

FORMAT = "culturesim dimension metric v1"


def raw_means(run_dir: str | Path, modality: str) -> tuple[str, Vectors]:
    """(encoder name, (cultures, means)) of the run's `modality` items: the raw
    baseline's culture means (items L2-normalised, then averaged), every culture's,
    read file by file (`runs.culture_means`: memory grows with the cultures)."""
    from culturesim_ray import runs
    from culturesim_ray.layout import RunLayout

    embed = RunLayout(str(run_dir)).embed.root
    names, means = runs.culture_means(embed, modality)
    if not names:
        raise FileNotFoundError(f"{embed}: no {modality} embeddings")
    encoder = runs.embed_manifest(embed)["encoders"][modality]["name"]
    return encoder, (names, means)


def fit_metric(run_dir: str | Path, gold_path: str | Path, out: str | Path,
               gold_kind: str | None = None, modality: str = "text", b: float = DEFAULT_B,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the weights on the run's raw `modality` means and the gold's general pairs;
    write the metric file to `out`; return its content."""
    from culturesim_ray import io
    from culturesim_ray.report.gold_file import (
        GENERAL,
        GoldError,
        read_gold_rows,
        validate_gold,
    )
    from culturesim_ray.report.stats import orient

    io.require_local(run_dir, "fit-metric: run directory", "it reads the run's embeddings")
    encoder, (names, means) = raw_means(run_dir, modality)
    gold = validate_gold(read_gold_rows(gold_path), names, source=str(gold_path),
                         gold_kind=gold_kind)
    gold_kind = gold.kind  # as given, or as the file says (None)
    if gold.kind_from:
        log(f"fit-metric: gold kind {gold_kind} ({gold.kind_from})")
    if gold.renamed:
        log(f"fit-metric: {gold.renamed_note()}")
    if gold.asymmetric:
        log(f"fit-metric: {gold.asymmetric_note()}")
    pairs = orient([(a, c, s) for a, c, s, theme in gold.pairs if theme == GENERAL],
                   gold_kind)
    covered = sorted({c for p in pairs for c in p[:2]})
    if len(covered) < 3:
        raise GoldError(f"{gold_path}: the general gold pairs name {len(covered)} of the "
                        f"run's cultures; fitting a metric needs pairs over at least 3")
    for reason, n in gold.skipped.items():
        log(f"fit-metric: skipped {n} gold pair(s): {reason}")
    w = fit_dimension_weights(named_pair_products(names, means, pairs),
                              np.array([p[2] for p in pairs]))
    lco = leave_cultures_out(names, means, pairs, b)
    content = {"format": FORMAT, "encoder": encoder, "modality": modality,
               "b": b, "weights": [float(v) for v in w],
               "fitted_on": {"run": str(Path(run_dir).absolute()), "gold": str(gold_path),
                             "gold_kind": gold_kind, "pairs": len(pairs),
                             "cultures": covered},
               "leave_cultures_out": lco}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_open(str(out), mode="w") as fh:
        json.dump(content, fh, indent=1)
    log(f"fit-metric: {len(w)} weights from {len(pairs)} gold pairs over {len(covered)} "
        f"cultures ({encoder} {modality} means) -> {out}")
    log(f"fit-metric: on cultures left out of the fit ({lco['folds']} folds), Spearman with "
        f"the gold {lco['spearman']:.3f} against the cosine's {lco['cosine_spearman']:.3f} "
        f"on the same pairs")
    return content


def leave_cultures_out(names: list[str], means: np.ndarray, pairs: list[tuple[str, str, float]],
                       b: float, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """How the metric does on cultures it was not fitted on: its leave-cultures-out
    scores (`report.fitted_cv.metric_cv_matrix`) and the cosine of the same means,
    Spearman with the (oriented) gold over the gold pairs."""
    from culturesim_ray.report.fitted_cv import culture_folds, metric_cv_matrix
    from culturesim_ray.report.stats import pair_scores, spearman

    gold = [p[2] for p in pairs]
    cv = metric_cv_matrix((names, means), pairs, "cultures", folds, seed, b=b)
    x = unit_rows(means)
    cos = (names, x @ x.T)
    n_folds = len(set(culture_folds(cv[0], folds, seed).values()))
    return {"folds": n_folds, "seed": seed,
            "spearman": spearman(gold, pair_scores(pairs, cv)),
            "cosine_spearman": spearman(gold, pair_scores(pairs, cos))}


def read_metric(path: str | Path) -> dict[str, Any]:
    """A metric file, checked; ValueError naming the file and what is wrong."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"metric file {path}: cannot read it ({exc})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"metric file {path}: not a metric written by `culturesim fit-metric`")
    w = content.get("weights")
    if not isinstance(w, list) or not w or not all(
            isinstance(v, int | float) and np.isfinite(v) for v in w):
        raise ValueError(f"metric file {path}: 'weights' must be a list of finite numbers")
    return content


def check_fits(metric: dict[str, Any], encoder: str | None, dim: int | None, what: str) -> None:
    """ValueError naming both when a metric (`read_metric`) was fitted on vectors of
    another encoder or dimension than a run's (`dim` None: not known yet)."""
    want = len(metric["weights"])
    if encoder != metric["encoder"] or (dim is not None and dim != want):
        raise ValueError(f"{what}: fitted on {metric['encoder']} {metric['modality']} "
                         f"vectors ({want} dimensions); this run's are "
                         f"{encoder or 'not embedded'}" + (f" ({dim})" if dim is not None else ""))


def metric_method(path: str | Path, run_dir: str | Path,
                  cultures: Collection[str] | None = None) -> Method:
    """The evaluation row of the metric in `path` on the run's raw means of the
    metric's modality; refuses another encoder or dimension. Its z-scores are over
    the pairs of every culture of the run (as `culturesim allpairs --metric`
    standardises them); cultures: the matrix over these alone (an evaluation's)."""
    metric = read_metric(path)
    encoder, (names, means) = raw_means(run_dir, metric["modality"])
    check_fits(metric, encoder, means.shape[1], f"metric file {path}")
    fit = metric["fitted_on"]
    shared = len(set(fit["cultures"]) & set(names))
    note = ("no culture in common" if not shared
            else f"{shared} culture(s) in common: not a transfer for those")
    name = (f"metric fitted on {Path(fit['run']).name}'s gold ({fit['pairs']} pairs; "
            f"{note}), b={metric['b']:g}")
    rows = (np.arange(len(names)) if cultures is None
            else np.flatnonzero(np.isin(names, sorted(cultures))))
    chosen = [names[i] for i in rows]
    matrix = blended_matrix(means[rows], np.asarray(metric["weights"]), float(metric["b"]),
                            fit_on=means)
    return Method(name, "readout", {"general": (chosen, means[rows])},
                  matrices={"general": (chosen, matrix)})
