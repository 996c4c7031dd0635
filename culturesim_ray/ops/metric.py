"""A per-dimension metric fitted on one corpus's gold, applied to another (pure numpy).

The raw baseline compares two cultures by the cosine of their mean item vectors,
every dimension alike. A gold set says which cultures are close; the dimensions
whose products x_a * x_b follow it can be weighted up:

    w = X'(r - mean r)

X: the gold pairs' products per dimension (the culture means L2-normalised,
centred over the pairs), r: the gold's ranks ("higher = more similar"). It is
ridge regression of the ranks on the products in the limit of a large penalty:
each dimension weighted by how its product follows the gold, with nothing to
tune. A pair of another corpus (the same encoder) is scored by

    z(cosine) + b * z(x_a' diag(w) x_b)

(z: standardised over that corpus's culture pairs), so b = 0 is the raw cosine.
`benchmarks/transfer.py` measures it on sets that share no culture with the fit.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

DEFAULT_B = 0.5  # the blend's weight b: benchmarks/transfer.py, the middle of the b measured


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64; a zero row stays zero)."""
    m = np.asarray(m, np.float64)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, n, out=np.zeros_like(m), where=n > 0)


def pair_products(means: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """(p, d): x_a * x_b per dimension for the pairs (ia[k], ib[k]) of the culture
    means (rows L2-normalised first), whose row sums are the pairs' cosines."""
    x = unit_rows(means)
    return x[np.asarray(ia)] * x[np.asarray(ib)]


def named_pair_products(names: list[str], means: np.ndarray,
                        pairs: list[tuple[str, str, float]]) -> np.ndarray:
    """`pair_products` for pairs (culture_a, culture_b, score) named by culture;
    `names` gives the rows of `means`."""
    idx = {c: i for i, c in enumerate(names)}
    return pair_products(means, np.array([idx[p[0]] for p in pairs], np.int64),
                         np.array([idx[p[1]] for p in pairs], np.int64))


def fit_dimension_weights(products: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """w (d,) = X'(r - mean r) over the centred products X of the gold pairs and
    the ranks r of their scores (oriented "higher = more similar")."""
    products = np.asarray(products, np.float64)
    gold = np.asarray(gold, np.float64)
    if products.ndim != 2 or products.shape[0] != len(gold):
        raise ValueError(f"products must be (pairs, d) for {len(gold)} gold pairs, "
                         f"got {products.shape}")
    if len(gold) < 3:
        raise ValueError(f"fitting a metric needs at least 3 gold pairs, got {len(gold)}")
    r = rankdata(gold)
    return (products - products.mean(0)).T @ (r - r.mean())


def zscore(v: np.ndarray) -> np.ndarray:
    """(v - mean) / sd; all zeros when v is constant."""
    v = np.asarray(v, np.float64)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def blend(products: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """The pairs' scores z(cosine) + b z(metric), from their products (p, d)."""
    return zscore(products.sum(1)) + b * zscore(products @ np.asarray(w, np.float64))


def pair_moments(means: np.ndarray, v: np.ndarray, rows: int = 8192) -> tuple[float, float]:
    """Mean and standard deviation of x_a' diag(v) x_b over the C (C - 1) / 2 pairs of
    the culture means (rows L2-normalised first), without forming a pair: the sum is
    s' diag(v) s minus the diagonal (s: the sum of the rows), the sum of squares
    sum_kl v_k v_l G_kl^2 minus the diagonal (G = X'X, d x d). O(C d^2) time and
    O(rows d + d^2) memory, so it serves all-pairs over any number of cultures."""
    means = np.asarray(means)
    v = np.asarray(v, np.float64)
    c, d = means.shape
    if v.shape != (d,):
        raise ValueError(f"the metric has {v.shape[0]} weights; the culture vectors have "
                         f"{d} dimensions")
    if c < 2:
        raise ValueError(f"pair moments need at least 2 cultures, got {c}")
    total, gram, diag, diag_sq = np.zeros(d), np.zeros((d, d)), 0.0, 0.0
    for i in range(0, c, rows):
        x = unit_rows(means[i:i + rows])
        total += x.sum(0)
        gram += x.T @ x
        self_terms = (x * x) @ v
        diag += float(self_terms.sum())
        diag_sq += float((self_terms ** 2).sum())
    n = c * (c - 1)  # ordered pairs: every pair twice, the same mean and variance
    mean = (float(total @ (v * total)) - diag) / n
    squares = (float(v @ (gram ** 2) @ v) - diag_sq) / n
    return mean, float(np.sqrt(max(squares - mean * mean, 0.0)))


class DimensionMetric:
    """The blend z(cosine) + b z(x_a' diag(w) x_b) as a similarity function over
    blocks of culture vectors (`ops.similarity`'s contract: sim(X, Y) -> (n, m)),
    after `fit` on every culture of the map (the z-scores are over its pairs). It is
    one bilinear form, unit(x)' diag(e) unit(y) - c with e = 1 / sd_cos + b w / sd_w
    and c = mean_cos / sd_cos + b mean_w / sd_w, so a block costs what a cosine
    block costs (`culturesim allpairs --metric`); a term whose sd is 0 (every pair
    alike) contributes 0, as `zscore` does."""

    name = "dimension_metric"

    def __init__(self, w: np.ndarray, b: float) -> None:
        self.w = np.asarray(w, np.float64)
        if self.w.ndim != 1 or not np.isfinite(self.w).all():
            raise ValueError("the metric's weights must be a vector of finite numbers")
        if not np.isfinite(b):
            raise ValueError(f"the metric's b must be finite, got {b}")
        self.b = float(b)
        self.e: np.ndarray | None = None
        self.c = 0.0

    @property
    def key(self) -> dict:
        """What shapes its scores, for an all-pairs fingerprint."""
        import hashlib

        return {"name": self.name, "b": self.b,
                "weights_sha256": hashlib.sha256(self.w.tobytes()).hexdigest()}

    def manifest_record(self) -> dict:
        """What an all-pairs manifest records of it (`head_similarity`): its key."""
        return self.key

    def fit(self, means: np.ndarray) -> DimensionMetric:
        e, c = np.zeros_like(self.w), 0.0
        for v, scale in ((np.ones_like(self.w), 1.0), (self.w, self.b)):
            mean, sd = pair_moments(means, v)
            if sd > 0:
                e += scale * v / sd
                c += scale * mean / sd
        self.e, self.c = e, c
        return self

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(p,) scores of the row-aligned pairs (a[i], b[i]), in float64."""
        if self.e is None:
            raise ValueError("DimensionMetric must be fitted on the culture means first")
        return np.einsum("pd,pd->p", unit_rows(a) * self.e, unit_rows(b)) - self.c

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from culturesim_ray.ops.similarity import EPS, _check

        if self.e is None:
            raise ValueError("DimensionMetric must be fitted on the culture means first")
        _check(x, y)
        if x.shape[1] != len(self.e):
            raise ValueError(f"the metric has {len(self.e)} weights; the vectors have "
                             f"{x.shape[1]} dimensions")
        e = torch.as_tensor(self.e, dtype=x.dtype, device=x.device)
        xu = x / x.norm(dim=1, keepdim=True).clamp_min(EPS)
        yu = y / y.norm(dim=1, keepdim=True).clamp_min(EPS)
        return (xu * e) @ yu.T - self.c


def blended_matrix(means: np.ndarray, w: np.ndarray, b: float,
                   fit_on: np.ndarray | None = None) -> np.ndarray:
    """(C, C) culture x culture scores of the blend, standardised over the C (C - 1) / 2
    pairs of these cultures (`DimensionMetric` in float64), or over the pairs of
    `fit_on`'s (every culture of a map, of which `means` are some: the scores its
    all-pairs gives them); the diagonal is the largest score + 1 (a culture is
    closest to itself). Memory O(C^2): for an evaluation's cultures; `culturesim
    allpairs --metric` computes the same scores blockwise."""
    means = np.asarray(means, np.float64)
    if np.asarray(w).shape != (means.shape[1],):
        raise ValueError(f"the metric has {np.asarray(w).shape[0]} weights; the culture "
                         f"vectors have {means.shape[1]} dimensions")
    c = len(means)
    if c < 2:
        return np.ones((c, c))
    x = torch.from_numpy(means)
    metric = DimensionMetric(w, b).fit(means if fit_on is None else fit_on)
    out = metric(x, x).numpy()
    ia, ib = np.triu_indices(c, 1)
    np.fill_diagonal(out, out[ia, ib].max() + 1.0)
    return out
