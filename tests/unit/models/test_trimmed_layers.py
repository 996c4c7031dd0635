"""A sampled mini-batch's layers update only the rows a later layer reads
(`CultureSim.layer_inputs` with `ModalityGraph.depth_prefix`): the seeds'
states and the culture embeddings equal the untrimmed forward's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.training.batch import sample_batch, store_from_graphs


def _store(n_cultures: int = 8, per: int = 12, d: int = 8):
    g = torch.Generator().manual_seed(3)
    graphs = {}
    for j, m in enumerate(["image", "text"]):
        n = n_cultures * per
        culture = torch.arange(n) % n_cultures
        x = torch.randn(n_cultures, d, generator=g)[culture] + 0.5 * torch.randn(
            n, d, generator=g) + j
        ei, _ = knn_edges(x, 5)
        graphs[m] = ModalityGraph(x, ei, culture, torch.rand(n, 2, generator=g) < 0.5)
    return store_from_graphs(graphs, [f"c{i}" for i in range(n_cultures)], ["a", "b"])


@pytest.mark.parametrize("conv", ["sage", "gat"])
@pytest.mark.parametrize("layers,fanouts", [(2, (4, 3)), (3, (4, 3)), (2, (4, 3, 2))])
def test_trimmed_layers_give_the_seeds_the_untrimmed_states(conv, layers, fanouts):
    store = _store()
    rng = np.random.default_rng(0)
    seeds = rng.choice(store.num_items, 20, replace=False)
    batch = sample_batch(store, seeds, 8, fanouts, rng)
    torch.manual_seed(0)
    model = CultureSim(CultureSimConfig({"image": 8, "text": 8}, ["a", "b"], hidden=16,
                                        out=8, layers=layers, conv=conv)).eval()
    full = {m: replace(g, depth_prefix=None) for m, g in batch.graphs.items()}
    with torch.no_grad():
        trimmed_states = model.item_states(batch.graphs)
        full_states = model.item_states(full)
    trimmed_any = False
    for m, g in batch.graphs.items():
        assert g.depth_prefix is not None and g.depth_prefix[-1] == g.x.shape[0]
        seeds_m = int(g.pool.sum())
        assert int(g.pool[:seeds_m].sum()) == seeds_m  # seeds come first
        got, want = trimmed_states[m], full_states[m]
        assert len(got) <= len(want)
        trimmed_any |= len(got) < len(want)
        assert torch.allclose(got[:seeds_m].double(), want[:seeds_m].double(), atol=1e-5)
    assert trimmed_any  # the test exercises the trimmed path
    keep = {m: g.pool for m, g in batch.graphs.items()}
    with torch.no_grad():
        a = model(batch.graphs, 8, keep)
        b = model(full, 8, keep)
    for head in a:
        assert torch.allclose(a[head], b[head], atol=1e-5), head
        assert a[head].abs().sum() > 0


def test_a_trimmed_batch_pools_its_seeds_whatever_a_view_keeps():
    store = _store()
    rng = np.random.default_rng(1)
    batch = sample_batch(store, rng.choice(store.num_items, 10, replace=False), 8, (4, 3), rng)
    torch.manual_seed(0)
    model = CultureSim(CultureSimConfig({"image": 8, "text": 8}, ["a", "b"], hidden=16,
                                        out=8)).eval()
    every = {m: torch.ones(g.x.shape[0], dtype=torch.bool) for m, g in batch.graphs.items()}
    seeds = {m: g.pool.clone() for m, g in batch.graphs.items()}
    assert any(int(k.sum()) < len(k) for k in seeds.values())  # some rows are not seeds
    with torch.no_grad():
        a, b = model(batch.graphs, 8, every), model(batch.graphs, 8, seeds)
    assert torch.equal(a["cultures"], b["cultures"])
    torch.testing.assert_close(a["general"], b["general"])
