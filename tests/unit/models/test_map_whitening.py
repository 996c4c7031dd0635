"""The culture map read in the within-culture-whitened geometry: `ModalityCosine` with
whitening against a float64 reference by hand, the train job's streamed whitening
against the in-memory one, and a train run's whitening file."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from culturesim_ray import runs
from culturesim_ray.models.culturesim import CultureSimConfig
from culturesim_ray.ops.modality_cosine import ModalityCosine
from culturesim_ray.ops.whiten import culture_whitening
from culturesim_ray.training.batch import store_from_graphs
from culturesim_ray.training.export import (
    culture_heads,
    culture_sums,
    heads_from_sums,
    map_whitening,
    write_layer_states,
)
from raw_residual_data import (
    N_CULTURES,
    general_of,
    learned,
    make_model,
    modality_normalised_ref,
    slots_of,
    small_graphs,
)


def _whitening_of(graphs, shrink: float) -> dict[str, np.ndarray]:
    """float64 by hand: per modality (S_w + shrink mean_eig I)^(-1/2) of the normalised items."""
    out = {}
    for m, gr in graphs.items():
        x = gr.x.double().numpy()
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = gr.culture.numpy()
        centred = x.copy()
        for k in np.unique(c):
            centred[c == k] -= x[c == k].mean(0)
        s = centred.T @ centred / len(x)
        ev, v = np.linalg.eigh(s)
        out[m] = (v / np.sqrt(ev + shrink * ev.mean())) @ v.T
    return out


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_modality_cosine_reads_each_raw_slot_through_its_whitening(lam):
    w = 0.9
    graphs, model, general = general_of(w)
    white = _whitening_of(graphs, 2.0)
    term, shared = modality_normalised_ref(graphs, w, white)
    iu = np.triu_indices(N_CULTURES, 1)
    fill = float(np.mean(term[iu][shared[iu]]))
    p = learned(model, graphs)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    ref = (np.where(shared, term, fill) + lam * (1 - w) * (p @ p.T)) / (w + lam * (1 - w))
    slots = slots_of(model.cfg)
    mats = [torch.from_numpy(white[m]).float() for m in slots]
    sim = ModalityCosine(list(slots.values()), learned=lam, whitening=mats).fit(general)
    assert sim.fill == pytest.approx(fill, abs=1e-5)
    got = sim(general.double(), general.double()).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    plain = ModalityCosine(list(slots.values()), learned=lam).fit(general)
    assert np.abs(got - plain(general.double(), general.double()).numpy()).max() > 1e-2
    # all-pairs whitens the rows once (`prepare`) and scores them without whitening
    # them again: the same scores, key and record
    prep, px = sim.on_prepared(), sim.prepare(general)
    np.testing.assert_allclose(prep(px, px).numpy(), got, atol=1e-5)
    assert prep.key == sim.key and prep.manifest_record() == sim.manifest_record()
    torch.testing.assert_close(px.norm(dim=1), torch.ones(len(px)))
    torch.testing.assert_close(prep.prepare(px), px)  # prepared rows are only normalised
    assert np.abs(prep(general, general).numpy() - got).max() > 1e-2  # not the same rows
    # identity matrices read the slots as written; the key tells the two apart
    eye = [torch.eye(b - a) for a, b in slots.values()]
    same = ModalityCosine(list(slots.values()), learned=lam, whitening=eye).fit(general)
    np.testing.assert_allclose(same(general, general).numpy(),
                               plain(general, general).numpy(), atol=1e-6)
    assert sim.key.startswith("modality_cosine(") and "whitened=" in sim.key
    assert sim.key != same.key and "whitened" not in plain.key
    assert sim.manifest_record()["whitened"] and plain.manifest_record()["whitened"] is None
    with pytest.raises(ValueError, match="shape"):
        ModalityCosine(list(slots.values()), whitening=[torch.eye(2), torch.eye(5)])


def test_the_streamed_whitening_equals_the_one_by_hand(tmp_path):
    graphs = small_graphs(3)
    store = store_from_graphs(graphs, [f"c{i}" for i in range(N_CULTURES)], [])
    model = make_model(0.9)
    states = write_layer_states(model, store, str(tmp_path))
    ref = _whitening_of(graphs, 30.0)
    with pytest.raises(ValueError, match="no scatter"):
        map_whitening(culture_sums(model, store, states), 30.0)
    with pytest.raises(ValueError, match="raw residual"):
        culture_sums(make_model(0.0), store, states, scatter=True)
    for block in (2, 1000):  # blocks smaller than a modality, and one block
        sums = culture_sums(model, store, states, block=block, scatter=True)
        got = map_whitening(sums, 30.0)
        # the same pass gives the culture embeddings
        want = culture_heads(model, store, states, block=block)
        for h, v in heads_from_sums(model, sums).items():
            torch.testing.assert_close(v, want[h], atol=0, rtol=0)
        assert sorted(got) == sorted(ref)
        for m in ref:
            assert got[m].dtype == np.float32
            np.testing.assert_allclose(got[m], ref[m], rtol=1e-5, atol=1e-6)
    x = graphs["text"].x.double()
    x = x / x.norm(dim=1, keepdim=True)
    c = graphs["text"].culture
    sums = torch.zeros(N_CULTURES, x.shape[1], dtype=torch.float64).index_add_(0, c, x)
    counts = torch.bincount(c, minlength=N_CULTURES).double()
    np.testing.assert_allclose(culture_whitening(x.T @ x, sums, counts, 30.0).numpy(),
                               ref["text"], atol=1e-10)


def test_a_train_runs_whitening_file_reaches_its_culture_map(tmp_path):
    cfg = CultureSimConfig({"image": 3, "text": 5}, hidden=8, out=4, raw_weight=0.9,
                           map_learned=0.1, map_whiten=30.0)
    with pytest.raises(FileNotFoundError, match="map_whitening.npz"):
        runs.read_map_whitening(str(tmp_path), asdict(cfg))
    rng = np.random.default_rng(0)
    mats = {"image": np.diag([1.0, 2.0, 0.5]), "text": np.eye(5) + 0.1}
    runs.write_map_whitening(mats, str(tmp_path / "map_whitening.npz"))
    back = runs.read_map_whitening(str(tmp_path), asdict(cfg))
    assert sorted(back) == ["image", "text"]
    for m in mats:
        np.testing.assert_allclose(back[m], mats[m], atol=1e-7)
    x = rng.normal(size=(4, cfg.head_dim("general")))
    sim = runs.general_similarity(asdict(cfg), x, back)
    assert [None if t is None else t.shape[0] for t in sim.whitening] == [3, 5]
    with pytest.raises(ValueError, match="no matrix for modality"):
        runs.general_similarity(asdict(cfg), x, {"text": mats["text"]})
    # one modality, the learned part as trained: whitened still means the read-out
    one = CultureSimConfig({"text": 5}, hidden=8, out=4, raw_weight=0.9)
    assert runs.general_similarity(asdict(one), x[:, :9]) == "cosine"
    assert runs.general_similarity(asdict(one), x[:, :9], {"text": mats["text"]}).name \
        == "modality_cosine"
    # a run trained before the whitening (map_whiten 0) has none and needs no file
    old = CultureSimConfig({"text": 5}, hidden=8, out=4, raw_weight=0.9, map_learned=0.1)
    assert runs.read_map_whitening(str(tmp_path), asdict(old)) is None
    with pytest.raises(ValueError, match="map_whiten must be a finite factor >= 0"):
        from culturesim_ray.models.culturesim import CultureSim
        CultureSim(CultureSimConfig({"text": 5}, hidden=8, out=4, map_whiten=-1.0))
