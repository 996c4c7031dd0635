"""A report of a run with more cultures than a page can hold shows a selection:
cultures that stand for the map's regions (or the ones named) and their nearest
neighbours, said in the page and on the console."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_plots import _fake_allpairs  # the all-pairs output the job writes, small

from culturesim_ray.report import selection
from culturesim_ray.report.build import build_report


def _clusters(per: int = 30, groups: int = 5, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d)) * 5
    x = np.concatenate([centres[g] + rng.normal(size=(per, d)) for g in range(groups)])
    names = [f"g{g}-{i:02d}" for g in range(groups) for i in range(per)]
    return names, x


def test_representatives_stand_for_every_region_of_the_map():
    names, x = _clusters()
    reps = selection.representatives(names, x, 5)
    assert len(reps) == 5 and reps == sorted(reps)
    assert sorted({r.split("-")[0] for r in reps}) == ["g0", "g1", "g2", "g3", "g4"]
    assert selection.representatives(names, x, 5) == reps  # seeded: the same page twice
    assert selection.representatives(names[:4], x[:4], 9) == sorted(names[:4])


def test_choose_shows_everything_below_the_limit_and_seeds_with_neighbours_above():
    names, x = _clusters()
    near = {n: [m for m in names if m != n][:3] for n in names}
    every = selection.choose(names, x, near, max_cultures=150)
    assert every.cultures == sorted(names) and every.how == "" and every.total == 150
    some = selection.choose(names, x, near, max_cultures=40, k=3)
    assert len(some.seeds) == 10 and set(some.seeds) <= set(some.cultures)
    assert len(some.cultures) <= 40
    assert all(set(near[s][:3]) <= set(some.cultures) for s in some.seeds[:5])
    assert some.how.startswith("The run has 150 cultures; this report shows")
    named = selection.choose(names, x, near, max_cultures=150, wanted=["G1-03", " g2-07 "])
    assert named.seeds == ["g1-03", "g2-07"]
    assert set(named.cultures) == {"g1-03", "g2-07", *near["g1-03"], *near["g2-07"]}
    assert "the 2 culture(s) named by --cultures" in named.how
    with pytest.raises(ValueError, match=r"the run has no culture 'Atlantis'"):
        selection.choose(names, x, near, 150, wanted=["g0-00", "Atlantis"])
    with pytest.raises(ValueError, match="at least 4"):
        selection.choose(names, x, near, 3)


def test_a_report_over_the_limit_shows_the_selection_and_says_so(tmp_path):
    names = _fake_allpairs(tmp_path, n=12)
    res = build_report(tmp_path, map_methods=("tsne",), k=2, log=lambda *_: None,
                       max_cultures=6)
    shown = res["shown"]
    assert 4 <= len(shown) <= 6 and set(shown) < set(names)
    assert res["notes"][0].startswith("report: The run has 12 cultures; this report shows "
                                      f"{len(shown)}:")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "The run has 12 cultures" in page
    # the network joins shown cultures only; the matrix and maps hold the shown ones
    assert all(a in shown and b in shown for a, b, _ in res["network"])
    assert sorted(res["dendrograms"]["general"]["names"]) == shown
    assert sorted(res["maps"][("tsne", "general")][0]) == shown
    # the top-k tables list the shown cultures' rows, no other culture's
    import json

    views = json.loads(page.split("const VIEWS = ", 1)[1].split(";\nconst IDS", 1)[0])
    rows = pq.read_table(tmp_path / "allpairs" / "pairs.parquet").to_pylist()
    table = views["general"]["table"]
    for name in names:
        row = f"<tr><td>{name}</td><td>1</td>"
        assert (row in table) == (name in shown), name
    # named cultures: those and their neighbours, under the limit too
    res = build_report(tmp_path, map_methods=("tsne",), k=2, log=lambda *_: None,
                       cultures=["c1", "C7"])
    want = {"C1", "C7"} | {r["culture_b"] for r in rows if r["theme"] == "general"
                           and r["culture_a"] in ("C1", "C7") and r["rank"] <= 2}
    assert set(res["shown"]) == want
    # at or under the limit, nothing named: every culture, no note (the page as before)
    res = build_report(tmp_path, map_methods=("tsne",), k=2, log=lambda *_: None)
    assert res["shown"] == sorted(names) and res["notes"] == []


def test_cultures_option_reads_names_or_a_file_of_names(tmp_path):
    from culturesim_ray.cli_report import culture_list

    assert culture_list("Greek, Persian ,,Chinese") == ["Greek", "Persian", "Chinese"]
    f = tmp_path / "shown.txt"
    f.write_text("\ufeffGreek\n\n Côte d'Ivoire \n", encoding="utf-8")
    assert culture_list(str(f)) == ["Greek", "Côte d'Ivoire"]
    with pytest.raises(ValueError, match="names no culture"):
        culture_list(" , ")


def test_figures_of_many_cultures_name_them_on_hover_not_beside_each_point(tmp_path):
    """Up to LABELS_UP_TO cultures each point is named beside it; above, the names would
    cover the points: the interactive map and network name a point on hover, and the
    dendrogram keeps its leaf order at a readable height."""
    from PIL import Image

    from culturesim_ray.report import interactive, plots

    for n, named in ((plots.LABELS_UP_TO, True), (plots.LABELS_UP_TO + 1, False)):
        names = [f"c{i:03d}" for i in range(n)]
        coords = np.random.default_rng(n).normal(size=(n, 2))
        fig = interactive.map_figure(names, coords, ["a"] * n, names, "map", "region")
        assert fig["data"][0]["mode"] == ("markers+text" if named else "markers")
        assert fig["data"][0]["hovertext"] == names  # every point still named on hover
        pos = {c: tuple(p) for c, p in zip(names, coords.tolist(), strict=True)}
        net = interactive.network_figure(names, pos, [], names, "net")
        assert net["data"][1]["mode"] == ("markers+text" if named else "markers")
    many = [f"c{i:03d}" for i in range(400)]
    x = np.random.default_rng(1).normal(size=(400, 3))
    link = plots.similarity_linkage(x @ x.T)
    path, leaves = plots.draw_dendrogram(link, many, "400", tmp_path / "d.png")
    assert sorted(leaves) == many
    few, _ = plots.draw_dendrogram(plots.similarity_linkage((x @ x.T)[:150, :150]),
                                   many[:150], "150", tmp_path / "d150.png")
    assert Image.open(path).size == Image.open(few).size  # not 2.6x as tall
    plots.draw_map(x[:, :2], many, ["a"] * 400, "map", "region", tmp_path / "m.png")
