"""The all-pairs job on a real local Ray instance: set-level similarities, the default k,
the kinds of input it accepts (items, cultures, run directories) and heads too small to pair."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from allpairs_data import Log, item_table, quiet
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.fingerprint import SettingsMismatchError
from culturesim_ray.pipeline.allpairs import run_allpairs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_set_level_similarity_end_to_end(ray_session, tmp_path):
    from culturesim_ray.ops.set_pairs import combine_matrices, item_groups
    from culturesim_ray.ops.setsim import set_similarity

    t = item_table(n_cultures=9, per=5, d=8)
    pq.write_table(t, tmp_path / "items.parquet")
    out = tmp_path / "out"
    cfg = AllPairsConfig(similarity="mmd", set_options={"sigma": 3.0}, set_block=7, k=3)
    manifest = run_allpairs(str(tmp_path / "items.parquet"), str(out), cfg, log=quiet)
    x = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    groups = item_groups(t.column("culture").to_pylist(), t.column("themes").to_pylist())
    mats = {}
    for h, (cs, idx, labels) in groups.items():
        m = set_similarity("mmd", torch.from_numpy(x[idx]), torch.from_numpy(labels), len(cs),
                           sigma=3.0).numpy()
        mats[h] = (cs, m)
    mats["combined"] = combine_matrices({th: mats[th] for th in ("craft", "music")},
                                        {"craft": 0.5, "music": 0.5})
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert {r["theme"] for r in pairs} == {"general", "craft", "music", "combined"}
    assert {r["similarity"] for r in pairs} == {"mmd"}
    for h, (cs, m) in mats.items():
        got = pq.read_table(out / "matrices" / f"{h}.parquet").to_pandas()
        np.testing.assert_allclose(got["score"].to_numpy(), m.reshape(-1), rtol=1e-6, atol=1e-6)
        mine = [r for r in pairs if r["theme"] == h]
        assert len(mine) == len(cs) * 3
        for r in mine:
            a = cs.index(r["culture_a"])
            row = np.where(np.arange(len(cs)) == a, -np.inf, m[a])
            assert r["score"] == pytest.approx(np.sort(row)[::-1][r["rank"] - 1], abs=1e-6)
            assert r["score"] == pytest.approx(m[a, cs.index(r["culture_b"])], abs=1e-6)
    sim = manifest["similarity"]
    assert (sim["name"], sim["kind"], sim["block"]) == ("mmd", "set", 7)
    assert sim["options"] == {"sigma": 3.0, "seed": 0, "sample": 2000}
    assert manifest["config"]["set_options"] == {"sigma": 3.0}
    emb = pq.read_table(out / "culture_embeddings.parquet")  # pooled means, as documented
    assert set(emb.column("head").to_pylist()) == {"general", "craft", "music"}
    # a rerun reuses the saved matrices; other options are refused, naming the field,
    # and replace them only when asked to
    again = run_allpairs(str(tmp_path / "items.parquet"), str(out), cfg, log=quiet)
    assert (again["counts"]["blocks_run"], again["counts"]["blocks_skipped"]) == (0, 3)
    sigma1 = cfg.model_copy(update={"set_options": {"sigma": 1.0}})
    with pytest.raises(SettingsMismatchError, match=r"set_options.sigma: 3.0 -> 1.0"):
        run_allpairs(str(tmp_path / "items.parquet"), str(out), sigma1, log=quiet)
    other = run_allpairs(str(tmp_path / "items.parquet"), str(out), sigma1, log=quiet,
                         overwrite=True)
    assert (other["counts"]["blocks_run"], other["counts"]["blocks_skipped"]) == (3, 0)


def culture_level(path, n=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({
        "culture": [f"c{i}" for i in range(n)] * 2, "head": ["general"] * n + ["music"] * n,
        "vector": pa.array(rng.normal(size=(2 * n, 6)).astype(np.float32).tolist(),
                           pa.list_(pa.float32(), 6))}), path)


def test_set_level_on_culture_level_input_is_a_clear_error(tmp_path):
    culture_level(tmp_path / "cultures.parquet")
    with pytest.raises(ValueError, match=r"'energy' is a set-level similarity .* is "
                                         r"culture-level input .* Pass item-level input"):
        run_allpairs(str(tmp_path / "cultures.parquet"), str(tmp_path / "o"),
                     AllPairsConfig(similarity="energy"), log=quiet)


def test_default_k_is_clamped_explicit_k_is_an_error(ray_session, tmp_path):
    pq.write_table(item_table(n_cultures=8, per=2), tmp_path / "items.parquet")
    log = Log()
    manifest = run_allpairs(str(tmp_path / "items.parquet"), str(tmp_path / "out"),
                            AllPairsConfig(), log=log)
    assert "all-pairs: k=10 clamped to 7 (8 cultures)" in log
    assert manifest["k"] == {"given": None, "default": 10, "used": 7, "clamped": True}
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    assert max(r["rank"] for r in pairs) == 7
    with pytest.raises(ValueError, match="k=10 but the input has only 8 cultures: k must be "
                                         "at most 7"):
        run_allpairs(str(tmp_path / "items.parquet"), str(tmp_path / "out2"),
                     AllPairsConfig(k=10), log=quiet)


def fake_run(run):
    """RUN/embed (an embed run's item Parquet) and RUN/train (culture_embeddings + model)."""
    t = item_table(n_cultures=5, per=3, d=8)
    emb = t.append_column("modality", pa.array(["text"] * t.num_rows)) \
        .append_column("encoder", pa.array(["fake"] * t.num_rows)) \
        .append_column("error", pa.array([None] * t.num_rows, pa.string()))
    (run / "embed" / "embeddings" / "text").mkdir(parents=True)
    pq.write_table(emb, run / "embed" / "embeddings" / "text" / "part-0.parquet")
    (run / "embed" / "manifest.json").write_text("{}")
    culture_level(run / "train" / "culture_embeddings.parquet")
    (run / "train" / "model.pt").write_bytes(b"\0")
    (run / "train" / "manifest.json").write_text("{}")


def test_run_directory_and_train_run_inputs(ray_session, tmp_path):
    run = tmp_path / "run"
    fake_run(run)
    m = run_allpairs(str(run / "train"), str(tmp_path / "ap-train"), AllPairsConfig(k=2),
                     log=quiet)
    assert m["input_kind"] == "culture_file"
    assert m["input_read"] == str(run / "train" / "culture_embeddings.parquet")
    assert m["counts"]["heads"]["general"]["cultures"] == 4
    log = Log()
    m = run_allpairs(str(run), str(tmp_path / "ap-run"), AllPairsConfig(k=2), log=log)
    assert (m["input_kind"], m["input_read"]) == ("embed_run", str(run / "embed"))
    assert m["counts"]["heads"]["general"]["cultures"] == 5
    assert any(f"{run} is a run directory: reading its embed run" in s
               and f"pass {run / 'train'}" in s for s in log)
    # an all-pairs output is read as its culture embeddings
    m = run_allpairs(str(tmp_path / "ap-run"), str(tmp_path / "ap-again"), AllPairsConfig(k=2),
                     log=quiet)
    assert m["input_kind"] == "culture_file"


def test_unknown_directory_and_non_parquet_file_are_clear_errors(tmp_path):
    run = tmp_path / "run"
    fake_run(run)
    (run / "train" / "culture_embeddings.parquet").unlink()
    with pytest.raises(ValueError, match=r"run/train: not an all-pairs input; it holds "
                                         r"manifest.json, model.pt\. Accepted: "):
        run_allpairs(str(run / "train"), str(tmp_path / "o"), log=quiet)
    with pytest.raises(ValueError, match=r"manifest.json: not a Parquet file"):
        run_allpairs(str(run / "train" / "manifest.json"), str(tmp_path / "o"), log=quiet)


def test_theme_of_one_culture_is_skipped_with_a_warning(ray_session, tmp_path):
    t = item_table(n_cultures=6, per=2, d=8)
    themes = t.column("themes").to_pylist()
    themes[0] = themes[0] + ["rare"]  # only culture-000 has it
    t = t.set_column(3, "themes", pa.array(themes, pa.list_(pa.string())))
    pq.write_table(t, tmp_path / "items.parquet")
    for sim in ("cosine", "energy"):
        log = Log()
        out = tmp_path / sim
        m = run_allpairs(str(tmp_path / "items.parquet"), str(out),
                         AllPairsConfig(similarity=sim, k=2), log=log)
        why = "1 culture(s) (culture-000); all-pairs needs at least 2"
        assert f"all-pairs: warning: head 'rare' skipped: {why}" in log
        assert m["skipped_heads"] == {"rare": why}
        assert m["alpha"] == {"craft": 0.5, "music": 0.5}
        themes_out = set(pq.read_table(out / "pairs.parquet").column("theme").to_pylist())
        assert themes_out == {"general", "craft", "music", "combined"}
