"""The run's theme gate fitted on its items as queries (serving.gate): the item left
out of its own neighbours, training items to fit, validation items to choose."""

from __future__ import annotations

import numpy as np
import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.ops.gate import accuracy, theme_targets
from culturesim_ray.serving.gate import fit_run_gate, fused_items, set_gate
from culturesim_ray.serving.predictor import FusionPredictor
from culturesim_ray.training.batch import store_from_graphs

THEMES = ["food", "music", "rulers"]


def themed_graphs(n: int = 240, d: int = 10, seed: int = 0) -> dict[str, ModalityGraph]:
    """Two modalities; an item's theme moves it along a theme direction (one theme
    per item, some untagged), its culture along another."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, m in enumerate(["image", "text"]):
        culture = torch.arange(n) % 6
        theme = torch.randint(0, len(THEMES), (n,), generator=g)
        x = (1.5 * torch.randn(len(THEMES), d, generator=g)[theme]
             + torch.randn(6, d, generator=g)[culture] + 0.5 * torch.randn(n, d, generator=g) + j)
        tags = torch.nn.functional.one_hot(theme, len(THEMES)).bool()
        tags[::17] = False  # untagged items
        ei, _ = knn_edges(x, 5)
        out[m] = ModalityGraph(x, ei, culture, tags)
    return out


def setup(seed: int = 0):
    torch.manual_seed(seed)
    graphs = themed_graphs(seed=seed)
    store = store_from_graphs(graphs, [f"c{i}" for i in range(6)], THEMES)
    model = CultureSim(CultureSimConfig({m: 10 for m in graphs}, THEMES, hidden=16,
                                        out=8, raw_weight=0.5)).eval()
    predictor = FusionPredictor(model, graphs, k_graph=5, cultures=store.cultures)
    return graphs, store, model, predictor


def test_an_item_as_a_query_is_not_its_own_neighbour():
    graphs, _, _, predictor = setup()
    x = graphs["text"].x[:30].numpy()
    rows = np.arange(30)
    plain = predictor.neighbours("text", x)
    skipped = predictor.neighbours("text", x, skip=rows)
    assert (plain[:, 0] == rows).all()  # in the corpus, an item finds itself first
    assert not (skipped == rows[:, None]).any()
    # the k nearest of the other items, in order
    np.testing.assert_array_equal(skipped[:, :4], plain[:, 1:])
    assert skipped.shape == plain.shape


def test_fused_items_are_the_service_fusion_of_each_item_without_itself():
    graphs, store, _, predictor = setup()
    nodes = np.array([3, 250, 7, 400])  # text rows follow the image rows (240 each)
    got = fused_items(predictor, store, nodes, block=2)
    off = store.offsets
    for i, node in enumerate(nodes):
        m = "image" if node < off["text"] else "text"
        row = node - off[m]
        want = predictor.fuse(m, graphs[m].x[row:row + 1].numpy(), skip=np.array([row]))
        np.testing.assert_allclose(got[i], want[0].double().numpy(), rtol=1e-6, atol=1e-7)


def test_the_fitted_gate_tells_the_themes_of_items_it_never_saw():
    graphs, store, model, predictor = setup()
    n = store.num_items
    split = np.random.default_rng(1).permutation(n)
    store.seedable = np.sort(split[: n // 2])
    val, test = np.sort(split[n // 2: 3 * n // 4]), np.sort(split[3 * n // 4:])
    before = model.theme_heads.gate.weight.detach().clone()
    gate, report = fit_run_gate(predictor, store, val)
    assert report["themes"] == THEMES and report["train_items"] < n // 2  # untagged left out
    assert report["val_accuracy"] > report["val_majority_accuracy"] + 0.2
    set_gate(model, gate)
    assert not torch.equal(before, model.theme_heads.gate.weight)
    tags = np.concatenate([store.themes[m] for m in store.modalities])
    rows, y = theme_targets(tags[test])
    fused = torch.from_numpy(fused_items(predictor, store, test[rows])).float()
    with torch.no_grad():
        _, probs = model.theme_heads(fused)  # the model's own gate now
    np.testing.assert_allclose(probs.numpy(), gate.probabilities(fused.double().numpy()),
                               atol=1e-5)
    assert accuracy(probs.numpy(), y) > 0.6  # three themes: chance about 0.33


def test_no_gate_to_fit_without_two_themes():
    torch.manual_seed(0)
    graphs = themed_graphs()
    for g in graphs.values():
        g.themes = g.themes[:, :1]
    store = store_from_graphs(graphs, [f"c{i}" for i in range(6)], ["food"])
    model = CultureSim(CultureSimConfig({m: 10 for m in graphs}, ["food"], hidden=16, out=8))
    assert fit_run_gate(FusionPredictor(model.eval(), graphs, k_graph=5), store,
                        np.arange(20)) is None
