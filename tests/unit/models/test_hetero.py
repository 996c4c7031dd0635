"""The heterogeneous variant (SPEC M3): relations files, cross-modal edges, and a
model in which modalities interact inside the graph."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow as pa
import pytest
import torch

from culturesim_ray.graph.hetero import RelationsError, item_index, read_relations
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.training.data import build_training_data
from culturesim_ray.training.stages import StageConfig, param_groups
from synthetic_data import synthetic

RELATIONS = [["image", "artifact", "text"], ["text", "artifact", "image"]]


def _model(conv="sage", graph="hetero"):
    torch.manual_seed(0)
    cfg = CultureSimConfig({"text": 24, "image": 16}, ["music"], hidden=32, out=16, conv=conv,
                           graph=graph, relations=RELATIONS if graph == "hetero" else [])
    model = CultureSim(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _tables():
    def table(modality, items, cultures, artifacts):
        n = len(items)
        vec = torch.randn(n, 4, generator=torch.Generator().manual_seed(len(modality)))
        return pa.table({"item_id": items, "culture": cultures, "modality": [modality] * n,
                         "vector": pa.FixedSizeListArray.from_arrays(
                             pa.array(vec.reshape(-1).numpy()), 4),
                         "themes": [["music"]] * n, "artifact_id": artifacts})
    return {"text": table("text", ["t0", "t1", "t2", "t3"], ["A", "A", "B", "B"],
                          ["art-1", None, "art-2", "art-2"]),
            "image": table("image", ["i0", "i1"], ["A", "B"], ["art-1", None])}


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_modalities_interact_inside_the_hetero_graph_only(conv):
    graphs = synthetic(cross=True)
    hetero, homo = _model(conv), _model(conv, "homo")
    moved = dict(graphs)
    moved["image"] = replace(graphs["image"], x=graphs["image"].x + 1.0)
    with torch.no_grad():
        for model, interacts in ((hetero, True), (homo, False)):
            before = model.item_states(graphs)["text"]
            after = model.item_states(moved)["text"]
            # text items linked to an image see the image change only in the hetero graph
            assert (not torch.allclose(before, after, atol=1e-6)) is interacts


def test_hetero_model_is_permutation_equivariant_across_modalities():
    graphs = synthetic(cross=True)
    model = _model()
    n = len(graphs["image"].x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)  # old row -> new row
    img, text = graphs["image"], graphs["text"]
    permuted = dict(graphs)
    permuted["image"] = replace(
        img, x=img.x[perm], culture=img.culture[perm], themes=img.themes[perm],
        edge_index=inv[img.edge_index],
        incoming={k: torch.stack([e[0], inv[e[1]]]) for k, e in img.incoming.items()})
    permuted["text"] = replace(
        text, incoming={k: torch.stack([inv[e[0]], e[1]]) for k, e in text.incoming.items()})
    with torch.no_grad():
        a, b = model.item_states(graphs), model.item_states(permuted)
        torch.testing.assert_close(b["image"], a["image"][perm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b["text"], a["text"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(permuted, 8)["general"], model(graphs, 8)["general"],
                                   atol=1e-5, rtol=1e-5)


def test_hetero_model_without_a_modality_runs_on_the_rest():
    graphs = synthetic(cross=True)
    model = _model()
    text_only = {"text": replace(graphs["text"], incoming={})}
    with torch.no_grad():
        out = model(text_only, 8)
    assert out["general"].shape == (8, 16) and torch.isfinite(out["general"]).all()


def test_stage_one_freezes_the_cross_modal_convolutions_too():
    model = _model()
    groups = param_groups(model, 1, StageConfig())
    frozen = {id(p) for g in groups if g["lr"] == 0.0 for p in g["params"]}
    cross = [p for n, p in model.named_parameters() if "artifact" in n]
    assert cross and all(id(p) in frozen for p in cross)
    top = param_groups(model, 2, StageConfig())[1]  # stage 2 opens the top layer first
    assert top["lr"] > 0 and any(id(p) in {id(q) for q in top["params"]} for p in cross)


def test_relations_file_rows_become_symmetric_edges_and_bad_rows_are_quarantined(tmp_path):
    rows = [{"src_item": "t1", "dst_item": "i1", "relation": "depicts"},   # cross-modal
            {"src_item": "t0", "dst_item": "t3"},                          # same modality
            {"src_item": "t0", "dst_item": "nope"},                         # unknown item
            {"src_item": "t2", "dst_item": "t2"},                           # itself
            {"src_item": "t2", "dst_item": "i0", "relation": "Bad Name"},
            {"src_item": "t2", "relation": "x"},                            # no dst_item
            {"src_item": "t2", "dst_item": "i0", "relation": "similar"}]    # reserved
    path = tmp_path / "rel.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_training_data(_tables(), k=1, relations_path=str(path))
    reasons = [q["reason"] for q in data.quarantined_relations]
    assert len(reasons) == 5
    assert "dst_item: 'nope' is not an item" in reasons[0]
    assert "same item" in reasons[1] and "relation: 'Bad Name'" in reasons[2]
    assert "dst_item: missing" in reasons[3] and "reserved" in reasons[4]
    assert [q["source_row"] for q in data.quarantined_relations][0].endswith("rel.jsonl:3")
    img, text = data.graphs["image"], data.graphs["text"]
    # depicts: t1 <-> i1 both ways; artifact_id art-1: t0 <-> i0 both ways
    assert img.incoming[("text", "depicts")].tolist() == [[1], [1]]
    assert text.incoming[("image", "depicts")].tolist() == [[1], [1]]
    assert img.incoming[("text", "artifact")].tolist() == [[0], [0]]
    assert sorted(map(tuple, data.relations)) == [
        ("image", "artifact", "text"), ("image", "depicts", "text"),
        ("text", "artifact", "image"), ("text", "depicts", "image")]
    # the same-modality relation and artifact art-2 (t2, t3) join the text graph, both ways
    pairs = set(map(tuple, text.edge_index.T.tolist()))
    assert {(0, 3), (3, 0), (2, 3), (3, 2)} <= pairs


def test_relations_with_integer_ids_name_the_items_as_the_corpus_reads_them(tmp_path):
    """An int64 id column (as in the corpus: `schema.id_text`) names the item whose id
    is its decimal string; a float id is quarantined as given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = {"5": ("text", 0), "6": ("text", 1), "70": ("image", 0)}
    pq.write_table(pa.table({"src_item": [5, 6], "dst_item": [70, 5]}), tmp_path / "r.parquet")
    rel = read_relations(str(tmp_path / "r.parquet"), items)
    assert not rel.quarantined
    (tmp_path / "r.jsonl").write_text('{"src_item": 5.0, "dst_item": 6}\n')
    bad = read_relations(str(tmp_path / "r.jsonl"), items).quarantined
    assert [q["row"] for q in bad] == [{"src_item": 5.0, "dst_item": 6}]
    assert "src_item: missing or not a string (5.0)" in bad[0]["reason"]
    rows = [{"src_item": "5", "dst_item": "70"}, {"src_item": "6", "dst_item": "5"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    same = read_relations(str(tmp_path / "s.jsonl"), items)
    got, want = same.pair_arrays(), rel.pair_arrays()
    assert got.keys() == want.keys()
    assert {k: sorted(map(tuple, v.tolist())) for k, v in got.items()} == \
        {k: sorted(map(tuple, v.tolist())) for k, v in want.items()}


def test_relations_file_without_its_columns_is_an_error(tmp_path):
    path = tmp_path / "rel.csv"
    path.write_text("from,to\nt0,t1\n")
    with pytest.raises(RelationsError, match="no src_item / dst_item column"):
        read_relations(str(path), item_index(_tables()))
    with pytest.raises(RelationsError, match="not found"):
        read_relations(str(tmp_path / "missing.csv"), item_index(_tables()))


def test_unknown_graph_or_relation_modality_is_rejected():
    with pytest.raises(ValueError, match="unknown graph"):
        CultureSim(CultureSimConfig({"text": 4}, graph="tree"))
    with pytest.raises(ValueError, match=r"relation \['audio', 'x', 'text'\]"):
        CultureSim(CultureSimConfig({"text": 4}, graph="hetero",
                                    relations=[["audio", "x", "text"]]))


def test_artifact_pairs_and_lookups_equal_the_rules_spelled_out():
    """The vectorised artifact links and id lookups against plain Python versions of
    their rules: every ordered pair of items sharing a non-empty artifact_id; an id
    names its last row (modalities sorted)."""
    import numpy as np

    from culturesim_ray.graph.hetero import artifact_pairs

    rng = np.random.default_rng(1)

    def arts(n):
        v = [f"a{x}" for x in rng.integers(0, 60, n)]
        for i in rng.choice(n, n // 4, replace=False):
            v[i] = None if i % 2 else ""
        return v

    tables = {"text": pa.table({"item_id": [f"t{i}" for i in range(150)],
                                "artifact_id": arts(150)}),
              "image": pa.table({"item_id": [f"i{i}" for i in range(50)] + ["t3"] * 2,
                                 "artifact_id": arts(52)}),
              "audio": pa.table({"item_id": ["t7"]})}
    members: dict[str, list[tuple[str, int]]] = {}
    for m in sorted(tables):
        if "artifact_id" in tables[m].column_names:
            for i, a in enumerate(tables[m].column("artifact_id").to_pylist()):
                if a:
                    members.setdefault(a, []).append((m, i))
    want: dict[tuple, set] = {}
    for group in members.values():
        for x in group:
            for y in group:
                if x != y:
                    want.setdefault((x[0], "artifact", y[0]), set()).add((x[1], y[1]))
    got = artifact_pairs(tables)
    assert {k: set(map(tuple, v.tolist())) for k, v in got.items()} == want
    assert sum(len(v) for v in got.values()) == sum(len(v) for v in want.values())
    full = item_index(tables)
    assert full["t3"] == ("text", 3) and full["t7"] == ("text", 7)  # text: the last
    ids = ["t3", "t7", "i9", "nope", "t149", "i49"]
    assert item_index(tables, ids) == {i: full[i] for i in ids if i in full}
