"""The culture map's read-out (`ops.modality_cosine.ModalityCosine`, `runs.general_similarity`):
the raw part compared over the modalities both cultures have, the learned part at its
weight, against float64 references computed by hand from the input vectors."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from culturesim_ray import runs
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from raw_residual_data import (
    DIMS,
    N_CULTURES,
    general_of,
    learned,
    modality_normalised_ref,
    slots_of,
)


@pytest.mark.parametrize("w", [0.3, 0.9])
def test_modality_cosine_compares_the_raw_part_over_shared_modalities(w):
    from culturesim_ray.ops.allpairs import blockwise_topk
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    graphs, model, general = general_of(w)
    term, shared = modality_normalised_ref(graphs, w)
    assert not shared[0, 4] and shared.sum() > N_CULTURES  # 0: text only, 4: image only
    iu = np.triu_indices(N_CULTURES, 1)
    fill = float(np.mean(term[iu][shared[iu]]))
    p = learned(model, graphs)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    ref = np.where(shared, term, fill) + (1 - w) * (p @ p.T)
    slots = list(slots_of(model.cfg).values())
    sim = ModalityCosine(slots).fit(general * 3.0)  # any row norms: it normalises them
    assert sim.fill == pytest.approx(fill, abs=1e-6)
    got = sim(general.double(), general.double()).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # it differs from the plain cosine exactly where a culture's modalities differ
    plain = (general @ general.T).double().numpy()
    assert np.abs(got - plain).max() > 1e-2
    # row blocks against all rows (the all-pairs kernel) give the dense top-k
    v, idx = blockwise_topk(general, general, k=3, sim=sim, block_rows=2, block_cols=3,
                            exclude_self=True)
    dense = torch.from_numpy(got).float().fill_diagonal_(float("-inf"))
    np.testing.assert_allclose(v.numpy(), torch.topk(dense, 3, dim=1).values.numpy(), atol=1e-5)
    with pytest.raises(RuntimeError, match="fit"):
        ModalityCosine(slots)(general, general)


@pytest.mark.parametrize("lam", [0.0, 0.1, 2.5])
def test_modality_cosine_weighs_the_learned_part_of_the_culture_map(lam):
    from culturesim_ray.ops.allpairs import blockwise_topk
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    w = 0.9
    graphs, model, general = general_of(w)
    term, shared = modality_normalised_ref(graphs, w)
    iu = np.triu_indices(N_CULTURES, 1)
    fill = float(np.mean(term[iu][shared[iu]]))
    p = learned(model, graphs)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    # float64 by hand: (raw term + lam (1 - w) p.p) / (w + lam (1 - w))
    ref = (np.where(shared, term, fill) + lam * (1 - w) * (p @ p.T)) / (w + lam * (1 - w))
    slots = list(slots_of(model.cfg).values())
    sim = ModalityCosine(slots, learned=lam).fit(general * 0.5)
    got = sim(general.double(), general.double()).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert sim.key == f"modality_cosine(learned={lam:g})"
    # a culture with every modality at the model's shares still scores 1 with itself
    full = [i for i in range(N_CULTURES) if shared[i].all()]
    assert full and np.allclose(np.diag(got)[full], 1.0, atol=1e-6)
    # not the lam = 1 read-out rescaled: the pairs' scores are no affine map of its
    one = ModalityCosine(slots).fit(general)(general.double(), general.double()).numpy()
    assert ModalityCosine(slots).key == "modality_cosine"
    assert np.corrcoef(got[iu], one[iu])[0, 1] < 1 - 1e-4
    v, _ = blockwise_topk(general, general, k=3, sim=sim, block_rows=2, block_cols=3,
                          exclude_self=True)
    dense = torch.from_numpy(got).float().fill_diagonal_(float("-inf"))
    np.testing.assert_allclose(v.numpy(), torch.topk(dense, 3, dim=1).values.numpy(), atol=1e-5)


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_the_learned_weight_fitted_to_a_share_of_the_raw_spread(share):
    """learned_share: lam = share * sd(raw term) / sd(p_a.p_b) over the pairs a < b,
    the raw term with its fill, in float64 by hand; then the map of that lam."""
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    w = 0.9
    graphs, model, general = general_of(w)
    term, shared = modality_normalised_ref(graphs, w)
    iu = np.triu_indices(N_CULTURES, 1)
    fill = float(np.mean(term[iu][shared[iu]]))
    raw = np.where(shared, term, fill)
    p = learned(model, graphs)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    pp = (1 - w) * (p @ p.T)
    lam = share * raw[iu].std() / pp[iu].std()
    slots = list(slots_of(model.cfg).values())
    sim = ModalityCosine(slots, learned=0.7, learned_share=share).fit(general)
    assert sim.learned == pytest.approx(lam, rel=1e-5)
    ref = (raw + lam * pp) / (w + lam * (1 - w))
    np.testing.assert_allclose(sim(general.double(), general.double()).numpy(), ref, atol=1e-6)
    assert f"learned_share={share:g}" in sim.key
    assert sim.manifest_record()["learned_share"] == share
    # learned = the fixed weight, without a share or where a spread is nil
    assert ModalityCosine(slots, learned=0.7).fit(general).learned == 0.7
    assert ModalityCosine(slots, learned=0.7, learned_share=share).fit(general[:1]).learned \
        == 0.7
    with pytest.raises(ValueError, match="learned_share must be a finite share >= 0"):
        ModalityCosine(slots, learned_share=-1.0)
    with pytest.raises(ValueError, match="map_learned_share must be a finite share >= 0"):
        CultureSim(CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=0.9,
                                    map_learned_share=float("nan")))


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf")])
def test_modality_cosine_refuses_a_bad_learned_weight(lam):
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    with pytest.raises(ValueError, match="learned must be a finite weight >= 0"):
        ModalityCosine([(0, 3)], learned=lam)
    with pytest.raises(ValueError, match="map_learned must be a finite weight >= 0"):
        CultureSim(CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=0.9,
                                    map_learned=lam))


def test_modality_cosine_is_the_cosine_when_every_culture_has_the_same_modalities():
    from culturesim_ray.ops.modality_cosine import ModalityCosine
    from culturesim_ray.ops.similarity import cosine

    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 8, generator=g, dtype=torch.float64)
    one = ModalityCosine([(0, 5)]).fit(x)  # one modality: the raw part of every pair shares it
    np.testing.assert_allclose(one(x, x).numpy(), cosine(x, x).numpy(), atol=1e-12)
    # two modalities at the same shares in every culture
    x[:, 0:3] *= 0.6 / x[:, 0:3].norm(dim=1, keepdim=True)
    x[:, 3:5] *= 0.8 / x[:, 3:5].norm(dim=1, keepdim=True)
    x[:, 5:] *= 1.0 / x[:, 5:].norm(dim=1, keepdim=True)
    two = ModalityCosine([(0, 3), (3, 5)]).fit(x)
    np.testing.assert_allclose(two(x, x).numpy(), cosine(x, x).numpy(), atol=1e-12)


def test_general_similarity_of_a_train_run_config():
    cfg = CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=0.9)
    x = np.random.default_rng(0).normal(size=(4, cfg.head_dim("general")))
    sim = runs.general_similarity(asdict(cfg), x)
    assert sim.name == "modality_cosine" and sim.slots == [(0, 3), (3, 8)]
    one = CultureSimConfig({"text": 5}, hidden=8, out=4, raw_weight=0.9)
    assert runs.general_similarity(asdict(one), x[:, :9]) == "cosine"
    assert runs.general_similarity(asdict(CultureSimConfig(dict(DIMS), hidden=8, out=4)),
                                   x[:, :4]) == "cosine"
    # a reweighted learned part: the read-out even with one modality
    one_map = CultureSimConfig({"text": 5}, hidden=8, out=4, raw_weight=0.9, map_learned=0.1)
    sim = runs.general_similarity(asdict(one_map), x[:, :9])
    assert sim.name == "modality_cosine" and sim.learned == 0.1 and sim.slots == [(0, 5)]
    # with one modality it is the cosine of [sqrt(w) r, sqrt(lam (1 - w)) p], renormalised
    xr = torch.from_numpy(x[:, :9].copy())
    xr[:, :5] *= 0.9 ** 0.5 / xr[:, :5].norm(dim=1, keepdim=True)  # a model's slot norms
    xr[:, 5:] *= 0.1 ** 0.5 / xr[:, 5:].norm(dim=1, keepdim=True)
    scaled = torch.cat([xr[:, :5], 0.1 ** 0.5 * xr[:, 5:]], dim=1)
    scaled = scaled / scaled.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(sim.fit(xr)(xr, xr).numpy(), (scaled @ scaled.T).numpy(),
                               atol=1e-12)
    assert runs.general_similarity(asdict(CultureSimConfig({"text": 5}, hidden=8, out=4,
                                                           raw_weight=0.0, map_learned=0.1)),
                                   x[:, :4]) == "cosine"  # no raw residual: no split


def test_general_similarity_is_the_cosine_when_the_shares_agree():
    cfg = CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=0.9)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, cfg.head_dim("general")))
    x[:, 0:3] *= 0.3 / np.linalg.norm(x[:, 0:3], axis=1, keepdims=True)  # image, every row
    x[:, 3:8] *= 0.9 / np.linalg.norm(x[:, 3:8], axis=1, keepdims=True)
    x[:, 8:] *= 0.3 / np.linalg.norm(x[:, 8:], axis=1, keepdims=True)
    assert runs.general_similarity(asdict(cfg), x) == "cosine"
    x[0, 0:3] *= 0.5  # one culture with fewer images
    assert runs.general_similarity(asdict(cfg), x).name == "modality_cosine"
