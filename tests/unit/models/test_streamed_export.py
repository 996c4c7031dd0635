"""The export streamed from the store (`training.export`) equals the whole-graph
forward held in memory (`CultureSim.layer_inputs`, `export_heads` over the graphs
the store was made from), for both branch kinds and both convs, with blocks
smaller than a modality so a block's sources lie in other blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.training.batch import store_from_graphs
from culturesim_ray.training.export import culture_heads, state_path, write_layer_states

RELATIONS = [["image", "depicts", "text"], ["text", "depicts", "image"]]


def _store(n_cultures: int = 7, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    graphs = {}
    sizes = {"image": 40, "text": 61}  # uneven, so blocks end inside a modality
    for j, m in enumerate(sorted(sizes)):
        n = sizes[m]
        culture = torch.arange(n) % n_cultures
        culture[-3:] = 0  # culture 0 has the most items; culture 6 none of the last rows
        x = torch.randn(n_cultures, 8 + j, generator=g)[culture] + 0.5 * torch.randn(
            n, 8 + j, generator=g) + j
        ei, _ = knn_edges(x, 4)
        graphs[m] = ModalityGraph(x, ei, culture, torch.rand(n, 2, generator=g) < 0.5)
    # cross-modal links among the first rows only: later blocks have none
    pairs = torch.stack([torch.arange(0, 16, 2), torch.arange(1, 61, 3)[:8]])
    graphs["text"].incoming = {("image", "depicts"): pairs}
    graphs["image"].incoming = {("text", "depicts"): pairs.flip(0)}
    return store_from_graphs(graphs, [f"c{i}" for i in range(n_cultures)], ["a", "b"]), graphs


def _model(store, graph: str, conv: str, layers: int, raw_weight: float) -> CultureSim:
    torch.manual_seed(1)
    cfg = CultureSimConfig(store.in_dims, ["a", "b"], hidden=16, out=8, layers=layers,
                           conv=conv, graph=graph, relations=RELATIONS if graph == "hetero"
                           else [], raw_weight=raw_weight, theme_raw=True)
    model = CultureSim(cfg)
    model.set_center_means({m: torch.from_numpy(np.asarray(x)).mean(0)
                            for m, x in store.x.items()})
    for norm in model.token_norms.values():  # running statistics away from (0, 1)
        norm.running_mean.normal_(0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("graph,conv,layers", [("homo", "sage", 2), ("homo", "gat", 3),
                                               ("hetero", "sage", 2), ("hetero", "gat", 2)])
@pytest.mark.parametrize("block", [9, 1000])
def test_streamed_states_and_heads_equal_the_whole_graph_forward(tmp_path, graph, conv,
                                                                 layers, block):
    store, graphs = _store()
    model = _model(store, graph, conv, layers, raw_weight=0.6)
    with torch.no_grad():
        want_states = model.layer_inputs(graphs)
        want = model.export_heads(graphs, len(store.cultures))
    states = write_layer_states(model, store, str(tmp_path), block=block)
    assert set(states) == {"image", "text"}
    for m, files in states.items():
        assert len(files) == layers + 1
        for i, (got, ref) in enumerate(zip(files, want_states[m], strict=True)):
            assert got.dtype == np.float32 and got.shape == tuple(ref.shape)
            assert np.abs(ref.numpy()).max() > 0.1  # not an all-zero comparison
            np.testing.assert_allclose(got, ref.numpy(), atol=2e-5, err_msg=f"{m} layer {i}")
        assert state_path(str(tmp_path), m, layers).endswith(f"state-{layers}.npy")
    got = culture_heads(model, store, states, block=block)
    assert got.keys() == want.keys()
    assert torch.equal(got["cultures"], want["cultures"])
    for head in want:
        assert got[head].shape == want[head].shape, head
        torch.testing.assert_close(got[head], want[head], atol=2e-5, rtol=1e-4)


def test_streamed_heads_without_the_raw_residual(tmp_path):
    store, graphs = _store(seed=9)
    model = _model(store, "homo", "sage", 2, raw_weight=0.0)
    with torch.no_grad():
        want = model.export_heads(graphs, len(store.cultures))
    got = culture_heads(model, store, write_layer_states(model, store, str(tmp_path), 16), 16)
    for head in want:
        torch.testing.assert_close(got[head], want[head], atol=2e-5, rtol=1e-4)
