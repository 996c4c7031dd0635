"""graph.build (no ray): blockwise flat kNN == graph.knn, IVF recall, index choice,
serialisation, zero rows, recall@k, relation edges and the readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culturesim_ray.graph import build
from culturesim_ray.graph.build import (
    choose_index,
    normalize_rows,
    recall_at_k,
    search_block,
)
from culturesim_ray.graph.hetero import Relations
from culturesim_ray.graph.knn import coalesce_max, knn_edges
from culturesim_ray.layout import GraphLayout
from culturesim_ray.vectors import as_matrix


def gaussian(n=600, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def clustered(n=20_000, d=32, clusters=50, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    labels = rng.integers(0, clusters, size=n)
    return (centers[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def blockwise(index, x, k, block_rows):
    v = normalize_rows(x)
    parts = [search_block(index, v[r0:r0 + block_rows], r0, k)
             for r0 in range(0, len(x), block_rows)]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def test_flat_blocks_equal_knn_edges():
    x, k = gaussian(), 5
    index = build.build_index(normalize_rows(x), "flat")
    src, dst, w = blockwise(index, x, k, block_rows=350)  # two blocks: 350 + 250 rows
    assert src.dtype == np.int64 and dst.dtype == np.int64 and w.dtype == np.float32
    assert len(src) == len(x) * k and not np.any(src == dst)
    # directed: dst = query row, src = its neighbour; per row the k most cosine-similar
    v = normalize_rows(x).astype(np.float64)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    for row in range(len(x)):
        got = src[dst == row]
        kth = np.sort(sims[row])[-k]
        assert len(got) == k
        want = set(np.flatnonzero(sims[row] > kth + 1e-6))
        assert want <= set(got.tolist())  # ties at the k-th similarity may go either way
        assert np.all(sims[row, got] >= kth - 1e-5)
        np.testing.assert_allclose(w[dst == row], sims[row, got], atol=1e-5)
    # symmetrised and coalesced, they are exactly graph.knn's edges and weights
    ei, ew = coalesce_max(np.concatenate([src, dst]), np.concatenate([dst, src]),
                          np.concatenate([w, w]), len(x))
    ref_ei, ref_w = knn_edges(x, k)
    assert np.array_equal(ei.numpy(), ref_ei.numpy())
    np.testing.assert_allclose(ew.numpy(), ref_w.numpy(), atol=1e-6)


def test_ivf_recall_on_clustered_data():
    x = clustered(spread=1.0)  # noise as large as the centres: IVF loses a little (~0.98)
    kind, nlist = choose_index(len(x), ivf_min=10_000)
    assert kind == "ivf" and 16 <= nlist <= len(x) // 39
    index = build.build_index(normalize_rows(x), kind, nlist, nprobe=16, seed=0)
    assert index.nprobe == 16
    rows = build.sample_rows(len(x), 2000, seed=0)
    recall = build.sample_recall(index, x, rows, k=10, block_rows=7000)
    assert recall >= 0.95, recall
    flat = build.build_index(normalize_rows(x), "flat")
    assert build.sample_recall(flat, x, rows, k=10) == pytest.approx(1.0)


def test_exact_neighbours_blocked_equals_one_block():
    x = gaussian(500, 8, seed=3)
    rows = np.array([0, 7, 250, 499])
    one = build.exact_neighbours(x, rows, 6, block_rows=10_000)
    many = build.exact_neighbours(x, rows, 6, block_rows=64)
    assert np.array_equal(one, many) and not np.any(one == rows[:, None])


def test_choose_index_thresholds():
    assert choose_index(49_999) == ("flat", None)
    assert choose_index(50_000) == ("ivf", 50_000 // 39)  # 8 sqrt(n) capped at 39 per list
    assert choose_index(10**7)[1] == int(8 * np.sqrt(10**7))
    assert choose_index(10**11, ivf_min=0)[1] == 65_536
    assert choose_index(1000, ivf_min=100) == ("ivf", 1000 // 39)  # 39 points per list
    assert choose_index(5000, ivf_min=100)[1] == 128  # 4 sqrt(n) = 282 > n / 39 = 128
    assert choose_index(200, ivf_min=100) == ("ivf", 5)
    assert choose_index(100, ivf_min=10, nlist=1000) == ("ivf", 100)  # given: at most n
    assert choose_index(60_000, nlist=300) == ("ivf", 300)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_serialize_round_trip(kind):
    x = clustered(3000, 16, clusters=10)
    v = normalize_rows(x)
    index = build.build_index(v, kind, nlist=32, nprobe=4)
    arr = build.serialize(index)
    assert arr.dtype == np.uint8 and arr.ndim == 1
    arr.setflags(write=False)  # as an array out of Ray's object store
    again = build.deserialize(arr)
    for a, b in zip(search_block(index, v[:500], 0, 7), search_block(again, v[:500], 0, 7),
                    strict=True):
        assert np.array_equal(a, b)
    if kind == "ivf":
        assert again.nprobe == 4 and again.nlist == 32


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_an_index_of_raw_rows_saved_and_memory_mapped_answers_as_built(kind, tmp_path):
    """The graph stage builds from x.npy's raw rows (normalised a chunk at a time) and
    its search tasks memory-map the saved file: the same neighbours as an index of
    the normalised matrix, and the vectors are not copied into the task's memory."""
    x = clustered(3000, 16, clusters=10) * 3.0  # raw: rows far from unit length
    v = normalize_rows(x)
    np.save(tmp_path / "x.npy", x)
    raw = np.load(tmp_path / "x.npy", mmap_mode="r")
    index = build.build_index(raw, kind, nlist=32, nprobe=4, add_rows=700, normalise=True)
    ref = build.build_index(v, kind, nlist=32, nprobe=4)
    path = str(tmp_path / "index.faiss")
    build.save_index(index, path)
    assert not (tmp_path / "index.faiss.tmp").exists()
    again = build.load_index(path)
    for a, b, c in zip(search_block(ref, v[:500], 0, 7), search_block(index, v[:500], 0, 7),
                       search_block(again, v[:500], 0, 7), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    if kind == "ivf":
        assert again.nprobe == 4 and again.nlist == 32
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else None
    if maps is not None:  # Linux: the file is mapped, not read into memory
        assert path in maps


def test_zero_rows_do_not_crash():
    x = gaussian(50, 8)
    x[[3, 10, 11]] = 0.0
    v = normalize_rows(x)
    assert np.all(v[[3, 10, 11]] == 0) and np.allclose(np.linalg.norm(v[0]), 1.0)
    assert np.isfinite(v).all()
    for kind, nlist in (("flat", None), ("ivf", 2)):
        index = build.build_index(v, kind, nlist, nprobe=2)
        src, dst, w = search_block(index, v, 0, 4)
        assert np.isfinite(w).all() and not np.any(src == dst)
        assert np.all(w[np.isin(dst, [3, 10, 11])] == 0)  # a zero row's cosines are 0


def test_k_larger_than_items_and_empty_block():
    v = normalize_rows(gaussian(4, 3))
    index = build.build_index(v, "flat")
    src, dst, _ = search_block(index, v, 0, 10)
    assert len(src) == 4 * 3 and not np.any(src == dst)  # every other item, once
    assert all(len(a) == 0 for a in search_block(index, v[:0], 4, 3))


def test_recall_at_k_by_hand():
    exact = np.array([[1, 2, 3, 4], [0, 2, 3, 4], [5, 6, -1, -1]])
    assert recall_at_k(exact, exact) == 1.0
    approx = np.array([[1, 2, 9, 8], [-1, -1, -1, -1], [6, -1, -1, -1]])
    assert recall_at_k(approx, exact) == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert recall_at_k(np.array([[-1, -1]]), np.array([[-1, -1]])) == 1.0  # nothing to find


def test_relation_edges_both_ways_by_destination():
    rel = Relations()
    rel.add_both_ways(("text", "artifact", "image"), np.array([[0, 2], [0, 2]]))  # a duplicate
    rel.add_both_ways(("text", "artifact", "text"), np.array([[1, 4]]))  # is written once
    rel.add_both_ways(("image", "depicts", "text"), np.array([[0, 3]]))
    out = build.relation_edges(rel)
    img = out["image"]["artifact"].to_pylist()
    assert img == [{"src": 0, "dst": 2, "weight": 1.0, "relation": "artifact",
                    "src_modality": "text"}]
    txt = out["text"]["artifact"]
    assert sorted(zip(txt["src"].to_pylist(), txt["dst"].to_pylist(),
                      txt["src_modality"].to_pylist(), strict=True)) == \
        [(1, 4, "text"), (2, 0, "image"), (4, 1, "text")]
    assert out["text"]["relations"].to_pylist() == [
        {"src": 0, "dst": 3, "weight": 1.0, "relation": "depicts", "src_modality": "image"}]
    assert out["image"]["relations"]["src_modality"].to_pylist() == ["text"]


def test_items_table_and_readers(tmp_path):
    t = pa.table({"item_id": ["a", "b"], "culture": ["X", "Y"],
                  "vector": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2))})
    items = build.items_table(t)
    assert items.schema == build.ITEMS_SCHEMA and items["themes"].to_pylist() == [[], []]
    t2 = t.append_column("themes", pa.array([["music"], None], pa.list_(pa.string())))
    assert build.items_table(t2)["themes"].to_pylist() == [["music"], []]
    layout = GraphLayout(str(tmp_path))
    (tmp_path / "text" / "edges").mkdir(parents=True)
    np.save(layout.x("text"), as_matrix(t.column("vector")))
    assert np.array_equal(build.open_x(str(tmp_path), "text"), [[1, 2], [3, 4]])
    for name, r in (("knn-0", "knn"), ("artifact", "artifact")):
        pq.write_table(build.edges_table(np.array([1]), np.array([0]), np.array([0.5]), r, "text"),
                       f"{layout.edges('text')}/{name}.parquet")
    edges = build.read_edges(str(tmp_path), "text")
    assert edges.schema == build.EDGE_SCHEMA and sorted(edges["relation"].to_pylist()) == \
        ["artifact", "knn"]
    assert build.read_edges(str(tmp_path), "image").num_rows == 0
