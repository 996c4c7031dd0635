"""Set-level similarities against naive float64 numpy; blocking, symmetry, invariance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.ops import setsim
from culturesim_ray.ops.setsim import SET_NAMES, set_similarity

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")])]
SIZES = (3, 12, 7, 5, 9)
OPTIONS = {"mmd": {"sigma": 2.5}, "sliced_wasserstein": {"n_proj": 16, "n_quantiles": 10}}


def make(sizes=SIZES, d=8, seed=0):
    """Cultures with different centres and scales, items interleaved: (x (n, d) float32, labels)."""
    rng = np.random.default_rng(seed)
    xs, ls = [], []
    for c, m in enumerate(sizes):
        xs.append(rng.normal(size=d) * 2 + 1 + (0.3 + 0.5 * c) * rng.normal(size=(m, d)))
        ls.append(np.full(m, c))
    perm = rng.permutation(sum(sizes))
    x = np.concatenate(xs).astype(np.float32)[perm]
    return torch.from_numpy(x), torch.from_numpy(np.concatenate(ls)[perm])


# --- naive references (full pairwise matrices, float64) -------------------------

def pairwise(x):
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))  # (n, n)


def ref_discrepancy(x, lab, c, kernel):
    k = kernel(pairwise(x))
    out = np.zeros((c, c))
    for a in range(c):
        for b in range(c):
            ab = k[np.ix_(lab == a, lab == b)].mean()
            out[a, b] = k[np.ix_(lab == a, lab == a)].mean() + k[np.ix_(lab == b, lab == b)].mean() - 2 * ab
    return np.maximum(out, 0)


def ref_mmd(x, lab, c, sigma):
    return np.sqrt(ref_discrepancy(x, lab, c, lambda dd: np.exp(-dd ** 2 / (2 * sigma ** 2))))


def ref_energy(x, lab, c):
    return ref_discrepancy(x, lab, c, lambda dd: -dd)  # 2 E|A-B| - E|A-A'| - E|B-B'|


def ref_sw(x, lab, c, n_proj, n_quantiles, seed=0):
    dirs = setsim.directions(x.shape[1], n_proj, seed).numpy()
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    q = [np.quantile(x[lab == a] @ dirs.T, levels, axis=0) for a in range(c)]
    return np.array([[np.sqrt(np.mean((q[a] - q[b]) ** 2)) for b in range(c)] for a in range(c)])


def ref_confusion(x, lab, c, temperature=0.05):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = np.full((c, c), np.nan)
    for a in range(c):
        members = np.flatnonzero(lab == a)
        if len(members) < 2:
            continue
        rows = []
        for i in members:
            cents = np.stack([u[lab == b].mean(0) for b in range(c)])
            cents[a] = u[[j for j in members if j != i]].mean(0)
            cos = cents @ u[i] / np.linalg.norm(cents, axis=1)
            e = np.exp(cos / temperature - (cos / temperature).max())
            rows.append(e / e.sum())
        p[a] = np.mean(rows, axis=0)
    # an undefined row (one-item culture) takes the other direction; 0 if both are undefined
    s = np.nan_to_num(np.where(np.isnan(p), p.T, np.where(np.isnan(p.T), p, (p + p.T) / 2)))
    np.fill_diagonal(s, 1.0)
    return s


def ref_centered_cosine(x, lab, c):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    z = np.stack([u[lab == a].mean(0) for a in range(c)])
    z -= z.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    np.fill_diagonal(s, 1.0)
    return s


def reference(name, x, lab, c):
    """Distances for the distance methods (similarity = 1 / (1 + distance)), else similarities."""
    x = x.double().numpy()
    lab = lab.numpy()
    if name == "mmd":
        return ref_mmd(x, lab, c, **OPTIONS["mmd"])
    if name == "energy":
        return ref_energy(x, lab, c)
    if name == "sliced_wasserstein":
        return ref_sw(x, lab, c, **OPTIONS["sliced_wasserstein"])
    if name == "confusion":
        return ref_confusion(x, lab, c)
    return ref_centered_cosine(x, lab, c)


def as_reference(name, s):
    s = s.cpu().numpy()
    return 1.0 / s - 1.0 if name in ("mmd", "energy", "sliced_wasserstein") else s


def run(name, x, lab, block=7, **kw):
    return set_similarity(name, x, lab, len(SIZES), block=block, **{**OPTIONS.get(name, {}), **kw})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SET_NAMES)
def test_against_numpy(name, device):
    x, lab = make()
    s = run(name, x.to(device), lab.to(device))
    assert s.dtype == torch.float64 and s.shape == (5, 5) and s.device.type == device
    assert torch.equal(s, s.T)
    np.testing.assert_allclose(np.diag(s.cpu().numpy()), 1.0)
    np.testing.assert_allclose(as_reference(name, s), reference(name, x, lab, 5), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", SET_NAMES)
def test_block_size_and_onehot_path_do_not_matter(name, monkeypatch):
    x, lab = make()
    want = run(name, x, lab, block=2048)
    for block in (1, 5, 7, 36):
        torch.testing.assert_close(run(name, x, lab, block=block), want, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(setsim, "ONEHOT_MAX", 0)  # index_add over labels instead
    torch.testing.assert_close(run(name, x, lab, block=7), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SET_NAMES)
def test_item_permutation_invariance(name):
    x, lab = make(seed=1)
    perm = torch.from_numpy(np.random.default_rng(5).permutation(len(lab)))
    torch.testing.assert_close(run(name, x[perm], lab[perm]), run(name, x, lab), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SET_NAMES)
def test_same_distribution_is_more_similar_than_shifted(name):
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(8)
    mu[0] = 3.0
    shift = torch.zeros(8)
    shift[1] = 3.0
    a, a2 = mu + torch.randn(60, 8, generator=g), mu + torch.randn(60, 8, generator=g)
    b = mu + shift + torch.randn(60, 8, generator=g)
    lab = torch.arange(3).repeat_interleave(60)
    s = set_similarity(name, torch.cat([a, a2, b]), lab, 3, block=50)
    assert s[0, 1] > s[0, 2] and s[0, 1] > s[1, 2]


def test_confusion_singleton_culture():
    x, lab = make(sizes=(1, 4, 6, 1, 5))
    s = run("confusion", x, lab)
    np.testing.assert_allclose(s.numpy(), reference("confusion", x, lab, 5), rtol=1e-6, atol=1e-12)
    assert s[0, 3] == 0  # both rows undefined


def test_median_sigma_and_seeds():
    x, _ = make()
    d = pairwise(x.double().numpy())
    want = np.median(d[np.triu_indices(len(d), 1)])
    assert setsim.median_sigma(x) == pytest.approx(want, rel=1e-9)
    # subsampled: deterministic for a seed, and the seed matters
    assert setsim.median_sigma(x, sample=10, seed=3) == setsim.median_sigma(x, sample=10, seed=3)
    assert setsim.median_sigma(x, sample=10, seed=3) != setsim.median_sigma(x, sample=10, seed=4)
    _, lab = make()
    assert torch.equal(run("mmd", x, lab, sigma=None), run("mmd", x, lab, sigma=None))
    sw = run("sliced_wasserstein", x, lab)
    assert torch.equal(sw, run("sliced_wasserstein", x, lab))
    assert not torch.equal(sw, run("sliced_wasserstein", x, lab, seed=1))


def test_errors():
    x, lab = make()
    with pytest.raises(ValueError, match="unknown set similarity 'nope'; known: mmd, energy"):
        set_similarity("nope", x, lab, 5)
    with pytest.raises(ValueError, match="mmd: unknown option.*bandwidth; known: sigma, seed, sample"):
        set_similarity("mmd", x, lab, 5, bandwidth=1.0)
    with pytest.raises(ValueError, match="2-d"):
        set_similarity("energy", x[0], lab, 5)
    with pytest.raises(ValueError, match=r"labels: expected shape \(36,\)"):
        set_similarity("energy", x, lab[:-1], 5)
    bad = lab.clone()
    bad[4] = 5
    with pytest.raises(ValueError, match=r"item 4 has culture 5, outside 0..4"):
        set_similarity("energy", x, bad, 5)
    y = x.clone()
    y[6, 2] = float("nan")
    y[9, 0] = float("inf")
    with pytest.raises(ValueError, match="row 6 holds NaN or inf"):
        set_similarity("confusion", y, lab, 5)
    with pytest.raises(ValueError, match="culture 5 has no items"):
        set_similarity("mmd", x, lab, 7)
    with pytest.raises(ValueError, match="at least 2 cultures"):
        set_similarity("mmd", x, torch.zeros_like(lab), 1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        set_similarity("mmd", x, lab, 5, sigma=0.0)
