"""`culturesim allpairs --metric`: the whole culture map under a metric fitted on gold
(`culturesim fit-metric`), blockwise, equal to the evaluation's matrix of it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import region_run
from culturesim_ray.cli import main
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.fingerprint import SettingsMismatchError
from culturesim_ray.pipeline.allpairs import run_allpairs
from culturesim_ray.report.metric_file import fit_metric, metric_method

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def quiet(*_a, **_k):
    return None


def _matrix(path) -> tuple[list[str], np.ndarray]:
    t = pq.read_table(path).to_pydict()
    names = sorted(set(t["culture_a"]))
    at = {c: i for i, c in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    for a, b, s in zip(t["culture_a"], t["culture_b"], t["score"], strict=True):
        m[at[a], at[b]] = s
    return names, m


def _general_pairs(out) -> list[dict]:
    return [r for r in pq.read_table(out / "pairs.parquet").to_pylist()
            if r["theme"] == "general"]


def _check_topk(pairs: list[dict], cs: list[str], m: np.ndarray, k: int) -> None:
    """Every culture's k pairs are its k best under the matrix m, with m's scores."""
    m = m.copy()
    np.fill_diagonal(m, -np.inf)
    best = np.argsort(-m, axis=1)[:, :k]
    assert len(pairs) == k * len(cs)
    for r in pairs:
        a, b = cs.index(r["culture_a"]), cs.index(r["culture_b"])
        assert b in best[a]
        assert r["score"] == pytest.approx(m[a, b], abs=1e-5)
        assert r["similarity"] == "dimension_metric"


@pytest.fixture
def fitted(tmp_path):
    """A metric fitted on run a's gold, and run b (other cultures, same encoder)."""
    a, b = region_run(tmp_path / "a", "a", 0), region_run(tmp_path / "b", "b", 1)
    metric = tmp_path / "m.json"
    fit_metric(a, a / "gold.csv", metric, gold_kind="distance", log=quiet)
    return metric, b


def test_the_map_under_a_metric_equals_its_evaluation_matrix(ray_session, fitted, tmp_path,
                                                             capsys):
    metric, b = fitted
    out = tmp_path / "out"
    assert main(["allpairs", str(b), "--out", str(out), "-k", "3", "--metric", str(metric),
                 "--block-rows", "5"]) == 0
    lco = json.loads(metric.read_text())["leave_cultures_out"]
    assert (f"general head by the metric of {metric} (fitted on 66 gold pairs over 12 cultures; "
            f"on cultures left out of its fit, Spearman {lco['spearman']:.3f}"
            in capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["head_similarity"]["general"]
    assert record["name"] == "dimension_metric" and record["b"] == 0.5
    assert len(record["weights_sha256"]) == 64
    assert manifest["metric"]["file"] == str(metric) and manifest["metric"]["b"] == 0.5
    assert len(manifest["metric"]["fitted_on"]["cultures"]) == 12
    # the dense matrix: the evaluation's blend, standardised over this run's pairs
    want_cs, want = metric_method(metric, b).matrices["general"]
    cs, got = _matrix(out / "matrices" / "general.parquet")
    assert cs == want_cs
    ia, ib = np.triu_indices(len(cs), 1)
    np.testing.assert_allclose(got[ia, ib], want[ia, ib], atol=1e-5)
    np.testing.assert_allclose(got, got.T, atol=1e-5)
    _check_topk(_general_pairs(out), cs, want, 3)
    # the theme head keeps the cosine
    theme = [r for r in pq.read_table(out / "pairs.parquet").to_pylist() if r["theme"] == "t"]
    assert theme and {r["similarity"] for r in theme} == {"cosine"}

    # through the cluster pre-filter (every cluster probed: the exact top-k, recall 1)
    pf = tmp_path / "pf"
    m = run_allpairs(str(b), str(pf), AllPairsConfig(k=3, metric=str(metric), prefilter="on",
                                                      nlist=2, nprobe=2), log=quiet)
    assert m["prefilter_recall"]["general"]["recall_at_k"] == pytest.approx(1.0)
    _check_topk(_general_pairs(pf), cs, want, 3)

    # another metric (b) into the same output is refused, not mixed
    other = tmp_path / "m2.json"
    other.write_text(json.dumps({**json.loads(metric.read_text()), "b": 1.0}))
    with pytest.raises(SettingsMismatchError):
        run_allpairs(str(b), str(out), AllPairsConfig(k=3, metric=str(other),
                                                      block_rows=5), log=quiet)


def test_a_metric_refuses_what_it_was_not_fitted_for(ray_session, fitted, tmp_path):
    metric, b = fitted
    cases = [
        (AllPairsConfig(metric=str(metric), similarity="euclidean"), "leave --similarity at"),
        (AllPairsConfig(metric=str(metric), pooling="median"), "drop --pooling median"),
        (AllPairsConfig(metric=str(metric), modality="image"), "pass --modality text"),
        (AllPairsConfig(metric=str(metric), heads=["t"]), "which --heads left out"),
    ]
    for i, (cfg, match) in enumerate(cases):
        with pytest.raises(ValueError, match=match):
            run_allpairs(str(b), str(tmp_path / f"o{i}"), cfg, log=quiet)
    # vectors of another encoder
    e5 = region_run(tmp_path / "e5", "x", 2, encoder="e5")
    with pytest.raises(ValueError, match=r"fitted on test text vectors \(8 dimensions\); "
                                         r"this run's are e5$"):
        run_allpairs(str(e5), str(tmp_path / "oe"), AllPairsConfig(metric=str(metric)),
                     log=quiet)
    wide = region_run(tmp_path / "wide", "w", 3, dim=10)
    with pytest.raises(ValueError, match=r"\(8 dimensions\); this run's are test \(10\)"):
        run_allpairs(str(wide), str(tmp_path / "ow"), AllPairsConfig(metric=str(metric)),
                     log=quiet)
    # a Parquet of vectors (no encoder to check)
    items = next((b / "embed").rglob("*.parquet"))
    with pytest.raises(ValueError, match="raw culture means of an embed run"):
        run_allpairs(str(items), str(tmp_path / "op"), AllPairsConfig(metric=str(metric)),
                     log=quiet)


def test_a_metric_maps_an_embed_run_on_s3(ray_session, s3_server, fitted):
    """An embed run and the output on S3 (the metric file local): the same map."""
    metric, b = fitted
    fs, bucket = s3_server["fs"], s3_server["bucket"]
    fs.put(str(b / "embed"), f"{bucket}/runs/b/embed", recursive=True)
    s3 = {"endpoint_url": s3_server["endpoint_url"], "key": "testing", "secret": "testing"}
    out = f"s3://{bucket}/maps/b"
    m = run_allpairs(f"s3://{bucket}/runs/b/embed", out,
                     AllPairsConfig(k=3, metric=str(metric), s3=s3), log=quiet)
    assert m["head_similarity"]["general"]["name"] == "dimension_metric"
    with fs.open(f"{bucket}/maps/b/matrices/general.parquet", "rb") as fh:
        t = pq.read_table(fh).to_pydict()
    want_cs, want = metric_method(metric, b).matrices["general"]
    at = {c: i for i, c in enumerate(want_cs)}
    got = np.array([want[at[a], at[c]] - s for a, c, s in
                    zip(t["culture_a"], t["culture_b"], t["score"], strict=True) if a != c])
    assert np.abs(got).max() < 1e-5
