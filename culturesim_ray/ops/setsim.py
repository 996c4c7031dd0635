"""Set-level culture similarity: compare the item sets of two cultures, not their means.

Every function is `f(x, labels, n_sets, block=2048, **options) -> S` with x
(n, d) float item vectors on any device, labels (n,) int64 in 0..C-1 (the
culture of each item, C = n_sets) and S (C, C) float64 on x's device,
symmetric, larger = more similar. `set_similarity(name, ...)` dispatches by
name; `SET_NAMES` lists them. Work is done in float64.

Distances become similarities as `1 / (1 + distance)` (as in `ops.similarity`):
in (0, 1], 1 on the diagonal (a set against itself). The kernel methods walk
(block, block) tiles of item pairs, each unordered tile once, and fold each tile
into per-culture-pair sums (S += H_i^T K_ij H_j with H the (block, C) one-hot,
or index_add over labels when C > ONEHOT_MAX); the (n, n) kernel is never held.
Peak extra memory: block^2 + block * C + C^2 floats.

- mmd: MMD with an RBF kernel (Gretton et al., JMLR 2012), biased V-statistic.
- energy: energy distance (Székely & Rizzo, 2013), V-statistic.
- sliced_wasserstein: SW_2 over random 1-d projections (Bonneel et al., 2015).
- confusion: soft confusion of a leave-one-out nearest-centroid classifier.
- centered_cosine: cosine of the culture means after removing their mean.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from culturesim_ray.ops.allpairs import check_vectors
from culturesim_ray.ops.similarity import EPS

SET_NAMES = ("mmd", "energy", "sliced_wasserstein", "confusion", "centered_cosine")
ONEHOT_MAX = 256  # above this many cultures, index_add replaces the one-hot matmul
F64 = torch.float64


def check_sets(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048) -> tuple[Tensor, Tensor]:
    """Validate the inputs; return (labels as int64 on x's device, items per culture (C,))."""
    if n_sets < 2:
        raise ValueError(f"need at least 2 cultures, got n_sets={n_sets}")
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    check_vectors(x, "x")
    labels = torch.as_tensor(labels, device=x.device)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected integer culture ids, got {labels.dtype}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels: expected shape ({x.shape[0]},) to match x {tuple(x.shape)}, "
                         f"got {tuple(labels.shape)}")
    labels = labels.long()
    bad = (labels < 0) | (labels >= n_sets)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"labels: item {i} has culture {int(labels[i])}, outside 0..{n_sets - 1} "
                         f"({int(bad.sum())} such items)")
    counts = torch.bincount(labels, minlength=n_sets)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise ValueError(f"culture {empty[0]} has no items ({len(empty)} empty cultures: {shown})")
    return labels, counts


def _distance_to_similarity(dist: Tensor) -> Tensor:
    dist.fill_diagonal_(0.0)
    out = dist.add_(1.0).reciprocal_()
    return (out + out.T) / 2


def _normalised(x: Tensor) -> Tensor:
    """Rows in float64 scaled to unit norm; a zero row stays zero."""
    x = x.to(F64)
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


def _culture_means(x: Tensor, labels: Tensor, counts: Tensor, block: int) -> Tensor:
    """Means of the L2-normalised items per culture (C, d) float64."""
    sums = torch.zeros((counts.shape[0], x.shape[1]), dtype=F64, device=x.device)
    for i0 in range(0, x.shape[0], block):
        sums.index_add_(0, labels[i0:i0 + block], _normalised(x[i0:i0 + block]))
    return sums / counts[:, None].to(F64)


# --- kernel sums over item tiles ------------------------------------------------

def _accumulate(acc: Tensor, k: Tensor, li: Tensor, lj: Tensor,
                hi: Tensor | None, hj: Tensor | None) -> None:
    """acc (C, C) += H_i^T k H_j for a tile k (bi, bj)."""
    if hi is not None:
        acc.addmm_(hi.T, k @ hj)  # (C, bi) @ (bi, C)
    else:
        rows = torch.zeros((k.shape[0], acc.shape[1]), dtype=F64, device=k.device)
        acc.index_add_(0, li, rows.index_add_(1, lj, k))  # (bi, C) -> (C, C)


def _pair_sums(x: Tensor, labels: Tensor, n_sets: int, block: int,
               kernel: Callable[[Tensor], Tensor]) -> Tensor:
    """S[a, b] = sum over items i of a, j of b of kernel(|x_i - x_j|^2): (C, C) float64.

    `kernel` maps a (bi, bj) tile of squared distances to kernel values (in place
    is fine). Items are centred first (distances unchanged, less cancellation in
    |a|^2 + |b|^2 - 2ab) and an item's distance to itself is exactly 0."""
    n = x.shape[0]
    shift = torch.zeros(x.shape[1], dtype=F64, device=x.device)
    for i0 in range(0, n, block):
        shift += x[i0:i0 + block].to(F64).sum(0)
    shift /= n
    onehot = n_sets <= ONEHOT_MAX

    def chunk(i0: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        xc = x[i0:i0 + block].to(F64) - shift  # (b, d)
        lab = labels[i0:i0 + block]
        h = F.one_hot(lab, n_sets).to(F64) if onehot else None  # (b, C)
        return xc, (xc * xc).sum(1), lab, h

    on_diag = torch.zeros((n_sets, n_sets), dtype=F64, device=x.device)
    upper = torch.zeros_like(on_diag)  # tiles above the diagonal; the ones below are their transposes
    for i0 in range(0, n, block):
        xi, xi2, li, hi = chunk(i0)
        for j0 in range(i0, n, block):
            xj, xj2, lj, hj = (xi, xi2, li, hi) if j0 == i0 else chunk(j0)
            d2 = torch.addmm(xi2[:, None] + xj2, xi, xj.T, alpha=-2.0).clamp_min_(0.0)  # (bi, bj)
            if j0 == i0:
                d2.fill_diagonal_(0.0)
            _accumulate(on_diag if j0 == i0 else upper, kernel(d2), li, lj, hi, hj)
    s = on_diag + upper + upper.T
    return (s + s.T) / 2


def _pair_means(x: Tensor, labels: Tensor, counts: Tensor, block: int,
                kernel: Callable[[Tensor], Tensor]) -> Tensor:
    """M[a, b] = mean of kernel over all (i in a, j in b), self pairs included."""
    c = counts.to(F64)
    return _pair_sums(x, labels, counts.shape[0], block, kernel) / (c[:, None] * c[None, :])


def _discrepancy(means: Tensor) -> Tensor:
    """M_aa + M_bb - 2 M_ab, clamped at 0 against rounding."""
    d = means.diagonal()
    return (d[:, None] + d[None, :] - 2.0 * means).clamp_min_(0.0)


def median_sigma(x: Tensor, sample: int = 2000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance (numpy's median) among at most `sample` items.

    With more than `sample` items, a seeded random subset (torch.randperm on the
    CPU) is used. If the median is 0 (mostly duplicates), the mean of the
    positive distances; 1.0 if all items coincide."""
    n = x.shape[0]
    if n > sample:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(n, generator=g)[:sample].to(x.device)]
    xs = x.to(F64)
    xs = xs - xs.mean(0)
    sq = (xs * xs).sum(1)
    d2 = torch.addmm(sq[:, None] + sq, xs, xs.T, alpha=-2.0).clamp_min_(0.0)  # (m, m)
    iu = torch.triu_indices(xs.shape[0], xs.shape[0], 1, device=x.device)
    dist = d2[iu[0], iu[1]].sqrt_().sort().values  # (m (m - 1) / 2,)
    k = dist.shape[0]
    med = float((dist[(k - 1) // 2] + dist[k // 2]) / 2)
    if med > 0:
        return med
    pos = dist[dist > 0]
    return float(pos.mean()) if pos.numel() else 1.0


def mmd(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048, sigma: float | None = None,
        seed: int = 0, sample: int = 2000) -> Tensor:
    """1 / (1 + MMD(A, B)) with an RBF kernel k(a, b) = exp(-|a-b|^2 / (2 sigma^2)).

    MMD^2 = mean k(A, A') + mean k(B, B') - 2 mean k(A, B), the biased
    V-statistic (self pairs included), clamped at 0; MMD its square root.
    sigma: bandwidth (default: `median_sigma` over at most `sample` = 2000 items,
    drawn with `seed` = 0). Diagonal 1."""
    labels, counts = check_sets(x, labels, n_sets, block)
    if sigma is None:
        sigma = median_sigma(x, sample, seed)
    if not sigma > 0:
        raise ValueError(f"mmd: sigma must be positive, got {sigma}")
    gamma = -1.0 / (2.0 * sigma * sigma)
    means = _pair_means(x, labels, counts, block, lambda d2: d2.mul_(gamma).exp_())
    return _distance_to_similarity(_discrepancy(means).sqrt_())


def energy(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048) -> Tensor:
    """1 / (1 + E(A, B)) with E = 2 E|A-B| - E|A-A'| - E|B-B'| (Euclidean).

    V-statistics (self pairs, at distance 0, included), so E >= 0 up to
    rounding; clamped at 0. Diagonal 1."""
    labels, counts = check_sets(x, labels, n_sets, block)
    # with kernel -|a-b|, M_aa + M_bb - 2 M_ab is the energy distance
    means = _pair_means(x, labels, counts, block, lambda d2: d2.sqrt_().neg_())
    return _distance_to_similarity(_discrepancy(means))


# --- sliced Wasserstein ---------------------------------------------------------

def directions(d: int, n_proj: int = 128, seed: int = 0) -> Tensor:
    """`n_proj` random unit vectors (n_proj, d) float64 on the CPU, Gaussian then normalised."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((n_proj, d), generator=g, dtype=F64)
    return u / u.norm(dim=1, keepdim=True).clamp_min(EPS)


def quantile_levels(n_quantiles: int) -> Tensor:
    """Midpoint levels (k + 0.5) / n_quantiles, k = 0..n_quantiles-1 (float64, CPU)."""
    return (torch.arange(n_quantiles, dtype=F64) + 0.5) / n_quantiles


def _sorted_quantiles(s: Tensor, levels: Tensor) -> Tensor:
    """Quantiles of sorted columns s (m, p) at levels (q,), numpy's 'linear' rule: (q, p)."""
    pos = levels * (s.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(s.shape[0] - 1)
    frac = (pos - lo.to(F64))[:, None]
    return s[lo] * (1.0 - frac) + s[hi] * frac


def sliced_wasserstein(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048,
                       n_proj: int = 128, n_quantiles: int = 64, seed: int = 0) -> Tensor:
    """1 / (1 + SW_2(A, B)) over `n_proj` = 128 random unit directions (`directions`, `seed` = 0).

    Per culture and direction, the empirical quantile function of the projected
    items at `n_quantiles` = 64 levels (k + 0.5) / n_quantiles with linear
    interpolation (numpy's default); SW_2 = sqrt(mean over directions and levels
    of (q_A - q_B)^2). Memory: the (C, n_proj, n_quantiles) quantiles plus one
    culture's projections on at most block^2 / n_a directions at a time. Diagonal 1."""
    labels, counts = check_sets(x, labels, n_sets, block)
    if n_proj < 1 or n_quantiles < 1:
        raise ValueError(f"n_proj and n_quantiles must be positive, got {n_proj}, {n_quantiles}")
    dev = x.device
    dirs = directions(x.shape[1], n_proj, seed).to(dev)  # (P, d)
    levels = quantile_levels(n_quantiles).to(dev)
    order = torch.argsort(labels, stable=True)
    ends = torch.cumsum(counts, 0).tolist()
    quant = torch.empty((n_sets, n_quantiles, n_proj), dtype=F64, device=dev)  # (C, Q, P)
    for a in range(n_sets):
        idx = order[ends[a] - int(counts[a]):ends[a]]  # (n_a,) items of culture a
        step = max(1, block * block // idx.shape[0])  # directions per pass
        for p0 in range(0, n_proj, step):
            dp = dirs[p0:p0 + step]
            proj = torch.cat([x[idx[r:r + block]].to(F64) @ dp.T
                              for r in range(0, idx.shape[0], block)])  # (n_a, p)
            quant[a, :, p0:p0 + step] = _sorted_quantiles(proj.sort(dim=0).values, levels)
    flat = quant.reshape(n_sets, -1)
    dist = torch.empty((n_sets, n_sets), dtype=F64, device=dev)
    for c0 in range(0, n_sets, block):  # direct differences: no cancellation for close cultures
        dist[c0:c0 + block] = torch.cdist(flat[c0:c0 + block], flat,
                                          compute_mode="donot_use_mm_for_euclid_dist")
    return _distance_to_similarity(dist.div_(math.sqrt(flat.shape[1])))


# --- centroid read-outs ---------------------------------------------------------

def confusion(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048,
              temperature: float = 0.05) -> Tensor:
    """Soft confusion of a nearest-centroid classifier with leave-one-out centroids.

    Items are L2-normalised; centroids are the culture means. For item i of
    culture a, its own centroid is (n_a mean_a - x_i) / (n_a - 1);
    p(b | x_i) = softmax_b(cos(x_i, centroid_b) / temperature), temperature
    0.05; P[a, b] = mean over the items of a of p(b | x_i). A culture with one
    item has no leave-one-out centroid: its row of P is undefined and
    S[a, b] = P[b, a] (0 when both rows are undefined); otherwise
    S = (P + P^T) / 2. Diagonal set to 1."""
    labels, counts = check_sets(x, labels, n_sets, block)
    if not temperature > 0:
        raise ValueError(f"confusion: temperature must be positive, got {temperature}")
    means = _culture_means(x, labels, counts, block)  # (C, d)
    mean_norm = means.norm(dim=1)  # (C,)
    cnt = counts.to(F64)
    conf = torch.zeros((n_sets, n_sets), dtype=F64, device=x.device)
    for i0 in range(0, x.shape[0], block):
        u = _normalised(x[i0:i0 + block])  # (b, d)
        lab = labels[i0:i0 + block]
        ok = counts[lab] > 1
        u, lab = u[ok], lab[ok]
        un = u.norm(dim=1)  # 1, or 0 for a zero item
        cos = (u @ means.T).div_((un[:, None] * mean_norm).clamp_min_(EPS))  # (b, C)
        n_a = cnt[lab][:, None]
        own = (n_a * means[lab] - u) / (n_a - 1.0)  # (b, d) leave-one-out centroids
        cos[torch.arange(u.shape[0], device=x.device), lab] = (
            (u * own).sum(1) / (un * own.norm(dim=1)).clamp_min_(EPS))
        conf.index_add_(0, lab, torch.softmax(cos / temperature, dim=1))
    defined = counts > 1
    conf[defined] /= cnt[defined, None]
    both = defined[:, None] & defined[None, :]
    sim = torch.where(both, (conf + conf.T) / 2,
                      torch.where(defined[None, :], conf.T, conf))  # one defined row, or 0
    sim.fill_diagonal_(1.0)
    return sim


def centered_cosine(x: Tensor, labels: Tensor, n_sets: int, block: int = 2048) -> Tensor:
    """Cosine between culture means of the L2-normalised items, each minus the mean of the means.

    The mean of the C culture means (unweighted) is subtracted, so the shared
    direction of all cultures no longer counts; with 2 cultures the off-diagonal
    is always -1. A culture at the mean has cosine 0 with all others. Diagonal 1."""
    labels, counts = check_sets(x, labels, n_sets, block)
    means = _culture_means(x, labels, counts, block)
    z = means - means.mean(0)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(EPS)
    sim = z @ z.T
    sim = (sim + sim.T) / 2
    sim.fill_diagonal_(1.0)
    return sim


REGISTRY: dict[str, Callable[..., Tensor]] = {
    "mmd": mmd,
    "energy": energy,
    "sliced_wasserstein": sliced_wasserstein,
    "confusion": confusion,
    "centered_cosine": centered_cosine,
}


def set_similarity(name: str, x: Tensor, labels: Tensor, n_sets: int, block: int = 2048,
                   **options) -> Tensor:
    """(C, C) float64 set similarity `name` (one of SET_NAMES) with its options."""
    if name not in REGISTRY:
        raise ValueError(f"unknown set similarity {name!r}; known: {', '.join(SET_NAMES)}")
    fn = REGISTRY[name]
    known = [p for p in inspect.signature(fn).parameters if p not in ("x", "labels", "n_sets", "block")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(known) or 'none'}")
    return fn(x, labels, n_sets, block, **options)
