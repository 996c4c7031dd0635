"""Learned similarity f_θ(A, B) in (0, 1): a small MLP over the pair (SPEC S1).

Features are symmetric in A and B — [A + B, |A - B|, A * B] — so
f(A, B) = f(B, A) by construction. Trained with binary cross-entropy on
labelled pairs (1 = similar). Deterministic for a given seed.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class PairMLP(nn.Module):
    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @staticmethod
    def features(a: Tensor, b: Tensor) -> Tensor:
        """The symmetric pair features (p, 3d) of row-aligned a (p, d), b (p, d)."""
        return torch.cat([a + b, (a - b).abs(), a * b], dim=-1)

    def head(self, features: Tensor) -> Tensor:
        """Logits (p,) from pair features (p, 3d)."""
        return self.net(features).squeeze(-1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Logits for row-aligned pairs a (p, d), b (p, d) -> (p,)."""
        return self.head(self.features(a, b))


class LearnedSimilarity:
    """sim(X, Y) = sigmoid(MLP(pair features)), after `fit(a, b, labels)`.

    hidden: width of the two hidden layers (default 64). epochs (default 300),
    lr (default 1e-2), weight_decay (default 1e-4): AdamW steps, each over every
    pair when there are at most `batch` (default 8,192), else over `batch` pairs
    drawn without replacement (seeded), so a fit's time stops growing with the
    pairs of a large gold file (every pair of G cultures is G^2 / 2).
    """

    name = "learned"

    def __init__(self, hidden: int = 64, epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0, batch: int = 8192) -> None:
        if batch < 1:
            raise ValueError(f"learned similarity: batch must be >= 1, got {batch}")
        self.hidden, self.epochs, self.lr, self.wd, self.seed = hidden, epochs, lr, weight_decay, seed
        self.batch = batch
        self.model: PairMLP | None = None
        self.losses: list[float] = []
        self._model_on: dict[tuple[torch.device, torch.dtype], PairMLP] = {}

    def fit(self, a: Tensor, b: Tensor, labels: Tensor) -> LearnedSimilarity:
        """a, b: (p, d) row-aligned pairs; labels: (p,) in {0, 1} (or soft in [0, 1])."""
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"pairs must be two (p, d) tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
        if labels.shape != (a.shape[0],):
            raise ValueError(f"labels must be ({a.shape[0]},), got {tuple(labels.shape)}")
        y = labels.to(a.dtype)
        if bool(((y < 0) | (y > 1)).any()):
            raise ValueError("labels must lie in [0, 1]")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = PairMLP(a.shape[1], self.hidden).to(a.device, a.dtype)
        draw = torch.Generator().manual_seed(self.seed)  # the pairs of each step, on CPU
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.wd)
        loss_fn = nn.BCEWithLogitsLoss()
        self.losses = []
        # every pair each step: their features (no parameters in them) built once
        every = PairMLP.features(a, b) if len(y) <= self.batch else None
        for _ in range(self.epochs):
            opt.zero_grad()
            if every is None:
                i = torch.randperm(len(y), generator=draw)[:self.batch].to(a.device)
                loss = loss_fn(model(a[i], b[i]), y[i])
            else:
                loss = loss_fn(model.head(every), y)
            loss.backward()
            opt.step()
            self.losses.append(float(loss.detach()))
        self.model = model.eval()
        self._model_on = {}
        return self

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model_on": {}}  # ship the fit, never device copies

    @torch.no_grad()
    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """Row-aligned similarities (p,)."""
        if self.model is None:
            raise RuntimeError("learned similarity: call fit(a, b, labels) first")
        model, w = self.model, next(self.model.parameters())
        if (w.device, w.dtype) != (a.device, a.dtype):  # fitted elsewhere: a copy on a's device
            key = (a.device, a.dtype)
            if key not in self._model_on:
                self._model_on[key] = copy.deepcopy(model).to(a.device, a.dtype)
            model = self._model_on[key]
        return torch.sigmoid(model(a, b))

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, chunk: int = 1 << 16) -> Tensor:
        """All pairs (n, m), evaluated in chunks of pairs."""
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"dimension mismatch: X has d={x.shape[1]}, Y has d={y.shape[1]}")
        n, m = x.shape[0], y.shape[0]
        out = torch.empty(n * m, dtype=x.dtype, device=x.device)
        rows = max(1, chunk // max(1, m))
        for i in range(0, n, rows):
            xa = x[i:i + rows]
            a = xa.repeat_interleave(m, dim=0)
            b = y.repeat(xa.shape[0], 1)
            out[i * m:(i + xa.shape[0]) * m] = self.pairwise(a, b)
        return out.view(n, m)
