"""`culturesim fit-metric` and `evaluate --metric`: a metric fitted on one run's gold,
scored on another run whose cultures it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import region_run as _run
from culturesim_ray.cli import main


def test_a_metric_fitted_on_one_run_beats_the_cosine_on_another(tmp_path, capsys):
    a, b = _run(tmp_path / "a", "a", 0), _run(tmp_path / "b", "b", 1)
    metric = tmp_path / "m.json"
    assert main(["fit-metric", str(a), "--gold", str(a / "gold.csv"), "--gold-kind",
                 "distance", "--out", str(metric)]) == 0
    content = json.loads(metric.read_text())
    assert content["encoder"] == "test" and len(content["weights"]) == 8 and content["b"] == 0.5
    assert int(np.argmax(content["weights"])) == 0  # the axis the gold follows
    assert content["fitted_on"]["pairs"] == 66 and len(content["fitted_on"]["cultures"]) == 12
    # how it does on cultures left out of its fit, said and kept in the file
    lco = content["leave_cultures_out"]
    assert lco["folds"] == 5 and lco["spearman"] > lco["cosine_spearman"] + 0.1
    assert f"Spearman with the gold {lco['spearman']:.3f}" in capsys.readouterr().out
    out = tmp_path / "ev"
    assert main(["evaluate", str(b), "--gold", str(b / "gold.csv"), "--gold-kind", "distance",
                 "--out", str(out), "--metric", str(metric)]) == 0
    rows = {r["method"]: r for r in json.loads((out / "evaluation.json").read_text())["rows"]}
    fitted = [r for m, r in rows.items() if m.startswith("metric fitted on a's gold")]
    assert len(fitted) == 1 and "no culture in common" in fitted[0]["method"]
    raw = rows["mean test (raw baseline), cosine"]
    assert fitted[0]["spearman"] > raw["spearman"] + 0.1
    assert fitted[0]["delta_spearman"] > 0.1
    # scored on its own run, the row says the cultures are shared (no transfer)
    assert main(["evaluate", str(a), "--gold", str(a / "gold.csv"), "--gold-kind", "distance",
                 "--out", str(tmp_path / "ev-a"), "--metric", str(metric)]) == 0
    assert "12 culture(s) in common" in capsys.readouterr().out


def test_a_metric_refuses_another_encoder_and_a_broken_file(tmp_path):
    from culturesim_ray.report.metric_file import fit_metric, metric_method

    a = _run(tmp_path / "a", "a", 0)
    metric = tmp_path / "m.json"
    fit_metric(a, a / "gold.csv", metric, gold_kind="distance", log=lambda _m: None)
    other = _run(tmp_path / "e5", "x", 2, encoder="e5")
    with pytest.raises(ValueError, match=r"fitted on test text vectors \(8 dimensions\); "
                                         r"this run's are e5 \(8\)"):
        metric_method(metric, other)
    wide = _run(tmp_path / "wide", "w", 3, dim=10)
    with pytest.raises(ValueError, match=r"this run's are test \(10\)"):
        metric_method(metric, wide)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(metric.read_text()), "weights": [1.0, "x"]}))
    with pytest.raises(ValueError, match="'weights' must be a list of finite numbers"):
        metric_method(bad, a)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read it"):
        metric_method(bad, a)


def test_raw_means_stream_file_by_file_and_an_evaluation_scores_its_cultures_alone(tmp_path):
    """The means a metric weights are read file by file (memory grows with the
    cultures, not the items): they equal `pool` over every embedded item, failed rows
    left out; an evaluation's matrix over a few cultures equals the whole run's there
    (z-scores over every culture's pairs, as `allpairs --metric` gives)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray import runs
    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.ops.pooling import pool
    from culturesim_ray.report.metric_file import fit_metric, metric_method

    a = _run(tmp_path / "a", "a", 0)
    embed = EmbedLayout(str(a / "embed"))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(9, 8)).astype(np.float32)
    more = pa.table({  # a second file: fixed-size vectors, a failed row, a new culture
        "item_id": [f"z{i}" for i in range(9)],
        "culture": ["a0", "a3", "a3", "zz", "zz", "a7", "a7", "a7", "a0"],
        "modality": ["text"] * 9,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8),
        "themes": [["t"]] * 9,
        "error": [None, None, "bad image", None, None, None, None, None, None]})
    files = Path(embed.embeddings("text"))
    first = pq.read_table(files / "part-0.parquet")  # as the embed job writes it
    first = first.set_column(first.schema.get_field_index("vector"), "vector",
                             first.column("vector").cast(pa.list_(pa.float32(), 8)))
    first = first.set_column(first.schema.get_field_index("error"), "error",
                             pa.nulls(first.num_rows, pa.string()))
    pq.write_table(first, files / "part-0.parquet")
    pq.write_table(more, files / "part-1.parquet")
    table = runs.read_embeddings(embed.root, "text")["text"]
    vectors = np.stack(table.column("vector").to_pylist())
    want_names, want = pool(vectors, table.column("culture").to_pylist())["general"]
    names, means = runs.culture_means(embed.root, "text")
    assert names == want_names and len(names) == 13  # 12 + zz; the failed row is not read
    np.testing.assert_allclose(means, want, atol=1e-6)
    some = runs.culture_means(embed.root, "text", cultures={"a3", "zz", "nope"})
    assert some[0] == ["a3", "zz"]
    np.testing.assert_allclose(some[1], want[[names.index("a3"), names.index("zz")]],
                               atol=1e-6)

    metric = tmp_path / "m.json"
    fit_metric(a, a / "gold.csv", metric, gold_kind="distance", log=lambda _m: None)
    whole_names, whole = metric_method(metric, a).matrices["general"]
    few = metric_method(metric, a, cultures={"a1", "a5", "a9", "zz", "a11"})
    part_names, part = few.matrices["general"]
    assert part_names == ["a1", "a11", "a5", "a9", "zz"]
    assert few.vectors["general"][0] == part_names
    idx = [whole_names.index(c) for c in part_names]
    ia, ib = np.triu_indices(len(idx), 1)
    np.testing.assert_allclose(part[ia, ib], whole[idx][:, idx][ia, ib], rtol=1e-9)
