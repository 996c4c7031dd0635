"""The theme gate: which themes a query is about (pure torch, float64).

The model's theme heads come with a gate, a linear layer over the fused state
whose softmax gives each theme a weight (`models.heads.ThemeHeads`). Training
gives it no loss (the contrastive and relational terms read the heads'
embeddings, never the gate), so on its own it stays at its random
initialisation. It is fitted instead, after training, as what it is reported
as: a classifier of an item's theme, from the item's fused state as the
service computes it for a query (`serving.gate`), against the corpus's theme
tags. An item with several themes counts for each of them equally (soft
targets).

The fit is multinomial logistic regression with an L2 penalty on the weights
(features standardised first, folded back into the returned layer), solved by
L-BFGS in float64; the penalty is chosen from a grid by log loss on
validation items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class Gate:
    """weight (T, H) and bias (T,) of the gate layer: softmax(x @ weight.T + bias)."""

    weight: np.ndarray
    bias: np.ndarray
    l2: float

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, T) theme weights of fused states x (n, H)."""
        z = np.asarray(x, np.float64) @ self.weight.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def theme_targets(themes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with at least one theme of the (n, T) bool tags, and their targets:
    (rows,), (len(rows), T) uniform over each row's themes."""
    t = np.asarray(themes, bool)
    if t.ndim != 2:
        raise ValueError(f"theme tags must be (items, themes), got shape {t.shape}")
    count = t.sum(axis=1)
    rows = np.flatnonzero(count > 0)
    return rows, t[rows].astype(np.float64) / count[rows, None]


def _loss(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
          l2: float) -> torch.Tensor:
    logp = torch.log_softmax(x @ w.T + b, dim=1)
    return -(y * logp).sum(1).mean() + 0.5 * l2 * (w * w).sum()


def fit_gate(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 500) -> Gate:
    """Multinomial logistic regression of soft targets y (n, T) (rows sum to 1) on
    features x (n, H): minimises mean cross-entropy + l2/2 |W|^2 over the
    standardised features; returns the layer on the original features."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"fit_gate needs x (n, H) and y (n, T) with n > 0, got "
                         f"{x.shape} and {y.shape}")
    if l2 <= 0:
        raise ValueError(f"fit_gate needs l2 > 0, got {l2}")
    mu = x.mean(axis=0)
    sd = np.maximum(x.std(axis=0), 1e-8)
    xs = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(y)
    w = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)
    prior = np.log(np.maximum(y.mean(axis=0), 1e-12))
    b = torch.tensor(prior - prior.mean(), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(w, b, xs, yt, l2)
        loss.backward()
        return loss

    opt.step(closure)
    ws = w.detach().numpy() / sd  # back to the unstandardised features
    return Gate(ws, b.detach().numpy() - ws @ mu, float(l2))


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of soft targets y under probs (both (n, T))."""
    return float(-(np.asarray(y) * np.log(np.maximum(probs, 1e-300))).sum(axis=1).mean())


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose most likely theme is one of their themes (y > 0)."""
    top = np.argmax(probs, axis=1)
    return float(np.mean(np.asarray(y)[np.arange(len(top)), top] > 0))


def majority_accuracy(train_y: np.ndarray, y: np.ndarray) -> float:
    """`accuracy` of always answering the most common theme of train_y."""
    top = int(np.argmax(np.asarray(train_y).sum(axis=0)))
    return float(np.mean(np.asarray(y)[:, top] > 0))


def choose_gate(x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                grid: Sequence[float] = L2_GRID) -> tuple[Gate, dict[str, float]]:
    """`fit_gate` at each l2 of the grid on (x, y); the one with the lowest log loss
    on (val_x, val_y), with its validation figures and the majority baseline's."""
    if len(val_x) == 0:
        raise ValueError("choose_gate needs validation items")
    best: tuple[float, Gate] | None = None
    for l2 in grid:
        gate = fit_gate(x, y, l2)
        loss = log_loss(gate.probabilities(val_x), val_y)
        if best is None or loss < best[0]:
            best = (loss, gate)
    assert best is not None
    loss, gate = best
    p = gate.probabilities(val_x)
    return gate, {"l2": gate.l2, "val_log_loss": loss, "val_accuracy": accuracy(p, val_y),
                  "val_majority_accuracy": majority_accuracy(y, val_y),
                  "train_items": int(len(x)), "val_items": int(len(val_x))}
