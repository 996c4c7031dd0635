"""The figures' data: linkage on a constructed matrix, maps that keep clusters
apart, strongest-edge selection, and an HTML report holding every section."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from culturesim_ray.report import plots
from culturesim_ray.report.build import SECTIONS, build_report


def two_blocks(n: int = 6, seed: int = 0) -> np.ndarray:
    """Similarity with two clear groups {0..n/2-1} and {n/2..n-1}, a little noise."""
    rng = np.random.default_rng(seed)
    s = np.full((n, n), 0.1)
    h = n // 2
    s[:h, :h] = 0.8
    s[h:, h:] = 0.7
    s += 0.02 * rng.random((n, n))
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return s


def test_linkage_equals_scipy_on_the_distance_and_splits_the_blocks():
    s = two_blocks()
    link = plots.similarity_linkage(s)
    dist = s.max() - s
    np.fill_diagonal(dist, 0)
    assert np.allclose(link, linkage(squareform(dist), method="average"))
    groups = fcluster(link, 2, criterion="maxclust")
    assert len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1 and groups[0] != groups[3]
    # the last merge joins the two blocks at distance ~ 1 - 0.1
    assert link[-1, 2] == pytest.approx(s.max() - s[:3, 3:].mean(), abs=0.02)
    with pytest.raises(ValueError, match="NaN"):
        plots.similarity_linkage(np.array([[1.0, np.nan], [np.nan, 1.0]]))


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_maps_keep_separated_clusters_apart(method):
    rng = np.random.default_rng(1)
    centres = np.zeros((2, 16))
    centres[0, 0], centres[1, 1] = 5, 5
    x = np.vstack([centres[i] + 0.3 * rng.normal(size=(8, 16)) for i in (0, 1)])
    xy = plots.embed_2d(x, method)
    assert xy.shape == (16, 2) and np.isfinite(xy).all()
    a, b = xy[:8], xy[8:]
    within = max(np.linalg.norm(a - a.mean(0), axis=1).mean(),
                 np.linalg.norm(b - b.mean(0), axis=1).mean())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * within
    with pytest.raises(ValueError, match="at least 4"):
        plots.embed_2d(x[:3], method)


def test_strongest_edges_top_k_and_threshold():
    rows = [{"culture_a": "A", "culture_b": "B", "score": 0.9, "rank": 1},
            {"culture_a": "B", "culture_b": "A", "score": 0.9, "rank": 1},
            {"culture_a": "A", "culture_b": "C", "score": 0.4, "rank": 2},
            {"culture_a": "C", "culture_b": "B", "score": 0.5, "rank": 1}]
    assert plots.strongest_edges(rows, k=1) == [("A", "B", 0.9), ("B", "C", 0.5)]
    assert plots.strongest_edges(rows, k=None, threshold=0.45) == [("A", "B", 0.9),
                                                                   ("B", "C", 0.5)]
    assert len(plots.strongest_edges(rows, k=2)) == 3


def test_dense_matrix_and_missing_cell():
    rows = [{"culture_a": a, "culture_b": b, "score": float(a == b)} for a in "XY" for b in "XY"]
    names, m = plots.dense_matrix(rows)
    assert names == ["X", "Y"] and np.array_equal(m, np.eye(2))
    with pytest.raises(ValueError, match=r"missing \(Y, Y\)"):
        plots.dense_matrix(rows[:3])


def _fake_allpairs(tmp_path, n=6):
    """A small all-pairs output directory, written as the job writes it."""
    rng = np.random.default_rng(2)
    names = [f"C{i}" for i in range(n)]
    s = two_blocks(n)
    emb, pairs, mats = [], [], {}
    for head in ("general", "arts"):
        v = rng.normal(size=(n, 8))
        emb += [{"culture": c, "head": head, "vector": v[i].tolist()} for i, c in enumerate(names)]
    for theme in ("general", "arts", "combined"):
        for i, a in enumerate(names):
            order = [j for j in np.argsort(-s[i]) if j != i]
            pairs += [{"theme": theme, "culture_a": a, "culture_b": names[j],
                       "score": float(s[i, j]), "rank": r + 1, "similarity": "cosine"}
                      for r, j in enumerate(order[:3])]
        mats[theme] = [{"culture_a": a, "culture_b": b, "score": float(s[i, j])}
                       for i, a in enumerate(names) for j, b in enumerate(names)]
    d = tmp_path / "allpairs"
    (d / "matrices").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(emb), d / "culture_embeddings.parquet")
    pq.write_table(pa.Table.from_pylist(pairs), d / "pairs.parquet")
    for head, rows in mats.items():
        pq.write_table(pa.Table.from_pylist(rows), d / "matrices" / f"{head}.parquet")
    (tmp_path / "culture_attributes.csv").write_text(
        "culture,region\n" + "".join(f"{c},{'north' if i < n // 2 else 'south'}\n"
                                     for i, c in enumerate(names)))
    return names


def test_html_report_holds_every_section_and_the_figures_data(tmp_path):
    names = _fake_allpairs(tmp_path)
    res = build_report(tmp_path, map_methods=("tsne",), k=2, log=lambda *_: None)
    page = (tmp_path / "report" / "report.html").read_text()
    for sid in SECTIONS:
        assert f'id="{sid}"' in page
    assert page.count('<img src="data:image/png;base64,') == len(res["figures"])
    assert "cdn" not in page.split("<script>")[0].lower()  # plotly.js inlined, no CDN
    assert set(res["figures"]) == {"maps_tsne_general", "maps_tsne_arts", "dendrogram_general",
                                   "dendrogram_combined", "network"}
    leaves = res["dendrograms"]["general"]["leaves"]
    assert sorted(leaves) == names
    # the blocks stay contiguous in the dendrogram's leaf order
    first = {leaves.index(c) for c in names[:3]}
    assert max(first) - min(first) == 2
    # the network's edges are each culture's 2 strongest, from pairs.parquet
    rows = pq.read_table(tmp_path / "allpairs" / "pairs.parquet").to_pylist()
    want = {tuple(sorted((r["culture_a"], r["culture_b"]))) for r in rows
            if r["theme"] == "general" and r["rank"] <= 2}
    assert {(a, b) for a, b, _ in res["network"]} == want
    assert "north" in page and "S_total" in page and "C5" in page
    for f in res["figures"].values():
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_interactive_views_switch_with_the_head_and_hover_names_the_culture(tmp_path):
    names = _fake_allpairs(tmp_path)
    build_report(tmp_path, map_methods=("tsne",), k=2, log=lambda *_: None)
    page = (tmp_path / "report" / "report.html").read_text()
    views = json.loads(page.split("const VIEWS = ", 1)[1].split(";\nconst IDS", 1)[0])
    assert {"general", "arts"} <= set(views)
    g, a = views["general"], views["arts"]
    # each head plots its own map (the fake matrices are the same for every head)
    assert g["map"]["data"][0]["x"] != a["map"]["data"][0]["x"]
    assert a["matrix"]["layout"]["title"]["text"].endswith("arts")
    hover = [h for t in g["map"]["data"] for h in t["hovertext"]]
    assert all(any(f"<b>{c}</b>" in h for h in hover) for c in names)
    assert any("top-2 (general)" in h for h in hover)
    # the heatmap's rows follow the dendrogram's leaves
    m_names, m = plots.dense_matrix(pq.read_table(tmp_path / "allpairs" / "matrices" /
                                                  "general.parquet").to_pylist())
    assert g["matrix"]["data"][0]["y"] == plots.leaf_order(plots.similarity_linkage(m), m_names)
    assert "<td>" in a["table"]


def test_the_combined_score_names_the_weights_the_run_used(tmp_path):
    from culturesim_ray.report.build import alpha_line

    m = tmp_path / "manifest.json"
    m.write_text(json.dumps({"alpha": {"food": 0.5, "arts": 0.5}, "config": {"alpha": {}}}))
    assert alpha_line(m) == ("S_total = sum over themes of alpha_t * S_t; alpha (equal: no "
                             "--alpha given): arts 0.5, food 0.5")
    m.write_text(json.dumps({"alpha": {"food": 0.75, "arts": 0.25},
                             "config": {"alpha": {"food": 3, "arts": 1}}}))
    assert alpha_line(m).endswith("alpha (given with --alpha): arts 0.25, food 0.75")
    assert alpha_line(tmp_path / "none.json").endswith("not recorded")


def test_attributes_as_a_spreadsheet_writes_them(tmp_path):
    """A `;` export with `Culture`, `Region` headers and names in other case colours
    the run's cultures; an exact name wins over a folded one."""
    from culturesim_ray.report.build import as_run_attributes, read_attributes

    path = tmp_path / "attrs.csv"
    path.write_text("Culture;Region\ngreek;Europe\nIRISH;Isles\nIrish;Europe\nTurkish;Asia\n")
    attrs, column = as_run_attributes(read_attributes(path), ["Greek", "Irish", "Thai"], "region")
    assert column == "Region"
    assert {c: attrs.get(c, {}).get(column) for c in ("Greek", "Irish", "Thai")} == {
        "Greek": "Europe", "Irish": "Europe", "Thai": None}
    exact, column = as_run_attributes({"A": {"region": "x", "Region": "y"}}, ["A"], "region")
    assert column == "region"
