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
from scipy.stats import rankdata


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


def blended_matrix(means: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """(C, C) culture x culture scores of the blend, standardised over the C (C - 1) / 2
    pairs of these cultures; the diagonal is the largest score + 1 (a culture is
    closest to itself). Memory O(C^2): for an evaluation's cultures, not all-pairs."""
    c = len(means)
    if np.asarray(w).shape != (np.asarray(means).shape[1],):
        raise ValueError(f"the metric has {np.asarray(w).shape[0]} weights; the culture "
                         f"vectors have {np.asarray(means).shape[1]} dimensions")
    ia, ib = np.triu_indices(c, 1)
    s = blend(pair_products(means, ia, ib), w, b)
    out = np.zeros((c, c))
    out[ia, ib] = out[ib, ia] = s
    np.fill_diagonal(out, (s.max() if len(s) else 0.0) + 1.0)
    return out
