"""The all-pairs job on a real local Ray instance: results, resume, pre-filter, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from culturesim_ray.config import AllPairsConfig
from culturesim_ray.ops.allpairs import dense_topk
from culturesim_ray.ops.pooling import pool
from culturesim_ray.pipeline.allpairs import run_allpairs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def quiet(*_a, **_k):
    return None


def item_table(n_cultures=30, per=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_cultures, d))
    rows = []
    for c in range(n_cultures):
        for j in range(per):
            rows.append({"item_id": f"c{c}-{j}", "culture": f"culture-{c:03d}",
                         "vector": (centers[c] + 0.5 * rng.normal(size=d)).astype(np.float32).tolist(),
                         "themes": ["music"] if j % 2 else ["craft", "music"]})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("item_id", pa.string()), ("culture", pa.string()),
        ("vector", pa.list_(pa.float32(), d)), ("themes", pa.list_(pa.string()))]))


def expected(table, head, k, sim="cosine"):
    heads = pool(np.stack(table.column("vector").to_numpy(zero_copy_only=False)),
                 table.column("culture").to_pylist(), table.column("themes").to_pylist())
    cs, v = heads[head]
    vals, idx = dense_topk(torch.from_numpy(v), k=k, sim=sim, exclude_self=True)
    return cs, vals.numpy(), idx.numpy(), heads


def test_pairs_equal_dense_topk_per_head(ray_session, tmp_path):
    t = item_table()
    pq.write_table(t, tmp_path / "items.parquet")
    out = tmp_path / "out"
    cfg = AllPairsConfig(k=4, block_rows=7)
    manifest = run_allpairs(str(tmp_path / "items.parquet"), str(out), cfg, log=quiet)
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert set(r["theme"] for r in pairs) == {"general", "craft", "music", "combined"}
    for head in ("general", "music", "craft"):
        cs, vals, idx, _ = expected(t, head, 4)
        got = sorted((r for r in pairs if r["theme"] == head),
                     key=lambda r: (r["culture_a"], r["rank"]))
        assert len(got) == len(cs) * 4
        for r in got:
            a = cs.index(r["culture_a"])
            assert r["culture_b"] == cs[idx[a, r["rank"] - 1]]
            assert r["score"] == pytest.approx(vals[a, r["rank"] - 1], abs=1e-5)
            assert r["similarity"] == "cosine"
    assert manifest["counts"]["blocks_run"] == 4 * 5  # 30 rows / 7 per block, 4 heads
    # dense matrices, and the combined one is the alpha-weighted sum of theme matrices
    m = {h: pq.read_table(out / "matrices" / f"{h}.parquet").to_pandas()
         for h in ("music", "craft", "combined")}
    s_total = 0.5 * m["music"]["score"].to_numpy() + 0.5 * m["craft"]["score"].to_numpy()
    np.testing.assert_allclose(m["combined"]["score"].to_numpy(), s_total, atol=1e-5)
    comb = [r for r in pairs if r["theme"] == "combined" and r["rank"] == 1]
    mat = m["combined"].set_index(["culture_a", "culture_b"])["score"]
    for r in comb:
        assert r["score"] == pytest.approx(mat[(r["culture_a"], r["culture_b"])], abs=1e-5)
        row = m["combined"][(m["combined"].culture_a == r["culture_a"])
                            & (m["combined"].culture_b != r["culture_a"])]
        assert r["score"] == pytest.approx(row["score"].max(), abs=1e-5)
    assert json.loads((out / "manifest.json").read_text())["alpha"] == {"craft": 0.5, "music": 0.5}


def test_rerun_skips_finished_blocks_and_gives_identical_results(ray_session, tmp_path):
    pq.write_table(item_table(), tmp_path / "items.parquet")
    out = tmp_path / "out"
    cfg = AllPairsConfig(k=3, block_rows=8, similarity="euclidean")
    run_allpairs(str(tmp_path / "items.parquet"), str(out), cfg, log=quiet)
    first = pq.read_table(out / "pairs.parquet").sort_by(
        [("theme", "ascending"), ("culture_a", "ascending"), ("rank", "ascending")])
    blocks = sorted((out / "blocks").rglob("*.parquet"))
    for b in blocks[::3]:  # as if the run had been killed before these finished
        b.unlink()
    manifest = run_allpairs(str(tmp_path / "items.parquet"), str(out), cfg, log=quiet)
    assert manifest["counts"]["blocks_run"] == len(blocks[::3])
    assert manifest["counts"]["blocks_skipped"] == len(blocks) - len(blocks[::3])
    again = pq.read_table(out / "pairs.parquet").sort_by(
        [("theme", "ascending"), ("culture_a", "ascending"), ("rank", "ascending")])
    assert again.equals(first)


def test_culture_level_input_and_prefilter_recall(ray_session, tmp_path):
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(30, 24, generator=g) * 3
    x = centers[torch.randint(0, 30, (2500,), generator=g)] + torch.randn(2500, 24, generator=g)
    names = [f"c{i:05d}" for i in range(2500)]
    t = pa.table({"culture": names, "head": ["general"] * 2500,
                  "vector": pa.array(x.numpy().tolist(), pa.list_(pa.float32(), 24))})
    pq.write_table(t, tmp_path / "cultures.parquet")
    out = tmp_path / "out"
    cfg = AllPairsConfig(k=10, prefilter="on", nlist=40, nprobe=6, block_rows=600,
                         recall_sample=300, dense_limit=100)
    manifest = run_allpairs(str(tmp_path / "cultures.parquet"), str(out), cfg, log=quiet)
    rec = manifest["prefilter_recall"]["general"]
    assert rec["recall_at_k"] > 0.9 and rec["pair_reduction"] > 3
    pairs = pq.read_table(out / "pairs.parquet")
    assert pairs.num_rows == 2500 * 10
    assert not (out / "matrices").exists()  # N above dense_limit
    # exact check of the recall figure on the same sample
    again = run_allpairs(str(tmp_path / "cultures.parquet"), str(out), cfg, log=quiet)
    assert again["prefilter_recall"]["general"]["recall_at_k"] == rec["recall_at_k"]


@pytest.mark.parametrize(("mutate", "cfg", "msg"), [
    (lambda v: v.__setitem__((3, 2), np.nan), {}, r"row 3 \(c0-3\) holds NaN or inf"),
    (lambda v: v.__setitem__((5, 0), np.inf), {}, r"row 5 \(c0-5\) holds NaN or inf"),
    (None, {"k": 40}, r"k=40 but the input has only 30 cultures"),
    (None, {"heads": ["cuisine"]}, r"heads \['cuisine'\] not in the input"),
    (None, {"alpha": {"cuisine": 1.0}}, r"alpha names unknown themes \['cuisine'\]"),
])
def test_bad_input_names_the_row_or_argument(ray_session, tmp_path, mutate, cfg, msg):
    t = item_table()
    if mutate:
        v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
        mutate(v)
        t = t.set_column(2, "vector", pa.array(v.tolist(), pa.list_(pa.float32(), v.shape[1])))
    pq.write_table(t, tmp_path / "items.parquet")
    with pytest.raises(ValueError, match=msg):
        run_allpairs(str(tmp_path / "items.parquet"), str(tmp_path / "out"),
                     AllPairsConfig(**cfg), log=quiet)


def test_mixed_dimensions_and_empty_input(tmp_path):
    t = pa.table({"culture": ["a", "b"], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    pq.write_table(t, tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match=r"mixed vector dimensions \[2, 3\]; row 1 has 3 vs 2"):
        run_allpairs(str(tmp_path / "mixed.parquet"), str(tmp_path / "o"), log=quiet)
    empty = pa.table({"culture": pa.array([], pa.string()),
                      "vector": pa.array([], pa.list_(pa.float32(), 2))})
    pq.write_table(empty, tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no vectors"):
        run_allpairs(str(tmp_path / "empty.parquet"), str(tmp_path / "o"), log=quiet)


def test_unknown_similarity_is_a_config_error():
    with pytest.raises(ValueError, match="unknown similarity 'cosin'"):
        AllPairsConfig(similarity="cosin")


def test_from_an_embed_run(ray_session, small_corpus, tmp_path):
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.pipeline.embed import run_embed

    run_embed(str(small_corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=4), log=quiet)
    manifest = run_allpairs(str(tmp_path / "emb"), str(tmp_path / "ap"), AllPairsConfig(k=2),
                            log=quiet)
    pairs = pq.read_table(Path(tmp_path / "ap" / "pairs.parquet")).to_pylist()
    assert {r["culture_a"] for r in pairs} == {"Turkish", "Greek", "Persian"}
    assert manifest["counts"]["heads"]["general"]["cultures"] == 3
    img = run_allpairs(str(tmp_path / "emb"), str(tmp_path / "ap-img"),
                       AllPairsConfig(k=2, modality="image"), log=quiet)
    assert img["counts"]["heads"]["general"]["dim"] == 1280
