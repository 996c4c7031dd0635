"""`culturesim fit-metric` and `evaluate --metric`: a metric fitted on one run's gold,
scored on another run whose cultures it never saw."""

from __future__ import annotations

import json

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
