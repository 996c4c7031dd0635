"""The serving predictors without Ray: a query's inductive embedding is exactly the
model's forward pass over the graph with the query added; retrieval and the
per-theme re-ranking agree with brute force in float64."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.serving.neighbors import NeighborTable
from culturesim_ray.serving.predictor import (
    FusionPredictor,
    QueryError,
    Retriever,
    ThemeReranker,
    format_answer,
    named,
)
from synthetic_data import synthetic


@pytest.fixture(scope="module", params=["sage", "gat", "sage-hetero", "gat-hetero"])
def model_and_graphs(request):
    torch.manual_seed(0)
    conv, _, graph = request.param.partition("-")
    graphs = synthetic(n_cultures=6, per=8, cross=bool(graph))
    relations = [["image", "artifact", "text"], ["text", "artifact", "image"]] if graph else []
    cfg = CultureSimConfig({m: int(g.x.shape[1]) for m, g in graphs.items()},
                           ["food", "music"], hidden=32, out=16, conv=conv,
                           graph=graph or "homo", relations=relations)
    model = CultureSim(cfg).eval()
    with torch.no_grad():  # move every weight away from its init so no identity hides a bug
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, graphs


def _augmented(graphs, modality, q, nbrs, n_cultures):
    """The corpus graphs plus the query nodes: edges neighbour -> query only; each
    query its own culture (ids n_cultures, n_cultures + 1, ...)."""
    g = graphs[modality]
    n = len(g.x)
    b, k = nbrs.shape
    extra = torch.stack([torch.as_tensor(nbrs.reshape(-1)),
                         torch.arange(n, n + b).repeat_interleave(k)])
    aug = dict(graphs)  # cross-modal edges (hetero) keep their rows: the queries come last
    aug[modality] = replace(
        g, x=torch.cat([g.x, torch.as_tensor(q)]),
        edge_index=torch.cat([g.edge_index, extra], dim=1),
        culture=torch.cat([g.culture, torch.arange(n_cultures, n_cultures + b)]),
        themes=torch.cat([g.themes, torch.zeros(b, g.themes.shape[1], dtype=torch.bool)]))
    return aug


@pytest.mark.parametrize("modality", ["text", "image"])
def test_query_embedding_equals_the_forward_pass_on_the_augmented_graph(
        model_and_graphs, modality):
    model, graphs = model_and_graphs
    pred = FusionPredictor(model, graphs, k_graph=5)
    rng = np.random.default_rng(1)
    q = (graphs[modality].x[:3].numpy() + rng.normal(0, 0.5, (3, graphs[modality].x.shape[1]))
         ).astype(np.float32)
    nbrs = pred.neighbours(modality, q)
    # the neighbours are the cosine nearest corpus items (float64 brute force)
    x = graphs[modality].x.double().numpy()
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1, keepdims=True)).T
    assert (np.sort(nbrs, 1) == np.sort(np.argsort(-cos, 1)[:, :5], 1)).all()

    n_cultures = 6
    aug = _augmented(graphs, modality, q, nbrs, n_cultures)
    with torch.no_grad():
        states = model.item_states(aug)
        ref_state = states[modality][-3:]
        ref = model(aug, n_cultures + 3, cultures=torch.arange(n_cultures, n_cultures + 3))
    assert torch.allclose(pred.item_state(modality, q), ref_state, atol=1e-5)
    fused = pred.fuse(modality, q)
    assert np.allclose(pred.general(fused), ref["general"].numpy(), atol=1e-5)
    # a one-item culture: only its modality is present, the other one masked
    assert not torch.allclose(ref["general"], model(graphs, n_cultures)["general"][:3])


def test_unknown_modality_is_a_query_error(model_and_graphs):
    model, graphs = model_and_graphs
    pred = FusionPredictor(model, {"text": graphs["text"]})
    with pytest.raises(QueryError, match="no image branch") as err:
        pred.item_state("image", np.ones((1, 16), np.float32))
    assert err.value.field == "image" and err.value.status == 422


def test_retriever_topk_equals_float64_cosine():
    rng = np.random.default_rng(2)
    vec = rng.normal(size=(50, 8)).astype(np.float32)
    names = [f"c{i}" for i in range(50)]
    q = rng.normal(size=(4, 8)).astype(np.float32)
    scores, pos = Retriever(names, vec).topk(q, 7)
    v64 = vec.astype(np.float64) / np.linalg.norm(vec, axis=1, keepdims=True)
    q64 = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    ref = q64 @ v64.T
    assert (pos == np.argsort(-ref, 1)[:, :7]).all()
    assert np.allclose(scores, np.sort(ref, 1)[:, ::-1][:, :7], atol=1e-5)
    assert Retriever(names, vec).topk(q, 500)[1].shape == (4, 50)  # k capped at C


def test_top_k_equals_a_full_sort():
    from culturesim_ray.serving.retrieval import top_k

    rng = np.random.default_rng(4)
    distinct = rng.normal(size=(9, 40))
    tied = rng.integers(0, 6, size=(9, 40)).astype(np.float64)  # many ties
    for k in (1, 5, 40, 100):
        got_s, got_p = top_k(distinct, k)
        assert (got_p == np.argsort(-distinct, axis=1)[:, :min(k, 40)]).all()
        assert (got_s == np.take_along_axis(distinct, got_p, 1).astype(np.float32)).all()
        got_s, got_p = top_k(tied, k)
        assert (got_s == -np.sort(-tied, axis=1)[:, :min(k, 40)]).all()  # the k best scores
        assert (np.take_along_axis(tied, got_p, 1) == got_s).all()
        same = got_s[:, 1:] == got_s[:, :-1]  # equal scores: the lower position first
        assert (got_p[:, 1:][same] > got_p[:, :-1][same]).all()


def test_rerank_orders_candidates_by_each_theme_head(model_and_graphs):
    model, graphs = model_and_graphs
    pred = FusionPredictor(model, graphs)
    with torch.no_grad():
        full = model(graphs, 6)
    cultures = [f"c{i}" for i in range(6)]
    theme_vectors = {t: (cultures, full[t].numpy()) for t in ("food", "music")}
    rr = ThemeReranker(model, theme_vectors, cultures)
    q = graphs["text"].x[:2].numpy()
    fused = pred.fuse("text", q)
    candidates = np.array([[4, 1, 3], [0, 5, 2]])
    answer = rr.rerank(fused, candidates, ["music"])
    assert list(answer[0]) == ["music"]
    with torch.no_grad():
        per_theme, gate = model.theme_heads(fused)
    for i in range(2):
        qv = per_theme["music"][i].double().numpy()
        ref = {int(c): float(full["music"][c].double().numpy() @ qv) for c in candidates[i]}
        got = answer[i]["music"]["ranking"]
        assert [c for c, _ in got] == sorted(ref, key=lambda c: -ref[c])
        assert all(abs(s - ref[c]) < 1e-5 for c, s in got)
        assert answer[i]["music"]["gate"] == pytest.approx(float(gate[i, 1]))
    with pytest.raises(QueryError, match="unknown theme"):
        rr.rerank(fused, candidates, ["cuisine"])
    # themes not named: every theme, the query's likeliest (by the gate) first; named:
    # in the order asked
    model = copy.deepcopy(model)
    rr = ThemeReranker(model, theme_vectors, cultures)
    with torch.no_grad():  # a gate that ranks the two themes differently for the queries
        f = fused[:, 0].double()
        w = 4.0 / float(f[1] - f[0])
        model.theme_heads.gate.weight.zero_()
        model.theme_heads.gate.bias.zero_()
        model.theme_heads.gate.weight[0, 0] = w  # food - music logit: -2 and +2
        model.theme_heads.gate.bias[0] = -w * float(f.mean())
        _, gate = model.theme_heads(fused)
    assert (gate[0, 0] > gate[0, 1]) != (gate[1, 0] > gate[1, 1])
    for i, ans in enumerate(rr.rerank(fused, candidates)):
        assert list(ans) == sorted(["food", "music"], key=lambda t: -float(
            gate[i, ["food", "music"].index(t)]))
    assert all(list(a) == ["music", "food"] for a in rr.rerank(fused, candidates,
                                                                ["music", "food"]))
    out = format_answer(["c4", "c1", "c3"], np.array([0.9, 0.5, 0.1]),
                        named(answer[0], cultures))
    assert [g["culture"] for g in out["general"]] == ["c4", "c1", "c3"]
    assert {r["culture"]: r["general_rank"] for r in out["themes"]["music"]["ranking"]} == {
        "c4": 1, "c1": 2, "c3": 3}
    assert out["note"] is None
    assert format_answer(["c4"], np.array([0.9]), {}, note="read little")["note"] == "read little"


def test_neighbor_table(tmp_path):
    rows = [{"theme": "general", "culture_a": "A", "culture_b": b, "score": s, "rank": r,
             "similarity": "cosine"} for r, (b, s) in enumerate([("B", 0.9), ("C", 0.4)], 1)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    t = NeighborTable(str(tmp_path / "pairs.parquet"))
    assert [r["culture"] for r in t.answer("A", "general", 1)["neighbors"]] == ["B"]
    with pytest.raises(QueryError, match="unknown culture 'Z'") as err:
        t.answer("Z")
    assert err.value.status == 404
    with pytest.raises(QueryError, match="unknown theme 'food'"):
        t.answer("A", "food")
    # a name as a user types it: the table's own, but for case, accents or spacing
    assert t.resolve(" a ", "General") == ("A", "general")
    got = t.answer("a", "GENERAL")
    assert (got["culture"], got["theme"]) == ("A", "general")
    assert [r["culture"] for r in got["neighbors"]] == ["B", "C"]
    with pytest.raises(QueryError, match=r"unknown culture 'Z' \(GET /v1/cultures lists the "
                                         r"1 cultures\)"):
        t.resolve("Z")
