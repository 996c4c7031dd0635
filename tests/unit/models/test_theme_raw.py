"""Theme embeddings with the raw slots of each culture's items of that theme
(`CultureSimConfig.theme_raw`): the exported vectors, the culture map per theme and the
service's theme re-rank, against float64 references computed by hand."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from culturesim_ray import runs
from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.ops.modality_cosine import ModalityCosine
from culturesim_ray.serving.predictor import FusionPredictor, ThemeReranker
from raw_residual_data import N_CULTURES, raw_means

DIMS = {"text": 5, "image": 3}
ITEMS = {"text": [3, 2, 4, 1, 0], "image": [0, 2, 1, 3, 2]}  # per culture
C = N_CULTURES
THEMES = ["food", "rites"]
W = 0.9


def theme_graphs(seed: int = 0) -> dict[str, ModalityGraph]:
    """Two modalities, items of very different norms; "food" on a random half of the
    items, "rites" on culture 1's and culture 3's items only."""
    g = torch.Generator().manual_seed(seed)
    graphs = {}
    for m, d in DIMS.items():
        culture = torch.repeat_interleave(torch.arange(C), torch.tensor(ITEMS[m]))
        n = len(culture)
        x = torch.randn(n, d, generator=g) * torch.exp(2 * torch.randn(n, 1, generator=g)) + 0.01
        themes = torch.stack([torch.rand(n, generator=g) < 0.5,
                              (culture == 1) | (culture == 3)], dim=1)
        themes[0, 0] = True  # every modality has a food item
        graphs[m] = ModalityGraph(x, knn_edges(x, 2)[0], culture, themes)
    return graphs


def make_model(theme_raw: bool = True, seed: int = 0) -> CultureSim:
    torch.manual_seed(seed)
    model = CultureSim(CultureSimConfig(dict(DIMS), list(THEMES), hidden=8, out=4,
                                        raw_weight=W, theme_raw=theme_raw))
    with torch.no_grad():  # away from the init, so no identity hides a bug
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def theme_means(graphs, t: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """float64 by hand: modality -> ((C, d) normalised mean of the culture's L2-normalised
    items of theme t (0 where none), (C,) how many)."""
    return raw_means(graphs, {m: gr.themes[:, t] for m, gr in graphs.items()})


def theme_slots_ref(graphs, t: int) -> np.ndarray:
    """(C, raw_dim) float64: the theme means in sorted modality order, each scaled by
    sqrt(share of the culture's theme-t items in that modality); 0 without any."""
    means = theme_means(graphs, t)
    total = np.maximum(sum(n for _, n in means.values()), 1)
    return np.concatenate([means[m][0] * np.sqrt(means[m][1] / total)[:, None]
                           for m in sorted(means)], axis=1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_theme_embeddings_carry_the_raw_slots_of_their_theme_items():
    graphs = theme_graphs()
    model = make_model()
    cfg = model.cfg
    with torch.no_grad():
        plain = model(graphs, C)
        out = model.export_heads(graphs, C)
    assert torch.equal(out["general"], plain["general"])
    for t, theme in enumerate(THEMES):
        v = out[theme].double().numpy()
        assert v.shape == (C, cfg.raw_dim + cfg.out)
        ref = theme_slots_ref(graphs, t)
        np.testing.assert_allclose(v[:, :cfg.raw_dim], math.sqrt(W) * ref, atol=1e-6)
        np.testing.assert_allclose(v[:, cfg.raw_dim:],
                                   math.sqrt(1 - W) * plain[theme].double().numpy(), atol=1e-6)
    rites = out["rites"].numpy()
    assert not rites[[0, 2, 4], :cfg.raw_dim].any()  # no rites item: no raw part
    np.testing.assert_allclose(np.linalg.norm(rites[[1, 3]], axis=1), 1.0, atol=1e-6)
    # a run trained before theme_raw: the theme heads as trained
    old = make_model(theme_raw=False)
    with torch.no_grad():
        o, p = old.export_heads(graphs, C), old(graphs, C)
    assert all(torch.equal(o[h], p[h]) for h in ["general", *THEMES])


def test_modality_cosine_compares_rows_without_raw_part_by_their_learned_part():
    rng = np.random.default_rng(4)
    raw = unit(rng.normal(size=(4, 6)))
    raw[[1, 3]] = 0.0  # no item of the theme
    p = unit(rng.normal(size=(4, 3)))
    has = np.linalg.norm(raw, axis=1) > 0
    x = np.concatenate([math.sqrt(W) * raw, np.sqrt(np.where(has, 1 - W, 1.0))[:, None] * p], 1)
    for lam in (0.1, 1.0):
        sim = ModalityCosine([(0, 6)], learned=lam).fit(torch.from_numpy(x))
        got = sim(torch.from_numpy(x), torch.from_numpy(x)).double().numpy()
        assert np.isfinite(got).all()
        xn = unit(x)
        for a in range(4):
            for b in range(4):
                if has[a] and has[b]:
                    ref = (W * raw[a] @ raw[b] + lam * (1 - W) * p[a] @ p[b]) / (W + lam * (1 - W))
                elif lam == 1.0:
                    ref = xn[a] @ xn[b]  # as trained: the plain cosine
                else:
                    ref = p[a] @ p[b]  # the learned parts alone
                np.testing.assert_allclose(got[a, b], ref, atol=1e-5)


def test_head_similarity_reads_the_theme_heads_of_a_theme_raw_run():
    graphs = theme_graphs()
    for theme_raw in (True, False):
        model = make_model(theme_raw)
        conf = {**asdict(model.cfg), "map_learned": 0.1}
        with torch.no_grad():
            v = model.export_heads(graphs, C)["rites"].numpy()
        sim = runs.head_similarity(conf, "rites", v)
        if not theme_raw:
            assert sim == "cosine"
            continue
        assert isinstance(sim, ModalityCosine) and sim.learned == 0.1
        got = sim(torch.from_numpy(v), torch.from_numpy(v)).double().numpy()
        ref_raw = theme_slots_ref(graphs, 1)
        p = unit(v[:, model.cfg.raw_dim:].astype(np.float64))
        # cultures 1 and 3 have rites items (text and image): their shared modalities'
        # share-weighted mean cosine, the learned part at a tenth
        num = ref_raw[1] @ ref_raw[3]
        shares = [np.linalg.norm(ref_raw[i, s]) for i in (1, 3)
                  for s in (model.cfg.slot("image"), model.cfg.slot("text"))]
        shared = shares[0] * shares[2] + shares[1] * shares[3]
        ref = (W * num / shared + 0.1 * (1 - W) * p[1] @ p[3]) / (W + 0.1 * (1 - W))
        np.testing.assert_allclose(got[1, 3], ref, atol=1e-5)
        np.testing.assert_allclose(got[0, 2], p[0] @ p[2], atol=1e-5)  # neither has rites


@pytest.mark.parametrize("modality", ["text", "image"])
def test_theme_rerank_scores_the_theme_items_and_the_learned_part(modality):
    graphs = theme_graphs()
    model = make_model()
    cfg = model.cfg
    with torch.no_grad():
        out = model.export_heads(graphs, C)
    names = [f"c{i}" for i in range(C)]
    vectors = {t: (names, out[t].numpy()) for t in THEMES}
    lam = 0.1
    rr = ThemeReranker(model, vectors, names, learned=lam)
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(2, DIMS[modality])) * [[0.1], [20.0]]).astype(np.float32)
    fused = FusionPredictor(model, graphs, k_graph=2).fuse(modality, x)
    candidates = np.array([[4, 1, 3, 0, 2], [2, 3, -1, -1, -1]])
    answer = rr.rerank(fused, candidates, None, modality, x)
    with torch.no_grad():
        heads, _ = model.theme_heads(fused)
    x64 = unit(x.astype(np.float64))
    for t, theme in enumerate(THEMES):
        mu, n = theme_means(graphs, t)[modality]
        p_c = unit(out[theme][:, cfg.raw_dim:].double().numpy())
        p_q = unit(heads[theme].double().numpy())
        ref = W * (x64 @ mu.T) * (n > 0) + lam * (1 - W) * (p_q @ p_c.T)  # (B, C)
        for i in range(2):
            cand = candidates[i][candidates[i] >= 0]
            got = answer[i][theme]["ranking"]
            want = sorted(cand, key=lambda c: -ref[i, c])
            assert [c for c, _ in got] == list(want)
            np.testing.assert_allclose([s for _, s in got], [ref[i, c] for c in want], atol=1e-5)
    with pytest.raises(ValueError, match="modality and vectors"):
        rr.rerank(fused, candidates, ["food"])
