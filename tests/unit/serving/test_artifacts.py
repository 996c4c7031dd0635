"""The replica's prebuilt state: written by the train job, loaded (memory-mapped) by
serving, with the same answers as the state computed in memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.serving.artifacts import (
    ArrowNeighbors,
    StaleStateError,
    load_serving_state,
    write_serving_state,
)
from culturesim_ray.serving.predictor import FusionPredictor
from synthetic_data import synthetic


def culture_retriever(model, graphs, names):
    """A Retriever over the model's general culture vectors (raw slots: one-modality views)."""
    from culturesim_ray.serving.predictor import Retriever

    with torch.no_grad():
        out = model(graphs, len(names))
    slots = {m: (model.cfg.slot(m).start, model.cfg.slot(m).stop) for m in model.cfg.in_dims}
    return Retriever([names[i] for i in out["cultures"].tolist()], out["general"].numpy(),
                     slots=slots)


@pytest.fixture(scope="module")
def model_graphs_state(tmp_path_factory):
    torch.manual_seed(0)
    graphs = synthetic(n_cultures=6, per=8)
    cfg = CultureSimConfig({m: int(g.x.shape[1]) for m, g in graphs.items()},
                           ["food", "music"], hidden=32, out=16, raw_weight=0.5)
    model = CultureSim(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("train")
    torch.save(model.state_dict(), root / "model.pt")
    manifest = write_serving_state(model, graphs, str(root / "serving"), str(root / "model.pt"))
    return model, graphs, root, manifest


@pytest.mark.parametrize("modality", ["text", "image"])
def test_loaded_state_answers_as_the_state_computed_in_memory(model_graphs_state, modality):
    model, graphs, root, manifest = model_graphs_state
    assert manifest["modalities"][modality]["index"] == "flat"
    state = load_serving_state(str(root / "serving"), str(root / "model.pt"))
    assert isinstance(state.layers[modality][0], np.memmap)
    assert state.layers[modality][0].dtype == np.float16
    loaded = FusionPredictor(model, None, k_graph=5, state=state)
    built = FusionPredictor(model, graphs, k_graph=5)
    rng = np.random.default_rng(3)
    q = (graphs[modality].x[:4].numpy() + rng.normal(0, 0.5, (4, graphs[modality].x.shape[1]))
         ).astype(np.float32)
    assert (loaded.neighbours(modality, q) == built.neighbours(modality, q)).all()
    a, b = loaded.item_state(modality, q), built.item_state(modality, q)
    # float16 storage of the corpus states: a relative error of ~1e-3, not more
    assert torch.allclose(a, b, rtol=5e-3, atol=5e-3)
    ga = loaded.general(loaded.fuse(modality, q), modality, q)
    gb = built.general(built.fuse(modality, q), modality, q)
    cos = (ga * gb).sum(1) / np.linalg.norm(ga, axis=1) / np.linalg.norm(gb, axis=1)
    assert (cos > 0.9999).all()


def test_state_of_other_weights_is_refused(model_graphs_state, tmp_path):
    model, _, root, _ = model_graphs_state
    other = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save(other, tmp_path / "model.pt")
    with pytest.raises(StaleStateError, match="other weights"):
        load_serving_state(str(root / "serving"), str(tmp_path / "model.pt"))


def test_arrow_neighbours_sorted_by_rank_with_k_and_unknown_keys(tmp_path):
    rows = []
    for theme in ("general", "food"):
        for a in ("B", "A", "C"):
            others = [c for c in "ABC" if c != a]
            for r, b in enumerate(reversed(others), 1):
                rows.append({"theme": theme, "culture_a": a, "culture_b": b,
                             "score": 1.0 / r, "rank": r, "similarity": "cosine"})
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # any order on disk
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    t = ArrowNeighbors(str(tmp_path / "pairs.parquet"))
    assert t.themes == ["food", "general"] and t.cultures == ["A", "B", "C"]
    got = t.rows("food", "B", 10)
    assert [r["rank"] for r in got] == [1, 2] and [r["culture"] for r in got] == ["C", "A"]
    assert len(t.rows("general", "A", 1)) == 1
    assert t.rows("general", "Z", 3) is None and t.rows("music", "A", 3) is None


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_blocked_full_graph_forward_equals_the_plain_one(conv):
    torch.manual_seed(1)
    graphs = synthetic(n_cultures=5, per=9, cross=True)
    cfg = CultureSimConfig({m: int(g.x.shape[1]) for m, g in graphs.items()}, ["food"],
                           hidden=16, out=8, conv=conv, graph="hetero",
                           relations=[["image", "artifact", "text"],
                                      ["text", "artifact", "image"]])
    model = CultureSim(cfg).eval()
    with torch.no_grad():
        whole = model.layer_inputs(graphs)
        blocked = model.layer_inputs(graphs, block=7)
    for m in whole:
        for a, b in zip(whole[m], blocked[m], strict=True):
            assert torch.allclose(a.double(), b.double(), atol=1e-5)


def test_item_cultures_and_query_mix_travel_with_the_state(model_graphs_state, tmp_path):
    """The state written with culture names and a query mix: the loaded replica ranks
    one-item queries (`QueryRanker`, set-level term included) as the in-memory one."""
    from culturesim_ray.ops.query_score import QueryMix
    from culturesim_ray.serving.predictor import QueryRanker

    model, graphs, root, _ = model_graphs_state
    names = [f"c{i}" for i in range(6)]
    mix = QueryMix(nearest=0.5, m=2, shortlist=12, learned=0.25)
    write_serving_state(model, graphs, str(tmp_path / "serving"), str(root / "model.pt"),
                        cultures=names, query_mix=mix.to_dict())
    state = load_serving_state(str(tmp_path / "serving"), str(root / "model.pt"))
    assert state.manifest["cultures"] == names
    for m, g in graphs.items():
        assert isinstance(state.item_culture[m], np.memmap)
        assert (np.asarray(state.item_culture[m]) == g.culture.numpy()).all()
    loaded = FusionPredictor(model, None, k_graph=5, state=state)
    built = FusionPredictor(model, graphs, k_graph=5, cultures=names)
    assert loaded.query_mix == mix and built.query_mix.plain  # in memory: no mix given
    retriever = culture_retriever(model, graphs, names)
    q = graphs["text"].x[:5].numpy() + 0.3
    a = QueryRanker(loaded, retriever).topk(loaded.fuse("text", q), "text", "text", q, 6)
    b = QueryRanker(built, retriever, mix).topk(built.fuse("text", q), "text", "text", q, 6)
    assert (a[1] == b[1]).all()
    np.testing.assert_allclose(a[0], b[0], atol=5e-3)  # float16 corpus states
    # state written before the mix existed: the plain general cosine
    assert FusionPredictor(model, None, state=load_serving_state(
        str(root / "serving"), str(root / "model.pt"))).query_mix.plain


def test_each_ranked_culture_comes_with_its_nearest_corpus_item(model_graphs_state, tmp_path):
    """Item ids written with the state (memory-mapped on load); `QueryRanker.rank` gives
    each ranked culture its most similar corpus item among the query's shortlist, and
    `FusionPredictor.evidence` names it: checked against a brute-force search (plain
    cosines: a mix that debiases no modality)."""
    from culturesim_ray.ops.query_score import QueryMix
    from culturesim_ray.serving.predictor import QueryRanker

    model, graphs, root, _ = model_graphs_state
    names = [f"c{i}" for i in range(6)]
    ids = {m: pa.array([f"{m}-{i:03d}" for i in range(g.x.shape[0])])
           for m, g in graphs.items()}
    shortlist = 10
    write_serving_state(model, graphs, str(tmp_path / "serving"), str(root / "model.pt"),
                        cultures=names, query_mix=QueryMix(shortlist=shortlist,
                                                           abtt=()).to_dict(),
                        item_ids=ids)
    state = load_serving_state(str(tmp_path / "serving"), str(root / "model.pt"))
    assert state.item_ids["text"].to_pylist() == ids["text"].to_pylist()
    loaded = FusionPredictor(model, None, k_graph=5, state=state)
    retriever = culture_retriever(model, graphs, names)
    ranker = QueryRanker(loaded, retriever)
    x = graphs["text"].x.numpy().astype(np.float64)
    q = (x[:4] + np.random.default_rng(5).normal(0, 0.4, (4, x.shape[1]))).astype(np.float32)
    scores, pos, (rows, cos) = ranker.rank(loaded.fuse("text", q), "text", "text", q, 6)
    a, b = ranker.topk(loaded.fuse("text", q), "text", "text", q, 6)
    assert (b == pos).all() and np.allclose(a, scores)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    culture = graphs["text"].culture.numpy()
    for i in range(len(q)):
        sims = xn @ qn[i]
        short = np.argsort(-sims)[:shortlist]
        for j, p in enumerate(pos[i]):
            c = names.index(retriever.cultures[p])
            own = [r for r in short if culture[r] == c]
            if not own:
                assert rows[i, j] == -1 and np.isnan(cos[i, j])
                continue
            assert rows[i, j] == own[0]
            assert cos[i, j] == pytest.approx(sims[own[0]], abs=1e-5)
        shown = loaded.evidence("text", rows[i], cos[i])
        assert [e["item_id"] if e else None for e in shown] == [
            f"text-{r:03d}" if r >= 0 else None for r in rows[i]]
    # a state without item ids (an older run): the rows are still found, no ids shown
    old = FusionPredictor(model, None, state=load_serving_state(
        str(root / "serving"), str(root / "model.pt")))
    assert old.evidence("text", rows[0], cos[0]) == [None] * 6


def test_the_dominant_directions_travel_with_the_state(model_graphs_state, tmp_path):
    """A mix that debiases texts: the state holds their directions and coordinates
    (not the images'), the loaded replica ranks as the in-memory one, and a state
    written again without it keeps none."""
    from culturesim_ray.ops.query_score import QueryMix
    from culturesim_ray.serving.predictor import QueryRanker

    model, graphs, root, _ = model_graphs_state
    names = [f"c{i}" for i in range(6)]
    mix = QueryMix(shortlist=12, abtt=("text",))
    out = str(tmp_path / "serving")
    manifest = write_serving_state(model, graphs, out, str(root / "model.pt"), cultures=names,
                                   query_mix=mix.to_dict())
    assert manifest["modalities"]["text"]["abtt_directions"] >= 1
    assert manifest["modalities"]["image"]["abtt_directions"] == 0
    state = load_serving_state(out, str(root / "model.pt"))
    assert set(state.abtt) == {"text"}
    assert isinstance(state.abtt["text"][1], np.memmap)
    loaded = FusionPredictor(model, None, k_graph=5, state=state)
    built = FusionPredictor(model, graphs, k_graph=5, cultures=names)
    np.testing.assert_allclose(loaded.abtt["text"][1], built.abtt["text"][1], atol=1e-6)
    retriever = culture_retriever(model, graphs, names)
    q = graphs["text"].x[:5].numpy() + 0.3
    a = QueryRanker(loaded, retriever).rank(loaded.fuse("text", q), "text", "text", q, 6)
    b = QueryRanker(built, retriever, mix).rank(built.fuse("text", q), "text", "text", q, 6)
    assert (a[1] == b[1]).all() and (a[2][0] == b[2][0]).all()
    np.testing.assert_allclose(a[0], b[0], atol=5e-3)  # float16 corpus states
    write_serving_state(model, graphs, out, str(root / "model.pt"), cultures=names,
                        query_mix=QueryMix(abtt=()).to_dict())
    assert not (tmp_path / "serving" / "text" / "abtt_basis.npy").exists()
    assert load_serving_state(out, str(root / "model.pt")).abtt == {}


def test_the_graph_stages_index_is_copied_with_the_replicas_nprobe(tmp_path):
    """write_states given the graph stage's index file: the serving index holds the same
    lists (the same answers as the index item_index builds over those rows), probed as
    item_index probes; an index over other rows is refused, naming the file."""
    from culturesim_ray.graph import build as gb
    from culturesim_ray.serving.artifacts import item_index, write_states

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(20, 16))[rng.integers(0, 20, 800)]
         + 0.3 * rng.normal(size=(800, 16))).astype(np.float32)
    kind, nlist = gb.choose_index(len(x), 100)
    graph_index = gb.build_index(x, kind, nlist, 16, 100_000, 0, normalise=True)
    assert graph_index.nprobe == 16
    path = str(tmp_path / "graph.faiss")
    gb.save_index(graph_index, path)
    states = {"text": [rng.normal(size=(800, 8)).astype(np.float32)]}
    torch.save({"w": torch.ones(1)}, tmp_path / "model.pt")
    manifest = write_states(states, {"text": x}, {"text": np.zeros(800, np.int64)},
                            str(tmp_path / "serving"), str(tmp_path / "model.pt"),
                            ivf_min=100, indexes={"text": path})
    assert manifest["modalities"]["text"]["index"] == "ivf"
    served = load_serving_state(str(tmp_path / "serving"), str(tmp_path / "model.pt"))
    index = served.indexes["text"]
    built = item_index(x, ivf_min=100)
    assert index.nprobe == built.nprobe == min(32, nlist) and index.ntotal == 800
    q = gb.normalize_rows(x[:50] + 0.1 * rng.normal(size=(50, 16)).astype(np.float32))
    d_served, i_served = index.search(q, 10)
    d_built, i_built = built.search(q, 10)
    np.testing.assert_array_equal(i_served, i_built)
    np.testing.assert_allclose(d_served, d_built, rtol=1e-6)
    with pytest.raises(ValueError, match="graph.faiss.*799 x 16"):
        write_states({"text": [states["text"][0][:799]]}, {"text": x[:799]},
                     {"text": np.zeros(799, np.int64)}, str(tmp_path / "serving2"),
                     str(tmp_path / "model.pt"), ivf_min=100, indexes={"text": path})
