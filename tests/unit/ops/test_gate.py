"""The theme gate's fit (ops.gate): a float64 optimum checked against scipy's
L-BFGS-B on the same objective written out in numpy, soft targets, the L2 choice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from culturesim_ray.ops.gate import (
    accuracy,
    choose_gate,
    fit_gate,
    log_loss,
    majority_accuracy,
    theme_targets,
)


def blobs(n: int, h: int = 12, t: int = 4, seed: int = 0, scale: float = 0.8
          ) -> tuple[np.ndarray, np.ndarray]:
    """Items of t themes around t centres, offset and scaled unevenly (so the
    standardisation matters), with one-hot tags."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, t, n)
    centres = np.random.default_rng(99).normal(size=(t, h))
    x = (centres[c] * scale + rng.normal(size=(n, h))) * np.linspace(0.5, 4, h) + 3.0
    tags = np.zeros((n, t), bool)
    tags[np.arange(n), c] = True
    return x, tags


def reference(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Probabilities of the float64 optimum found by scipy on standardised features."""
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    t, h = y.shape[1], x.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:t * h].reshape(t, h), theta[t * h:]
        z = xs @ w.T + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        f = -(y * np.log(p)).sum(1).mean() + 0.5 * l2 * (w * w).sum()
        g = (p - y) / len(x)
        return f, np.concatenate([(g.T @ xs + l2 * w).ravel(), g.sum(0)])

    r = minimize(objective, np.zeros(t * h + t), jac=True, method="L-BFGS-B",
                 options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-16})
    w, b = r.x[:t * h].reshape(t, h), r.x[t * h:]
    z = xs @ w.T + b
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_fit_is_the_float64_optimum(l2):
    x, tags = blobs(400)
    _, y = theme_targets(tags)
    gate = fit_gate(x, y, l2)
    np.testing.assert_allclose(gate.probabilities(x), reference(x, y, l2), atol=1e-5)


def test_soft_targets_split_an_item_over_its_themes():
    tags = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], bool)
    rows, y = theme_targets(tags)
    assert rows.tolist() == [0, 1, 3]  # an untagged item has no target
    np.testing.assert_allclose(y, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    x, one_hot = blobs(300, t=3)
    both = one_hot.copy()
    both[:50] = True  # some items carry every theme
    _, ys = theme_targets(both)
    np.testing.assert_allclose(fit_gate(x, ys, 1e-2).probabilities(x),
                               reference(x, ys, 1e-2), atol=1e-5)


def test_the_gate_learns_themes_it_was_not_fitted_on_and_beats_the_majority():
    x, tags = blobs(1200, seed=1)
    _, y = theme_targets(tags)
    gate, report = choose_gate(x[:800], y[:800], x[800:1000], y[800:1000])
    p = gate.probabilities(x[1000:])
    assert np.allclose(p.sum(1), 1.0) and (p > 0).all()
    test_acc = accuracy(p, y[1000:])
    assert test_acc > majority_accuracy(y[:800], y[1000:]) + 0.3
    assert report["l2"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert report["val_accuracy"] > report["val_majority_accuracy"]
    # the chosen penalty has the lowest validation log loss of the grid
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        assert report["val_log_loss"] <= log_loss(
            fit_gate(x[:800], y[:800], l2).probabilities(x[800:1000]), y[800:1000]) + 1e-12


def test_noise_gets_a_strong_penalty_and_near_prior_answers():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 20))
    tags = np.zeros((600, 3), bool)
    tags[np.arange(600), rng.choice(3, 600, p=[0.6, 0.3, 0.1])] = True
    _, y = theme_targets(tags)
    gate, report = choose_gate(x[:400], y[:400], x[400:], y[400:])
    assert report["l2"] >= 1e-1
    np.testing.assert_allclose(gate.probabilities(x[400:]).mean(0), y[:400].mean(0), atol=0.05)


def test_bad_shapes_and_penalty_are_refused():
    with pytest.raises(ValueError, match="n > 0"):
        fit_gate(np.zeros((0, 3)), np.zeros((0, 2)), 1e-2)
    with pytest.raises(ValueError, match="l2 > 0"):
        fit_gate(np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]], 0.0)
    with pytest.raises(ValueError, match="validation"):
        choose_gate(np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]], np.zeros((0, 3)),
                    np.zeros((0, 2)))
