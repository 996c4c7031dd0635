"""Similarity functions in matrix form (SPEC S1).

Every function is `sim(X, Y) -> S` with X (n, d), Y (m, d) float tensors on any
device and S (n, m) where larger means more similar. `get(name)` returns one
from the registry; `NAMES` lists them. Distances become similarities as
`1 / (1 + distance)`, so they lie in (0, 1] with 1 for identical vectors.

Functions that must see the data first (Mahalanobis, learned) are classes with
`fit`; an unfitted Mahalanobis fits its covariance on X and Y together.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

SimFn = Callable[[Tensor, Tensor], Tensor]

EPS = 1e-12


def _check(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"expected 2-d inputs (n, d) and (m, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: X has d={x.shape[1]}, Y has d={y.shape[1]}")


def dot(x: Tensor, y: Tensor) -> Tensor:
    """A·B."""
    _check(x, y)
    return x @ y.T


def cosine(x: Tensor, y: Tensor) -> Tensor:
    """A·B / (|A||B|); a zero vector has similarity 0 with everything."""
    _check(x, y)
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(EPS)
    yn = y / y.norm(dim=1, keepdim=True).clamp_min(EPS)
    return xn @ yn.T


def sq_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """|A-B|^2 through one matrix product (clamped at 0 against rounding)."""
    x2 = (x * x).sum(1, keepdim=True)  # (n, 1)
    y2 = (y * y).sum(1)  # (m,)
    return torch.addmm(x2 + y2, x, y.T, alpha=-2.0).clamp_min_(0.0)


def euclidean(x: Tensor, y: Tensor) -> Tensor:
    """1 / (1 + |A-B|_2)."""
    _check(x, y)
    return sq_euclidean(x, y).sqrt_().add_(1.0).reciprocal_()


def l1(x: Tensor, y: Tensor) -> Tensor:
    """1 / (1 + |A-B|_1)."""
    _check(x, y)
    return 1.0 / (1.0 + torch.cdist(x, y, p=1))


def ndd(x: Tensor, y: Tensor) -> Tensor:
    """Normalised dot distance A·B / sqrt((|A|^2 + |B|^2) / 2).

    Keeps the norm information cosine discards: for equal directions it is
    |A||B| / rms(|A|, |B|), largest when the norms agree."""
    _check(x, y)
    x2 = (x * x).sum(1, keepdim=True).mul_(0.5)
    y2 = (y * y).sum(1).mul_(0.5)
    denom = (x2 + y2).clamp_min_(EPS).sqrt_()  # (n, m)
    return torch.mm(x, y.T).div_(denom)


def log_scaled(x: Tensor, y: Tensor) -> Tensor:
    """A·B / log(1 + |A||B|)."""
    _check(x, y)
    nx = x.norm(dim=1, keepdim=True)
    ny = y.norm(dim=1)
    return torch.mm(x, y.T).div_(torch.log1p_(nx * ny).clamp_min_(EPS))


def hybrid(x: Tensor, y: Tensor) -> Tensor:
    """A·B / (|A-B|_2 + 1)."""
    _check(x, y)
    g = torch.mm(x, y.T)  # (n, m), used for both the numerator and |A-B|
    x2 = (x * x).sum(1, keepdim=True)
    y2 = (y * y).sum(1)
    dist = (x2 + y2).sub_(g, alpha=2.0).clamp_min_(0.0).sqrt_().add_(1.0)
    return g.div_(dist)


# --- hyperbolic -----------------------------------------------------------------

BALL_EPS = 1e-5


def to_ball(x: Tensor, eps: float = BALL_EPS) -> Tensor:
    """Map Euclidean vectors into the open Poincaré ball.

    The exponential map at the origin, x -> tanh(|x|) x / |x|, then any norm
    above 1 - eps (eps = 1e-5, so float32 keeps 1 - |x|^2 > 0) is scaled back
    to 1 - eps. Points already inside the ball move too: apply `to_ball` to
    Euclidean embeddings only, and pass `map_to_ball=False` to `poincare` for
    data that is already hyperbolic."""
    n = x.norm(dim=1, keepdim=True).clamp_min(EPS)
    y = torch.tanh(n) * x / n
    return clip_ball(y, eps)


def clip_ball(x: Tensor, eps: float = BALL_EPS) -> Tensor:
    n = x.norm(dim=1, keepdim=True)
    return torch.where(n > 1 - eps, x * ((1 - eps) / n.clamp_min(EPS)), x)


def poincare_distance(x: Tensor, y: Tensor) -> Tensor:
    """arcosh(1 + 2|A-B|^2 / ((1-|A|^2)(1-|B|^2))) for points inside the unit ball."""
    _check(x, y)
    x2 = (x * x).sum(1, keepdim=True)
    y2 = (y * y).sum(1)
    denom = ((1 - x2) * (1 - y2)).clamp_min(EPS)
    # near the boundary 1 - |x|^2 is tiny, so |A-B|^2 is taken from the differences
    # themselves (no |a|^2 + |b|^2 - 2ab cancellation), and arcosh(1 + z) as
    # log1p(z + sqrt(z (z + 2))), exact for small z
    diff2 = torch.cdist(x, y, p=2, compute_mode="donot_use_mm_for_euclid_dist").square_()
    z = 2 * diff2 / denom
    return torch.log1p(z + torch.sqrt(z * (z + 2)))


def poincare(x: Tensor, y: Tensor, map_to_ball: bool = True) -> Tensor:
    """1 / (1 + Poincaré distance), inputs mapped into the ball by `to_ball`."""
    if map_to_ball:
        x, y = to_ball(x), to_ball(y)
    else:
        x, y = clip_ball(x), clip_ball(y)
    return 1.0 / (1.0 + poincare_distance(x, y))


# --- Mahalanobis ----------------------------------------------------------------

def ledoit_wolf(data: Tensor) -> tuple[Tensor, float]:
    """Ledoit-Wolf shrunk covariance of `data` (n, d): (Σ (d, d), shrinkage in [0, 1]).

    Σ = (1 - s) S + s μ I with S the (biased) sample covariance and μ = tr(S)/d;
    invertible for any n >= 1 when the data are not all equal, including n < d.
    Computed in float64."""
    x = data.to(torch.float64)
    n, d = x.shape
    xc = x - x.mean(0, keepdim=True)
    s = xc.T @ xc / n
    mu = torch.trace(s) / d
    delta = ((s - mu * torch.eye(d, dtype=x.dtype, device=x.device)) ** 2).sum() / d
    x2 = xc * xc
    beta_bar = ((x2.T @ x2).sum() / n - (s * s).sum()) / (d * n)
    beta = torch.minimum(beta_bar, delta)
    shrink = 0.0 if float(delta) == 0.0 else float(beta / delta)
    sigma = (1 - shrink) * s + shrink * mu * torch.eye(d, dtype=x.dtype, device=x.device)
    return sigma, shrink


class Mahalanobis:
    """1 / (1 + sqrt((A-B)^T Σ^-1 (A-B))), Σ from `ledoit_wolf` on the data.

    Implemented as whitening: with Σ = L L^T, the distance is the Euclidean
    distance between L^-1 A and L^-1 B."""

    name = "mahalanobis"

    def __init__(self) -> None:
        self.chol: Tensor | None = None
        self.shrinkage: float | None = None
        self._chol_on: dict[torch.device, Tensor] = {}  # chol copied to other devices

    def fit(self, data: Tensor) -> Mahalanobis:
        if data.ndim != 2 or data.shape[0] < 2:
            raise ValueError("mahalanobis: need at least 2 vectors to estimate a covariance")
        sigma, self.shrinkage = ledoit_wolf(data)
        jitter = 1e-9 * float(torch.trace(sigma)) / sigma.shape[0]
        eye = torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
        self.chol = torch.linalg.cholesky(sigma + jitter * eye)
        self._chol_on = {}
        return self

    def whiten(self, x: Tensor) -> Tensor:
        """L^-1 x per row, in the fit's precision on x's device (a map fitted on the CPU
        whitens CUDA blocks: the factor is copied there once)."""
        if self.chol is None:
            raise RuntimeError("mahalanobis: call fit(data) first")
        chol = self.chol
        if chol.device != x.device:
            if x.device not in self._chol_on:
                self._chol_on[x.device] = chol.to(x.device)
            chol = self._chol_on[x.device]
        z = torch.linalg.solve_triangular(chol, x.to(chol.dtype).T, upper=False)
        return z.T.to(x.dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_chol_on": {}}  # ship the fit, never device copies

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        _check(x, y)
        return sq_euclidean(self.whiten(x), self.whiten(y)).sqrt_()

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.chol is None:
            self.fit(torch.cat([x, y]) if x.data_ptr() != y.data_ptr() else x)
        return 1.0 / (1.0 + self.distance(x, y))


# --- per-dimension --------------------------------------------------------------

def _row_chunks(n: int, m: int, d: int, budget: int = 1 << 24) -> int:
    """Rows per chunk so a (rows, m, d) float temporary stays near `budget` elements."""
    return max(1, budget // max(1, m * d))


def _within(x: Tensor, y: Tensor, bound: float) -> bool:
    return bool(x.abs().max() < bound) and bool(y.abs().max() < bound)


def trimmed_per_dim(x: Tensor, y: Tensor, q: float = 0.1) -> Tensor:
    """Mean over dimensions of s_i = exp(-|x_i - y_i|) after dropping the lowest q share.

    The lowest s_i are the largest |x_i - y_i|: the k = floor(q d) largest
    differences per pair are dropped (ties dropped as one of equal value).
    On the CPU (blocks of 4096+ pairs, |values| < 300) a numba kernel computes
    it without an exp per pair and dimension (ops/_per_dim_cpu.py); elsewhere
    (CUDA, autograd) in row chunks of torch ops, so memory stays bounded."""
    _check(x, y)
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q must be in [0, 1), got {q}")
    n, d = x.shape
    m = y.shape[0]
    drop = int(math.floor(q * d))
    if (x.device.type == "cpu" and n * m >= 4096 and not x.requires_grad
            and not y.requires_grad and _within(x, y, 300.0)):
        from culturesim_ray.ops._per_dim_cpu import trimmed_per_dim_cpu

        res = trimmed_per_dim_cpu(x.detach().numpy(), y.detach().numpy(), drop)
        return torch.from_numpy(res).to(x.dtype)
    out = torch.empty((n, m), dtype=x.dtype, device=x.device)
    step = _row_chunks(n, m, d)
    for i in range(0, n, step):
        diff = (x[i:i + step, None, :] - y[None, :, :]).abs_()  # (r, m, d)
        s = torch.exp(diff.neg_())  # in (0, 1]
        total = s.sum(-1)
        if drop:
            total -= torch.topk(s, drop, dim=-1, largest=False, sorted=False).values.sum(-1)
        out[i:i + step] = total / (d - drop)
    return out


CRITICAL_GRADES = ("high", "medium", "low")


def critical_share(x: Tensor, y: Tensor, threshold: float = 0.5) -> Tensor:
    """Share of dimensions whose s_i = exp(-|x_i - y_i|) falls under `threshold` (n, m)."""
    _check(x, y)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    cut = -math.log(threshold)  # s_i < t  <=>  |x_i - y_i| > -log t
    n, d = x.shape
    m = y.shape[0]
    out = torch.empty((n, m), dtype=x.dtype, device=x.device)
    step = _row_chunks(n, m, d)
    for i in range(0, n, step):
        diff = (x[i:i + step, None, :] - y[None, :, :]).abs_()
        out[i:i + step] = (diff > cut).sum(-1).to(x.dtype) / d
    return out


def critical_vote(x: Tensor, y: Tensor, threshold: float = 0.5,
                  share: float = 0.3) -> tuple[Tensor, Tensor]:
    """The "critical dimensions" vote.

    A pair is dissimilar when more than `share` of its dimensions fall under
    `threshold`. Returns (dissimilar (n, m) bool, grade (n, m) int) with grade
    0 = high similarity (critical share <= share / 2), 1 = medium (<= share),
    2 = low (> share): index into CRITICAL_GRADES."""
    c = critical_share(x, y, threshold)
    grade = torch.full(c.shape, 1, dtype=torch.long, device=c.device)
    grade[c <= share / 2] = 0
    grade[c > share] = 2
    return c > share, grade


def per_dim(x: Tensor, y: Tensor) -> Tensor:
    """The trimmed per-dimension similarity with its default q = 10%."""
    return trimmed_per_dim(x, y, 0.1)


REGISTRY: dict[str, SimFn] = {
    "cosine": cosine,
    "dot": dot,
    "euclidean": euclidean,
    "l1": l1,
    "ndd": ndd,
    "log_scaled": log_scaled,
    "hybrid": hybrid,
    "poincare": poincare,
    "per_dim": per_dim,
}
STATEFUL = {"mahalanobis": Mahalanobis}
NAMES = tuple(sorted([*REGISTRY, *STATEFUL, "learned"]))


def get(name: str) -> SimFn:
    """A similarity function by name (a fresh object for the stateful ones)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in STATEFUL:
        return STATEFUL[name]()
    if name == "learned":
        raise ValueError("the learned similarity needs training: use "
                         "culturesim_ray.ops.learned.LearnedSimilarity().fit(...)")
    raise ValueError(f"unknown similarity {name!r}; known: {', '.join(NAMES)}")
