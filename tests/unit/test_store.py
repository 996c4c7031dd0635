"""The store task's graphs, streamed from the edge files, against the whole-edge-list build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmarks.store_scale import write_graph
from culturesim_ray.graph import build as gb
from culturesim_ray.graph.sample import CSRGraph
from culturesim_ray.layout import GraphLayout
from culturesim_ray.training.store import HELD, TRAIN, open_store, write_store


def _reference(graph_root: str, meta: dict, split: np.ndarray, hetero: bool
               ) -> tuple[dict[str, CSRGraph], list[str], set]:
    """Every edge read at once and typed one by one, then `CSRGraph.from_edges`."""
    names, cross, src, dst, rel = ["similar"], set(), [], [], []
    for m in meta["modalities"]:
        e = gb.read_edges(graph_root, m)
        for s, d, r, sm in zip(e.column("src").to_pylist(), e.column("dst").to_pylist(),
                               e.column("relation").to_pylist(),
                               e.column("src_modality").to_pylist(), strict=True):
            code = 0
            if sm != m:
                if r not in names:
                    names.append(r)
                code = names.index(r)
                cross.add((sm, r, m))
            src.append(s + meta["offsets"][sm])
            dst.append(d + meta["offsets"][m])
            rel.append(code)
    src_a, dst_a, rel_a = np.array(src), np.array(dst), np.array(rel, np.int16)
    out = {}
    for which, keep in (("full", np.ones(len(src_a), bool)),
                        ("train", (split[src_a] == TRAIN) & (split[dst_a] == TRAIN)),
                        ("val", (split[src_a] != HELD) & (split[dst_a] != HELD))):
        if which != "full" and not hetero:
            keep &= rel_a == 0
        out[which] = CSRGraph.from_edges(src_a[keep], dst_a[keep], len(split),
                                         relations=rel_a[keep], symmetric=True)
    return out, names, cross


@pytest.mark.parametrize("hetero", [True, False])
def test_streamed_store_graphs_equal_the_whole_build(tmp_path: Path, hetero: bool) -> None:
    graph = tmp_path / "graph"
    write_graph(graph, 3000)
    meta = write_store(str(graph), str(tmp_path / "store"), 0.2, 0, 0.1, 100, hetero,
                       edge_batch=700)
    split = np.load(tmp_path / "store" / "split.npy")
    assert set(np.unique(split)) == {0, 1, 2}
    ref, names, cross = _reference(str(graph), meta, split, hetero)
    assert meta["relation_names"] == names == ["similar", "depicts"]
    assert {tuple(t) for t in meta["relations"]} == cross
    for which, g in ref.items():
        got = open_store(str(tmp_path / "store"), which).csr
        assert g.num_edges > 0
        for part in ("indptr", "indices", "weights", "relations"):
            np.testing.assert_array_equal(getattr(got, part), getattr(g, part),
                                          err_msg=f"{which} {part}")
    assert meta["held"].num_rows == int((split == HELD).sum())


def test_unknown_source_modality_names_the_file(tmp_path: Path) -> None:
    graph = tmp_path / "graph"
    write_graph(graph, 1000)
    bad = Path(GraphLayout(str(graph)).edges("text")) / "zz-bad.parquet"
    pq.write_table(gb.edges_table(np.array([0]), np.array([1]), np.ones(1, np.float32),
                                  "depicts", "audio"), bad)
    with pytest.raises(ValueError, match=r"zz-bad\.parquet: src_modality 'audio' is not a "
                                         r"modality of the graph \(image, text\)"):
        write_store(str(graph), str(tmp_path / "store"), 0.2, 0, 0.1, 100, True)
