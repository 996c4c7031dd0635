"""Similarities fitted on the gold itself (the learned similarity of SPEC S1, the
per-dimension metric of `culturesim fit-metric`), scored by cross-validation so a
pair's own gold never scores it: leave-cultures-out (the headline) and pair-level
(interpolation). Pure: no ray; `report.evaluate` scores the matrices."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from culturesim_ray.report.method import Vectors
from culturesim_ray.report.stats import Matrix, Pair


def culture_folds(cultures: Sequence[str], folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Culture -> fold in [0, min(folds, C)), a seeded shuffle dealt round-robin."""
    order = np.random.default_rng(seed).permutation(len(cultures))
    n = max(1, min(folds, len(cultures)))
    return {cultures[i]: r % n for r, i in enumerate(order)}


# fold fitter: (train vectors a, train vectors b, oriented gold y, all vectors, test
# rows i, test rows j) -> the test pairs' scores
FoldFit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                   np.ndarray]


def cv_matrix(vectors: Vectors, pairs: Sequence[Pair], fit_score: FoldFit,
              cv: str = "cultures", folds: int = 5, seed: int = 0) -> Matrix:
    """Cross-validated scores of a similarity fitted on gold, for every pair of the
    gold cultures (`learned_cv_matrix`, `metric_cv_matrix`).

    cv="cultures" (leave-cultures-out): cultures are split into `folds` seeded
    folds; fold f's fit sees only gold pairs with neither culture in f and
    scores every pair whose first culture (sorted order, as in the gold pairs) is
    in f, so a pair joining two folds' cultures is trained on by neither.
    cv="pairs": the gold pairs are split into folds (each scored by the fit of
    the other folds' pairs); a non-gold pair is scored by fold (index % folds).
    A fold with no training pair scores its pairs 0.5. Returns (cultures, (C, C))."""
    if cv not in ("cultures", "pairs"):
        raise ValueError(f"cv must be 'cultures' or 'pairs', got {cv!r}")
    names = sorted({c for a, b, _ in pairs for c in (a, b)})
    pos = {c: i for i, c in enumerate(names)}
    src = {c: i for i, c in enumerate(vectors[0])}
    x = np.asarray(vectors[1])[[src[c] for c in names]]  # (n, d)
    iu, ju = np.triu_indices(len(names), 1)  # every pair i < j
    gi = np.array([pos[a] for a, _, _ in pairs])
    gj = np.array([pos[b] for _, b, _ in pairs])
    if cv == "cultures":
        fold_of = culture_folds(names, folds, seed)
        cf = np.array([fold_of[c] for c in names])
        n_folds = int(cf.max()) + 1
        test_fold = cf[iu]
        train = [(cf[gi] != f) & (cf[gj] != f) for f in range(n_folds)]
    else:
        n_folds = max(1, min(folds, len(pairs)))
        pf = np.empty(len(pairs), dtype=int)
        pf[np.random.default_rng(seed).permutation(len(pairs))] = np.arange(len(pairs)) % n_folds
        test_fold = np.arange(len(iu)) % n_folds  # non-gold pairs
        flat = {(i, j): n for n, (i, j) in enumerate(zip(iu, ju, strict=True))}
        test_fold[[flat[(min(i, j), max(i, j))] for i, j in zip(gi, gj, strict=True)]] = pf
        train = [pf != f for f in range(n_folds)]
    y_all = np.array([s for *_, s in pairs], dtype=np.float64)
    out = np.zeros((len(names), len(names)))
    for f in range(n_folds):
        ti, tj = iu[test_fold == f], ju[test_fold == f]
        if not len(ti):
            continue
        tr = np.flatnonzero(train[f])
        s = (fit_score(x[gi[tr]], x[gj[tr]], y_all[tr], x, ti, tj) if len(tr)
             else np.full(len(ti), 0.5))
        out[ti, tj] = out[tj, ti] = s
    return names, out


def learned_cv_matrix(vectors: Vectors, pairs: Sequence[Pair], cv: str = "cultures",
                      folds: int = 5, seed: int = 0) -> Matrix:
    """`cv_matrix` of the LearnedSimilarity (SPEC S1): labels are the (oriented) gold
    min-max rescaled over each fold's training pairs."""
    import torch

    from culturesim_ray.ops.learned import LearnedSimilarity

    def t(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    def fit_score(a, b, y, x, ti, tj):
        y = (y - y.min()) / ((y.max() - y.min()) or 1.0)
        model = LearnedSimilarity(seed=seed).fit(t(a), t(b), torch.tensor(y, dtype=torch.float32))
        return model.pairwise(t(x[ti]), t(x[tj])).double().numpy()

    return cv_matrix(vectors, pairs, fit_score, cv, folds, seed)


def metric_cv_matrix(vectors: Vectors, pairs: Sequence[Pair], cv: str = "cultures",
                     folds: int = 5, seed: int = 0, b: float | None = None) -> Matrix:
    """`cv_matrix` of the per-dimension metric of `culturesim fit-metric`
    (`ops.metric`): each fold's weights from its training pairs, its test pairs scored
    by the blend z(cosine) + b z(metric) (z over the pairs of the gold's cultures; b:
    fit-metric's default); a fold with fewer than 3 training pairs by z(cosine)."""
    from culturesim_ray.ops.metric import (
        DEFAULT_B,
        DimensionMetric,
        fit_dimension_weights,
        unit_rows,
    )

    def fit_score(a, b_, y, x, ti, tj):
        # under 3 training pairs there is nothing to fit: the cosine's own z-score
        w = (fit_dimension_weights(unit_rows(a) * unit_rows(b_), y) if len(y) >= 3
             else np.zeros(x.shape[1]))
        return DimensionMetric(w, DEFAULT_B if b is None else b).fit(x).pairwise(x[ti], x[tj])

    return cv_matrix(vectors, pairs, fit_score, cv, folds, seed)


CV_LABELS = {"cultures": "leave-cultures-out CV", "pairs": "pair-level CV"}
# similarities fitted on the gold itself: scored by cross-validation, both ways
FITTED: dict[str, Callable[..., Matrix]] = {"learned": learned_cv_matrix,
                                            "dimension_metric": metric_cv_matrix}
