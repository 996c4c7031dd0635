"""The raw residual of the general embedding ([sqrt(w) raw slots, sqrt(1 - w) projection]):
culture and query embeddings, the per-modality retrieval view and training through it,
against float64 references computed by hand from the input vectors."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from culturesim_ray import runs
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.queue import MoCoQueue
from culturesim_ray.serving.predictor import FusionPredictor
from culturesim_ray.serving.retrieval import Retriever, modality_view
from culturesim_ray.training.step import StepConfig, moco_step
from raw_residual_data import (
    DIMS,
    N_CULTURES,
    learned,
    make_model,
    raw_dot_ref,
    raw_means,
    raw_slots_ref,
    slots_of,
    small_graphs,
)
from synthetic_data import synthetic


@pytest.mark.parametrize("w", [0.3, 0.9])
def test_culture_cosine_is_the_weighted_raw_and_learned_cosine(w):
    graphs = small_graphs()
    model = make_model(w)
    with torch.no_grad():
        out = model(graphs, N_CULTURES)
    general = out["general"].double().numpy()
    assert out["cultures"].tolist() == list(range(N_CULTURES))
    assert general.shape == (N_CULTURES, 4 + 8) == (N_CULTURES, model.cfg.head_dim("general"))
    np.testing.assert_allclose(np.linalg.norm(general, axis=1), 1.0, atol=1e-6)
    p = learned(model, graphs)
    expected = w * raw_dot_ref(graphs) + (1 - w) * (p @ p.T)
    np.testing.assert_allclose(general @ general.T, expected, atol=1e-5)
    # the two cultures that share no modality meet only in the learned part
    np.testing.assert_allclose(general[0] @ general[4], (1 - w) * p[0] @ p[4], atol=1e-6)
    # the layout: the raw slots in sorted modality order, then the projection
    np.testing.assert_allclose(general[:, :8], math.sqrt(w) * raw_slots_ref(graphs), atol=1e-6)
    np.testing.assert_allclose(general[:, 8:], math.sqrt(1 - w) * p, atol=1e-6)


def test_raw_vectors_use_only_the_kept_items():
    graphs = small_graphs()
    model = make_model(0.5)
    g = torch.Generator().manual_seed(3)
    keep = {m: torch.rand(len(gr.culture), generator=g) < 0.7 for m, gr in graphs.items()}
    keep["text"][graphs["text"].culture == 3] = False  # culture 3 loses its only text item
    keep["text"][graphs["text"].culture == 2] = True
    keep["image"][graphs["image"].culture == 3] = True
    raw = model.raw_vectors(graphs, N_CULTURES, keep).double().numpy()
    ref = raw_slots_ref(graphs, keep)
    np.testing.assert_allclose(raw, ref, atol=1e-6)
    assert not raw[3, model.cfg.slot("text")].any()
    np.testing.assert_allclose(np.linalg.norm(raw[3]), 1.0, atol=1e-6)  # image only: 1/sqrt(1)


@pytest.mark.parametrize("modality", ["text", "image"])
@pytest.mark.parametrize("w", [0.3, 0.9])
def test_one_modality_query_against_the_modality_view(w, modality):
    graphs = small_graphs()
    model = make_model(w)
    cfg = model.cfg
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, DIMS[modality])) * [[0.1], [1.0], [30.0]]).astype(np.float32)
    pred = FusionPredictor(model, graphs, k_graph=2)
    fused = pred.fuse(modality, x)
    q = pred.general(fused, modality, x)
    with torch.no_grad():
        direct = model.query_general(fused, modality, torch.from_numpy(x)).numpy()
        p_q = model.projection(fused).double().numpy()
    np.testing.assert_allclose(q, direct, atol=1e-6)
    with pytest.raises(ValueError, match="raw residual"):
        pred.general(fused)
    # the normalised input in its modality's slot only, the projection after the slots
    x64 = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    other = "image" if modality == "text" else "text"
    np.testing.assert_allclose(q[:, cfg.slot(modality)], math.sqrt(w) * x64, atol=1e-6)
    assert not q[:, cfg.slot(other)].any()
    np.testing.assert_allclose(q[:, cfg.raw_dim:], math.sqrt(1 - w) * p_q, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)

    with torch.no_grad():
        cultures = model(graphs, N_CULTURES)["general"].numpy()
    slots = slots_of(cfg)
    scores = modality_view(cultures, slots, modality).astype(np.float64) @ q.astype(np.float64).T
    mu, n_items = raw_means(graphs)[modality]
    has = n_items > 0
    p_c = learned(model, graphs)
    ref = (w * (mu @ x64.T) * has[:, None] + (1 - w) * (p_c @ p_q.T)).T  # (B, C)
    assert not has.all()  # a culture lacking the modality: the learned part only
    np.testing.assert_allclose(scores.T, ref, atol=1e-5)
    got, pos = Retriever([f"c{i}" for i in range(N_CULTURES)], cultures,
                         slots=slots).topk(q, N_CULTURES, modality)
    assert (pos == np.argsort(-ref, axis=1, kind="stable")).all()
    np.testing.assert_allclose(got, -np.sort(-ref, axis=1), atol=1e-5)


def test_raw_slots_of_a_train_run(tmp_path):
    cfg = CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=0.9)
    (tmp_path / "model_config.json").write_text(json.dumps(asdict(cfg)))
    assert runs.raw_slots(str(tmp_path)) == {"image": (0, 3), "text": (3, 8)} == slots_of(cfg)
    (tmp_path / "model_config.json").write_text(json.dumps(asdict(
        CultureSimConfig(dict(DIMS), hidden=8, out=4))))
    assert runs.raw_slots(str(tmp_path)) is None


def test_raw_weight_zero_is_the_projection_alone():
    graphs = small_graphs()
    model = make_model(0.0)
    cfg = model.cfg
    assert cfg.raw_dim == 0 and cfg.head_dim("general") == cfg.out == cfg.head_dim("any theme")
    with torch.no_grad():
        general = model(graphs, N_CULTURES)["general"]
    assert general.shape == (N_CULTURES, cfg.out)
    np.testing.assert_allclose(general.double().numpy(), learned(model, graphs), atol=1e-6)
    pred = FusionPredictor(model, graphs, k_graph=2)
    x = graphs["text"].x[:2].numpy()
    fused = pred.fuse("text", x)
    with torch.no_grad():
        proj = model.projection(fused).numpy()
        assert torch.equal(model.query_general(fused, "text", torch.from_numpy(x)),
                           model.projection(fused))
    np.testing.assert_allclose(pred.general(fused), proj, atol=0)  # no modality needed
    # the residual adds no parameter: the same seed gives the same weights, and the
    # learned part of a w > 0 model is the w = 0 embedding scaled by sqrt(1 - w)
    with_raw = make_model(0.5)
    a, b = model.state_dict(), with_raw.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert with_raw.cfg.head_dim("general") == cfg.out + 8 and with_raw.cfg.head_dim("t") == 4
    with torch.no_grad():
        mixed = with_raw(graphs, N_CULTURES)["general"]
    torch.testing.assert_close(mixed[:, 8:] / math.sqrt(0.5), general, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("w", [-0.1, 1.0, 1.5])
def test_raw_weight_outside_zero_one_is_an_error(w):
    with pytest.raises(ValueError, match="raw_weight must be in"):
        CultureSim(CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=w))


def test_unknown_slot_is_a_key_error():
    with pytest.raises(KeyError, match="no modality 'sequence'"):
        CultureSimConfig(dict(DIMS), raw_weight=0.5).slot("sequence")


def test_gradients_reach_the_projection_head_without_nan():
    graphs = small_graphs()
    model = make_model(0.9).train()
    keep = {m: torch.ones(len(gr.culture), dtype=torch.bool) for m, gr in graphs.items()}
    keep["text"][graphs["text"].culture == 3] = False  # a culture with a masked modality
    out = model(graphs, N_CULTURES, keep)
    general = out["general"]
    target = torch.randn(general.shape, generator=torch.Generator().manual_seed(0))
    loss = (general * target).sum() + (general @ general.T).triu(1).pow(2).sum()
    loss.backward()
    assert torch.isfinite(general).all() and torch.isfinite(loss)
    for name, p in model.projection.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and float(p.grad.norm()) > 0, name
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_moco_steps_with_queues_of_the_head_dims():
    torch.manual_seed(0)
    graphs = synthetic()
    cfg = CultureSimConfig({"text": 24, "image": 16}, ["music", "craft"], hidden=32, out=16,
                           raw_weight=0.9)
    model = CultureSim(cfg)
    key_model = copy.deepcopy(model)
    heads = ["general", "music", "craft"]
    queues = {h: MoCoQueue(cfg.head_dim(h), 64) for h in heads}
    assert [queues[h].keys.shape[1] for h in heads] == [16 + 40, 16, 16]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    step = StepConfig(keep=0.6)  # relation term on (default weight)
    assert step.relation_weight > 0
    for _ in range(4):
        losses = moco_step(model, key_model, queues, graphs, 8, opt, step, gen)
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert "loss_general" in losses
    assert queues["general"].filled().any() and torch.isfinite(queues["general"].keys).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the general keys carry the raw slots: unit norm across all 56 columns
    filled = queues["general"].keys[queues["general"].filled()]
    torch.testing.assert_close(filled.norm(dim=1), torch.ones(len(filled)))
    # a queue of the projection's width no longer fits the general head
    wrong = {**queues, "general": MoCoQueue(cfg.out, 64)}
    with pytest.raises(RuntimeError):
        moco_step(model, key_model, wrong, graphs, 8, opt, step, gen)


def test_retriever_with_slots_ranks_a_text_query_by_the_text_means():
    """3 cultures, equal learned parts: A has text [1, 0] and image, B text [0.8, 0.6]
    only, C image only. A text query [1, 0] is nearest A's text mean; plain cosine would
    rank B first, since A's text slot holds only 1/sqrt(2) of its raw norm."""
    w = 0.9
    slots = {"image": (0, 2), "text": (2, 4)}
    p = np.array([1.0, 0.0])  # the same learned part for every culture and the query

    def culture(image, text):
        raw = np.concatenate([image, text])
        n = int(np.linalg.norm(image) > 0) + int(np.linalg.norm(text) > 0)
        return np.concatenate([math.sqrt(w) * raw / math.sqrt(n), math.sqrt(1 - w) * p])

    vectors = np.stack([culture(np.array([0.0, 1.0]), np.array([1.0, 0.0])),   # A
                        culture(np.zeros(2), np.array([0.8, 0.6])),            # B
                        culture(np.array([0.6, 0.8]), np.zeros(2))])           # C
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0)
    retriever = Retriever(["A", "B", "C"], vectors.astype(np.float32), slots=slots)

    def query(modality, x):
        q = np.zeros(6)
        a, b = slots[modality]
        q[a:b] = math.sqrt(w) * np.asarray(x)
        q[4:] = math.sqrt(1 - w) * p
        return q[None].astype(np.float32)

    scores, pos = retriever.topk(query("text", [1.0, 0.0]), 3, "text")
    assert [retriever.cultures[i] for i in pos[0]] == ["A", "B", "C"]
    np.testing.assert_allclose(scores[0], [w + (1 - w), w * 0.8 + (1 - w), 1 - w], atol=1e-6)
    _, plain = retriever.topk(query("text", [1.0, 0.0]), 3)  # no modality: plain cosine
    assert [retriever.cultures[i] for i in plain[0]] == ["B", "A", "C"]
    scores, pos = retriever.topk(query("image", [0.0, 1.0]), 3, "image")
    assert [retriever.cultures[i] for i in pos[0]] == ["A", "C", "B"]
    np.testing.assert_allclose(scores[0], [1.0, w * 0.8 + (1 - w), 1 - w], atol=1e-6)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_query_ranker_mixes_raw_nearest_items_and_learned(modality):
    """QueryRanker (the service's stage 1) against float64 by hand: the raw part of the
    general cosine, the mean cosine of the m nearest items of each culture, the
    learned part; the retriever's cultures in another order than the graphs'."""
    from culturesim_ray.ops.query_score import QueryMix
    from culturesim_ray.serving.predictor import QueryRanker

    w = 0.9
    graphs = small_graphs()
    model = make_model(w)
    names = [f"c{i}" for i in range(N_CULTURES)]
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(4, DIMS[modality])) * [[0.1], [1.0], [3.0], [30.0]]).astype(np.float32)
    pred = FusionPredictor(model, graphs, k_graph=2, cultures=names)
    fused = pred.fuse(modality, x)
    with torch.no_grad():
        cultures = model(graphs, N_CULTURES)["general"].numpy()
        p_q = model.projection(fused).double().numpy()
    perm = np.array([3, 0, 4, 2, 1])  # retriever position r holds culture perm[r]
    retriever = Retriever([names[i] for i in perm], cultures[perm], slots=slots_of(model.cfg))
    n_items = graphs[modality].x.shape[0]
    mix = QueryMix(nearest=0.5, m=2, shortlist=n_items, learned=0.25)
    ranker = QueryRanker(pred, retriever, mix)

    x64 = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    mu, count = raw_means(graphs)[modality]
    raw = w * (x64 @ mu.T) * (count > 0)  # (B, C)
    learn = (1 - w) * (p_q @ learned(model, graphs).T)
    items = graphs[modality].x.double().numpy()
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    if mix.debiased(modality):  # texts (the default mix) meet items with the corpus's
        abtt = pred.abtt[modality][0]  # dominant directions removed (ops.abtt)
        proj = np.eye(items.shape[1]) - abtt.basis @ abtt.basis.T

        def debias(v: np.ndarray) -> np.ndarray:
            u = (v - abtt.mean) @ proj
            return u / np.linalg.norm(u, axis=1, keepdims=True)

        sims = debias(x64) @ debias(items).T
    else:
        sims = x64 @ items.T
    assert mix.debiased(modality) == (modality == "text")
    culture = graphs[modality].culture.numpy()
    near = np.zeros((len(x), N_CULTURES))
    for i in range(len(x)):
        for c in range(N_CULTURES):
            own = sorted(sims[i, culture == c], reverse=True)[:2]
            own += [sims[i].min()] * (2 - len(own))  # a culture with < m items of it
            near[i, c] = sum(own) / 2
    ref = (0.5 * raw + 0.5 * w * near + 0.25 * learn)[:, perm]
    got, pos = ranker.topk(fused, modality, modality, x, N_CULTURES)
    assert (pos == np.argsort(-ref, axis=1, kind="stable")).all()
    np.testing.assert_allclose(got, -np.sort(-ref, axis=1), atol=1e-5)
    # the plain mix is the retriever's general cosine; a cross-modal target is too
    plain = QueryRanker(pred, retriever, QueryMix(nearest=0.0, learned=1.0))
    want = retriever.topk(pred.general(fused, modality, x), 3, modality)
    got_p = plain.topk(fused, modality, modality, x, 3)
    assert (got_p[1] == want[1]).all()
    np.testing.assert_allclose(got_p[0], want[0], atol=1e-6)
    other = "image" if modality == "text" else "text"
    assert ranker.mixed(modality, modality) and not ranker.mixed(modality, other)
