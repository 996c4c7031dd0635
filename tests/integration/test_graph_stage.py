"""The graph stage on a real local Ray instance: blockwise flat kNN == exact, IVF recall
in the manifest, artifact and relations edges, x.npy, skip / refuse / overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from culturesim_ray.fingerprint import SettingsMismatchError
from culturesim_ray.graph import build
from culturesim_ray.graph.build import GraphConfig
from culturesim_ray.graph.knn import coalesce_max, knn_edges
from culturesim_ray.layout import EmbedLayout, GraphLayout
from culturesim_ray.pipeline.graph import run_graph
from culturesim_ray.runs import read_embeddings
from culturesim_ray.vectors import as_matrix

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

D = 16
N = {"text": 300, "image": 2500}
SHARED = 40  # t-000..t-039 and i-0000..i-0039 are two sides of one artifact each


def _vectors(n, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(25, D))
    return (centers[rng.integers(0, 25, n)] + 0.6 * rng.normal(size=(n, D))).astype(np.float32)


def _ids(m, n):
    return [f"t-{j:03d}" for j in range(n)] if m == "text" else [f"i-{j:04d}" for j in range(n)]


def write_embed_run(root: Path) -> None:
    """embeddings/<m>/part-*.parquet as the embed job writes them, rows shuffled, plus
    one failed row (error set) that the graph must leave out."""
    schema = pa.schema([("item_id", pa.string()), ("culture", pa.string()),
                        ("modality", pa.string()), ("encoder", pa.string()),
                        ("vector", pa.list_(pa.float32(), D)), ("themes", pa.list_(pa.string())),
                        ("artifact_id", pa.string()), ("error", pa.string())])
    rng = np.random.default_rng(7)
    for s, (m, n) in enumerate(N.items()):
        ids, x = _ids(m, n), _vectors(n, seed=s)
        art = [f"art-{j}" if j < SHARED else None for j in range(n)]
        if m == "text":
            art[100] = art[101] = "art-pair"  # same modality: joins the text graph
        rows = [{"item_id": ids[j], "culture": f"C{j % 7}", "modality": m, "encoder": "test",
                 "vector": x[j].tolist(), "themes": ["music"] if j % 3 else [],
                 "artifact_id": art[j], "error": None} for j in range(n)]
        rows.append({"item_id": f"{m}-broken", "culture": "C0", "modality": m, "encoder": "test",
                     "vector": None, "themes": [], "artifact_id": "art-0", "error": "bad uri"})
        order = rng.permutation(len(rows))
        d = Path(EmbedLayout(str(root)).embeddings(m))
        d.mkdir(parents=True)
        # first in file order: a file whose rows all failed (an empty batch to the readers)
        pq.write_table(pa.Table.from_pylist([{**rows[-1], "item_id": f"{m}-broken-2"}],
                                            schema=schema), d / "a-failed.parquet")
        half = len(order) // 2
        for p, part in enumerate((order[:half], order[half:])):
            pq.write_table(pa.Table.from_pylist([rows[i] for i in part], schema=schema),
                           d / f"part-{p}.parquet")


@pytest.fixture
def embed_run(tmp_path):
    write_embed_run(tmp_path / "embed")
    rel = tmp_path / "relations.jsonl"
    rel.write_text(json.dumps({"src_item": "t-005", "dst_item": "i-0100", "relation": "depicts"})
                   + "\n" + json.dumps({"src_item": "t-005", "dst_item": "nope"}) + "\n")
    return tmp_path / "embed", rel


def _knn(edges: pa.Table) -> pa.Table:
    return edges.filter(pc.equal(edges["relation"], "knn"))


def test_graph_stage(ray_session, embed_run, tmp_path):
    embed, rel = embed_run
    out = str(tmp_path / "train" / "graph")
    cfg = GraphConfig(k=5, ivf_min=1000, block_rows=256, seed=0)
    logs: list[str] = []
    manifest = run_graph(str(embed), out, cfg, relations=str(rel), log=logs.append)
    layout = GraphLayout(out)
    mods = manifest["modalities"]
    assert set(mods) == {"text", "image"}
    assert (mods["text"]["index"], mods["text"]["nlist"]) == ("flat", None)
    assert mods["image"]["index"] == "ivf" and mods["image"]["nlist"] == 2500 // 39
    assert mods["image"]["nprobe"] == 16 and mods["text"]["nprobe"] is None
    for m, s in mods.items():
        assert {"items", "dim", "k", "knn_edges", "other_edges", "recall_at_k", "recall_sample",
                "gpu", "seconds"} <= set(s)
        assert s["items"] == N[m] and s["dim"] == D and s["k"] == 5 and s["gpu"] is False
        assert s["recall_sample"] == min(cfg.recall_sample, N[m])
        assert s["worker_peak_rss_mb"] > 50  # a Python process with numpy and faiss
        assert Path(layout.index(m)).is_file()  # the index the search tasks mapped
    assert mods["text"]["recall_at_k"] == 1.0
    assert mods["image"]["recall_at_k"] >= 0.9
    assert manifest["config"]["k"] == 5 and manifest["input"] == str(embed.absolute())

    tables = read_embeddings(str(embed))
    for m, t in tables.items():
        items = build.read_items(out, m)
        assert items["item_id"].to_pylist() == t["item_id"].to_pylist() == sorted(_ids(m, N[m]))
        assert items["themes"].to_pylist() == t["themes"].to_pylist()
        x = build.open_x(out, m)
        assert x.dtype == np.float32 and np.array_equal(x, as_matrix(t.column("vector")))  # raw, not normalised
        files = sorted(p.name for p in Path(layout.edges(m)).iterdir())
        blocks = [f for f in files if f.startswith("knn-")]
        assert len(blocks) == -(-N[m] // 256) and not any(f.endswith(".tmp") for f in files)
        edges = build.read_edges(out, m)
        assert _knn(edges).num_rows == mods[m]["knn_edges"] == N[m] * 5
        assert edges.num_rows - _knn(edges).num_rows == mods[m]["other_edges"]

    # the flat modality's blocks, symmetrised, are exactly the exact kNN graph
    knn = _knn(build.read_edges(out, "text"))
    src, dst = knn["src"].to_numpy(), knn["dst"].to_numpy()
    w = knn["weight"].to_numpy()
    assert set(knn["src_modality"].to_pylist()) == {"text"}
    ei, _ = coalesce_max(np.concatenate([src, dst]), np.concatenate([dst, src]),
                         np.concatenate([w, w]), N["text"])
    ref, _ = knn_edges(np.array(build.open_x(out, "text")), 5)
    assert np.array_equal(ei.numpy(), ref.numpy())

    # artifact edges both ways across modalities (row j of both is t-j / i-j: sorted ids)
    for m, other in (("image", "text"), ("text", "image")):
        e = build.read_edges(out, m)
        art = e.filter(pc.and_(pc.equal(e["relation"], "artifact"),
                               pc.equal(e["src_modality"], other)))
        pairs = set(zip(art["src"].to_pylist(), art["dst"].to_pylist(), strict=True))
        assert pairs == {(j, j) for j in range(SHARED)}
    t_art = build.read_edges(out, "text")
    t_art = t_art.filter(pc.and_(pc.equal(t_art["relation"], "artifact"),
                                 pc.equal(t_art["src_modality"], "text")))
    assert set(zip(t_art["src"].to_pylist(), t_art["dst"].to_pylist(), strict=True)) == \
        {(100, 101), (101, 100)}
    dep = build.read_edges(out, "image")
    dep = dep.filter(pc.equal(dep["relation"], "depicts")).to_pylist()
    assert dep == [{"src": 5, "dst": 100, "weight": 1.0, "relation": "depicts",
                    "src_modality": "text"}]
    bad = Path(layout.relations_quarantine).read_text().splitlines()
    assert len(bad) == 1 and "nope" in json.loads(bad[0])["reason"]
    assert manifest["counts"]["relations_quarantined"] == 1

    # same settings: skipped, nothing rewritten
    stamp = Path(layout.x("image")).stat().st_mtime_ns
    logs.clear()
    again = run_graph(str(embed), out, cfg, relations=str(rel), log=logs.append)
    assert again == manifest and any("skipped" in line for line in logs)
    assert Path(layout.x("image")).stat().st_mtime_ns == stamp

    # other settings: refused naming them, unless overwrite
    k6 = GraphConfig(k=6, ivf_min=1000, block_rows=256, seed=0)
    with pytest.raises(SettingsMismatchError, match=r"\bk: 5 -> 6"):
        run_graph(str(embed), out, k6, relations=str(rel), log=logs.append)
    rebuilt = run_graph(str(embed), out, k6, relations=str(rel), log=logs.append,
                        overwrite=True)
    assert rebuilt["modalities"]["text"]["k"] == 6 and rebuilt["started_at"] >= \
        manifest["started_at"]
    assert rebuilt["fingerprint"]["k"] == 6
    assert _knn(build.read_edges(out, "image")).num_rows == N["image"] * 6
