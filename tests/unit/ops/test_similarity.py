"""Every SPEC S1 similarity against a float64 numpy reference, plus its properties."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.learned import LearnedSimilarity

RNG = np.random.default_rng(7)
X64 = RNG.normal(size=(9, 16))
Y64 = RNG.normal(size=(7, 16)) * 0.8 + 0.1


def t(a):
    return torch.from_numpy(a).float()


def ref_pairs(f, x, y):
    return np.array([[f(a, b) for b in y] for a in x])


REFS = {
    "cosine": lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
    "dot": lambda a, b: a @ b,
    "euclidean": lambda a, b: 1 / (1 + np.linalg.norm(a - b)),
    "l1": lambda a, b: 1 / (1 + np.abs(a - b).sum()),
    "ndd": lambda a, b: a @ b / np.sqrt((a @ a + b @ b) / 2),
    "log_scaled": lambda a, b: a @ b / np.log(1 + np.linalg.norm(a) * np.linalg.norm(b)),
    "hybrid": lambda a, b: a @ b / (np.linalg.norm(a - b) + 1),
}


def per_dim_ref(a, b, q=0.1):
    s = np.sort(np.exp(-np.abs(a - b)))
    return s[int(np.floor(q * len(s))):].mean()


def poincare_ref(a, b):
    def ball(v):
        n = np.linalg.norm(v)
        return np.tanh(n) * v / n
    a, b = ball(a), ball(b)
    arg = 1 + 2 * np.sum((a - b) ** 2) / ((1 - a @ a) * (1 - b @ b))
    return 1 / (1 + np.arccosh(arg))


@pytest.mark.parametrize("name", sorted(REFS))
def test_matches_float64_reference(name):
    got = S.get(name)(t(X64), t(Y64)).double().numpy()
    want = ref_pairs(REFS[name], X64, Y64)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_per_dim_and_poincare_match_reference():
    np.testing.assert_allclose(S.per_dim(t(X64), t(Y64)).numpy(),
                               ref_pairs(per_dim_ref, X64, Y64), atol=1e-5)
    np.testing.assert_allclose(S.trimmed_per_dim(t(X64), t(Y64), q=0.25).numpy(),
                               ref_pairs(lambda a, b: per_dim_ref(a, b, 0.25), X64, Y64),
                               atol=1e-5)
    np.testing.assert_allclose(S.poincare(t(X64), t(Y64)).numpy(),
                               ref_pairs(poincare_ref, X64, Y64), rtol=1e-4, atol=1e-5)


def test_mahalanobis_matches_reference_with_sklearn_shrinkage():
    lw = pytest.importorskip("sklearn.covariance")
    data = np.concatenate([X64, Y64])
    sigma, shrink = S.ledoit_wolf(torch.from_numpy(data))
    ref_sigma, ref_shrink = lw.ledoit_wolf(data)
    np.testing.assert_allclose(sigma.numpy(), ref_sigma, atol=1e-10)
    assert shrink == pytest.approx(ref_shrink)
    inv = np.linalg.inv(ref_sigma)
    want = ref_pairs(lambda a, b: 1 / (1 + np.sqrt((a - b) @ inv @ (a - b))), X64, Y64)
    m = S.Mahalanobis().fit(torch.from_numpy(data).float())
    np.testing.assert_allclose(m(t(X64), t(Y64)).numpy(), want, rtol=1e-4, atol=1e-5)


def test_mahalanobis_works_when_n_is_below_d():
    few = torch.from_numpy(RNG.normal(size=(5, 64))).float()
    m = S.Mahalanobis().fit(few)
    assert 0 < m.shrinkage <= 1
    s = m(few, few)
    assert torch.isfinite(s).all()
    assert torch.equal(s.argmax(1), torch.arange(5))


DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_fitted_maps_apply_to_inputs_of_another_dtype_and_device(device):
    """Mahalanobis and learned maps fitted in float64 on the CPU (as the all-pairs job fits
    them) score float32 blocks on `device` as their float64 CPU call does."""
    x64, y64 = torch.from_numpy(X64), torch.from_numpy(Y64)
    xd, yd = x64.to(device, torch.float32), y64.to(device, torch.float32)
    labels = ((x64[:7] - y64).norm(dim=1) < 5.6).double()
    assert 0 < labels.sum() < 7  # both labels present
    for fn in (S.Mahalanobis().fit(torch.cat([x64, y64])),
               LearnedSimilarity(hidden=16, epochs=30).fit(x64[:7], y64, labels)):
        ref = fn(x64, y64)
        got = fn(xd, yd)
        assert got.device.type == device and got.dtype == torch.float32
        np.testing.assert_allclose(got.cpu().double().numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
        assert ref.std() > 1e-3  # not a constant map
        again = pickle.loads(pickle.dumps(fn))  # ships to a Ray task without device copies
        np.testing.assert_allclose(again(x64, y64).numpy(), ref.numpy(), rtol=0, atol=0)


SYMMETRIC = ["cosine", "dot", "euclidean", "l1", "ndd", "log_scaled", "hybrid", "poincare",
             "per_dim", "mahalanobis"]


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric(name):
    x = t(X64)
    s = S.get(name)(x, x)
    torch.testing.assert_close(s, s.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["euclidean", "l1", "poincare", "per_dim", "mahalanobis"])
def test_distance_based_self_similarity_is_maximal(name):
    x = t(X64)
    s = S.get(name)(x, x)
    assert torch.equal(s.argmax(1), torch.arange(len(x)))
    assert torch.allclose(s.diagonal(), torch.ones(len(x)), atol=2e-3)


@pytest.mark.parametrize("name", ["euclidean", "l1", "poincare", "per_dim"])
def test_range_zero_one(name):
    s = S.get(name)(t(X64), t(Y64))
    assert bool(((s > 0) & (s <= 1)).all())


def test_cosine_range_and_ndd_keeps_norm():
    s = S.cosine(t(X64), t(Y64))
    assert bool((s.abs() <= 1 + 1e-6).all())
    a = torch.tensor([[1.0, 0.0]])
    near, far = torch.tensor([[1.0, 0.0]]), torch.tensor([[10.0, 0.0]])
    assert S.cosine(a, near) == S.cosine(a, far)  # cosine cannot tell them apart
    assert S.ndd(a, near) != S.ndd(a, far)  # NDD keeps the norm information
    huge = torch.tensor([[1000.0, 0.0]])
    assert S.dot(a, huge) == 1000.0 and S.ndd(a, huge) < 1.5  # and damps very long vectors


def test_poincare_points_stay_inside_ball():
    big = torch.tensor([[1e6, 0.0], [0.999999, 0.0], [0.1, 0.2]])
    inside = S.to_ball(big)
    assert bool((inside.norm(dim=1) <= 1 - S.BALL_EPS + 1e-7).all())
    d = S.poincare(big, big)
    assert torch.isfinite(d).all()
    d2 = S.poincare(big, big, map_to_ball=False)
    assert torch.isfinite(d2).all()


def test_critical_vote_grades():
    a = torch.zeros(1, 10) + 0.3
    close = a + 0.01
    mid = a.clone()
    mid[0, :2] += 2.0  # 20% of dimensions far apart
    far = a + 2.0
    share = S.critical_share(a, torch.cat([close, mid, far]), threshold=0.5)
    torch.testing.assert_close(share, torch.tensor([[0.0, 0.2, 1.0]]))
    dissimilar, grade = S.critical_vote(a, torch.cat([close, mid, far]), threshold=0.5, share=0.3)
    assert dissimilar.tolist() == [[False, False, True]]
    assert [S.CRITICAL_GRADES[g] for g in grade[0].tolist()] == ["high", "medium", "low"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dimension mismatch: X has d=16, Y has d=3"):
        S.cosine(t(X64), torch.ones(2, 3))
    with pytest.raises(ValueError, match="unknown similarity 'cosin'"):
        S.get("cosin")
    with pytest.raises(ValueError, match="q must be in"):
        S.trimmed_per_dim(t(X64), t(Y64), q=1.0)


def test_learned_similarity_learns_what_cosine_cannot():
    # label: same sign in dimension 0 (an XOR of signs): cosine is near chance on it
    g = torch.Generator().manual_seed(0)
    a = torch.randn(800, 8, generator=g)
    b = torch.randn(800, 8, generator=g)
    y = ((a[:, 0] > 0) == (b[:, 0] > 0)).float()
    learned = LearnedSimilarity(epochs=400).fit(a[:600], b[:600], y[:600])
    pred = learned.pairwise(a[600:], b[600:]) > 0.5
    acc_learned = (pred.float() == y[600:]).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(a[600:], b[600:])
    acc_cos = max(((cos > th).float() == y[600:]).float().mean().item()
                  for th in torch.linspace(-1, 1, 41).tolist())
    assert acc_learned > 0.9 and acc_cos < 0.7
    assert learned.losses[-1] < learned.losses[0]
    s = learned(a[:5], b[:4])
    assert s.shape == (5, 4) and bool(((s >= 0) & (s <= 1)).all())
    torch.testing.assert_close(s[2, 3], learned.pairwise(a[2:3], b[3:4])[0])
    torch.testing.assert_close(learned(a[:4], b[:4]), learned(b[:4], a[:4]).T)  # symmetric


@pytest.mark.parametrize("q", [0.0, 0.1, 0.3])
def test_per_dim_cpu_kernel_matches_float64_reference_and_the_torch_path(q):
    """Blocks of 4096+ pairs take the numba kernel; with ties and repeated values too."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(70, 40))
    y = rng.normal(size=(60, 40)) * 0.7 - 0.2
    x[:5] = np.round(x[:5], 1)  # ties inside a pair's values
    y[:5] = np.round(y[:5], 1)
    y[7] = x[3]  # a pair with every s_k = 1
    got = S.trimmed_per_dim(t(x), t(y), q).numpy()
    np.testing.assert_allclose(got, ref_pairs(lambda a, b: per_dim_ref(a, b, q), x, y),
                               atol=2e-6)
    torch_path = S.trimmed_per_dim(t(x).requires_grad_(), t(y), q).detach().numpy()
    np.testing.assert_allclose(got, torch_path, atol=2e-6)
    assert got[3, 7] == pytest.approx(1.0)


def test_per_dim_large_values_take_the_torch_path():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(70, 8)) * 200  # e^{|x|} would overflow float64 past ~700
    y = rng.normal(size=(60, 8)) * 200
    x[0, 0] = 500.0
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    got = S.trimmed_per_dim(t(x), t(y)).numpy()
    np.testing.assert_allclose(got, ref_pairs(per_dim_ref, x, y), atol=1e-6)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("q", [0.05, 0.1, 0.3])
def test_per_dim_cpu_kernel_on_embedding_like_vectors(q):
    """d = 384 unit vectors (the kernel's counting grid, the gathered band and the
    quickselect fallback for identical vectors), float32 and float64 products."""
    rng = np.random.default_rng(13)
    centres = rng.normal(size=(5, 384))
    x = centres[rng.integers(0, 5, 80)] + 0.6 * rng.normal(size=(80, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x[:60].copy()
    y[10:] += 0.02 * rng.normal(size=(50, 384))  # y[:10] equal x[:10]: sigma = 0
    ref = ref_pairs(lambda a, b: per_dim_ref(a, b, q), x, y)
    np.testing.assert_allclose(S.trimmed_per_dim(t(x), t(y), q).numpy(), ref, atol=2e-6)
    assert 40 < np.abs(x * 250).max() < 300  # products in float64
    big = S.trimmed_per_dim(t(x * 250), t(y * 250), q).numpy()
    np.testing.assert_allclose(big, ref_pairs(lambda a, b: per_dim_ref(a, b, q), x * 250,
                                              y * 250), atol=2e-6)


def test_learned_similarity_in_batches_of_pairs():
    # more pairs than a step takes: each step draws `batch` of them (seeded); the
    # fit still learns the rule, repeats with its seed, and a batch of at least the
    # pairs is the full-batch fit itself
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    y = ((a[:, 0] > 0) == (b[:, 0] > 0)).float()
    fit = LearnedSimilarity(epochs=400, batch=128, seed=3).fit(a[:800], b[:800], y[:800])
    acc = ((fit.pairwise(a[800:], b[800:]) > 0.5).float() == y[800:]).float().mean().item()
    assert acc > 0.85
    again = LearnedSimilarity(epochs=400, batch=128, seed=3).fit(a[:800], b[:800], y[:800])
    assert again.losses == fit.losses
    full = LearnedSimilarity(epochs=20, seed=3).fit(a[:800], b[:800], y[:800])
    assert LearnedSimilarity(epochs=20, batch=800, seed=3).fit(
        a[:800], b[:800], y[:800]).losses == full.losses
    assert LearnedSimilarity(epochs=20, batch=799, seed=3).fit(
        a[:800], b[:800], y[:800]).losses != full.losses
    with pytest.raises(ValueError, match="batch"):
        LearnedSimilarity(batch=0)
