"""The all-pairs job on a real local Ray instance: results, resume, pre-filter, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from allpairs_data import item_table, quiet
from conftest import FLAGS
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.fingerprint import SettingsMismatchError
from culturesim_ray.ops.allpairs import dense_topk
from culturesim_ray.ops.pooling import pool
from culturesim_ray.pipeline.allpairs import run_allpairs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


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
    # euclidean has a combined head too (S_total blockwise over the theme heads), and it
    # agrees with the alpha-weighted sum of the theme matrices
    assert "combined" in set(first.column("theme").to_pylist())
    mats = {h: pq.read_table(out / "matrices" / f"{h}.parquet").to_pandas()
            .set_index(["culture_a", "culture_b"])["score"] for h in ("combined",)}
    for r in first.filter(pc.equal(first.column("theme"), "combined")).to_pylist():
        assert abs(mats["combined"][(r["culture_a"], r["culture_b"])] - r["score"]) < 1e-5
    # a rerun with another k (or block size) is refused, naming what differs
    with pytest.raises(SettingsMismatchError, match=r"block_rows: 8 -> 16; k: 3 -> 4"):
        run_allpairs(str(tmp_path / "items.parquet"), str(out),
                     cfg.model_copy(update={"k": 4, "block_rows": 16}), log=quiet)


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


def test_a_culture_file_rewritten_in_place_is_not_resumed(ray_session, tmp_path):
    """A retrained model rewrites culture_embeddings.parquet at the same path: a rerun
    into the same output is refused (it would reuse the old model's blocks), and
    --overwrite recomputes from the new file."""
    import os

    def write(seed: int) -> None:
        x = torch.randn(20, 6, generator=torch.Generator().manual_seed(seed))
        pq.write_table(pa.table({"culture": [f"c{i:02d}" for i in range(20)],
                                 "head": ["general"] * 20,
                                 "vector": pa.array(x.numpy().tolist(), pa.list_(pa.float32(), 6))}),
                       tmp_path / "cultures.parquet")

    write(0)
    cfg, out = AllPairsConfig(k=3), str(tmp_path / "out")
    run_allpairs(str(tmp_path / "cultures.parquet"), out, cfg, log=quiet)
    first = pq.read_table(tmp_path / "out" / "pairs.parquet")
    write(1)
    os.utime(tmp_path / "cultures.parquet", (1e9, 1e9))  # a different time, whatever the clock
    with pytest.raises(SettingsMismatchError, match="input_version"):
        run_allpairs(str(tmp_path / "cultures.parquet"), out, cfg, log=quiet)
    run_allpairs(str(tmp_path / "cultures.parquet"), out, cfg, log=quiet, overwrite=True)
    assert not pq.read_table(tmp_path / "out" / "pairs.parquet").equals(first)


def _general_vectors(n: int, w: float, g: torch.Generator) -> torch.Tensor:
    """(n, 18) culture embeddings laid out as a run's general head with raw slots image
    (4) and text (8) at uneven modality shares, then a learned part (6)."""
    centers = torch.randn(12, 18, generator=g)
    x = centers[torch.randint(0, 12, (n,), generator=g)] + 0.5 * torch.randn(n, 18, generator=g)
    share_text = torch.tensor([1.0, 0.8, 0.5, 0.0])[torch.arange(n) % 4]  # 0: image only
    parts = [(slice(0, 4), (1 - share_text).sqrt() * w ** 0.5),
             (slice(4, 12), share_text.sqrt() * w ** 0.5), (slice(12, 18), (1 - w) ** 0.5)]
    for cols, scale in parts:
        blk = x[:, cols]
        x[:, cols] = blk / blk.norm(dim=1, keepdim=True) * (scale[:, None]
                                                         if torch.is_tensor(scale) else scale)
    return x


def _write_train_run(run: Path, heads: dict[str, tuple[list[str], torch.Tensor]], mcfg: Any,
                     g: torch.Generator) -> list[torch.Tensor] | None:
    """A train run's culture embeddings (head -> (cultures, vectors)) and model config
    in `run`, with a whitening file where `mcfg.map_whiten` (symmetric positive
    definite, far from the identity); returns its matrices in slot order, or None."""
    from dataclasses import asdict

    from culturesim_ray.runs import write_map_whitening

    run.mkdir()
    rows = [(c, h, v) for h, (cs, x) in heads.items() for c, v in zip(cs, x.tolist(), strict=True)]
    pq.write_table(pa.table({"culture": [r[0] for r in rows], "head": [r[1] for r in rows],
                             "vector": pa.array([r[2] for r in rows], pa.list_(pa.float32(), 18))}),
                   run / "culture_embeddings.parquet")
    (run / "model_config.json").write_text(json.dumps(asdict(mcfg)))
    if not mcfg.map_whiten:
        return None
    a = {m: torch.randn(d, d, generator=g) for m, d in (("image", 4), ("text", 8))}
    white = {m: (v @ v.T / len(v) + 0.2 * torch.eye(len(v))).numpy() for m, v in a.items()}
    write_map_whitening(white, str(run / "map_whitening.npz"))
    return [torch.from_numpy(white["image"]), torch.from_numpy(white["text"])]


@pytest.mark.parametrize("whiten", [False, True])
def test_a_train_runs_general_head_uses_the_modality_cosine(ray_session, tmp_path, whiten):
    """A train run's culture embeddings whose cultures have different modality shares:
    the general head is compared by `ModalityCosine` (as `culturesim evaluate` scores
    it), with the run's whitening where it has one, exactly and through the cluster
    pre-filter, and the manifest says so."""

    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    w, n = 0.9, 400
    mcfg = CultureSimConfig({"image": 4, "text": 8}, hidden=8, out=6, raw_weight=w,
                            map_learned=0.1,  # the train job's default read-out
                            map_whiten=30.0 if whiten else 0.0)
    g = torch.Generator().manual_seed(2)
    x = _general_vectors(n, w, g)
    run = tmp_path / "train"
    names = [f"c{i:04d}" for i in range(n)]
    mats = _write_train_run(run, {"general": (names, x)}, mcfg, g)
    sim = ModalityCosine([(0, 4), (4, 12)], learned=0.1, whitening=mats).fit(x)
    exact = sim(x, x).fill_diagonal_(float("-inf"))
    assert (exact - (x @ x.T).fill_diagonal_(float("-inf"))).abs()[exact.isfinite()].max() > 0.05
    for pf in ("off", "on"):
        cfg = AllPairsConfig(k=5, prefilter=pf, nlist=8, nprobe=4, recall_sample=200)
        manifest = run_allpairs(str(run), str(tmp_path / pf), cfg, log=quiet)
        assert manifest["head_similarity"]["general"] == {
            "name": "modality_cosine", "fill": pytest.approx(sim.fill), "learned": 0.1,
            "learned_share": 0.0, "whitened": sim.manifest_record()["whitened"]}
        assert (manifest["head_similarity"]["general"]["whitened"] is None) == (not whiten)
        pairs = pq.read_table(tmp_path / pf / "pairs.parquet").to_pylist()
        assert {r["similarity"] for r in pairs} == {"modality_cosine"}
        for r in pairs[::37]:  # every score is the similarity itself
            a, b = names.index(r["culture_a"]), names.index(r["culture_b"])
            assert r["score"] == pytest.approx(float(exact[a, b]), abs=1e-5)
        if pf == "off":  # the exact top-k
            top = torch.topk(exact, 5, dim=1).values
            got = torch.tensor([r["score"] for r in pairs]).reshape(n, 5)
            np.testing.assert_allclose(got.numpy(), top.numpy(), atol=1e-5)
        else:  # candidates from the cosine's clusters; recall against the exact top-k
            assert manifest["prefilter_recall"]["general"]["recall_at_k"] > 0.8


def test_theme_heads_with_raw_slots_sum_their_own_culture_maps(ray_session, tmp_path):
    """A run whose theme heads carry the raw slots (theme_raw) and a whitened culture
    map: S_total sums each theme's own `ModalityCosine` over the cultures that have
    both themes (as `combine_matrices` does), blockwise."""

    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.ops.modality_cosine import ModalityCosine
    from culturesim_ray.ops.set_pairs import combine_matrices

    w, n = 0.9, 60
    mcfg = CultureSimConfig({"image": 4, "text": 8}, ["a", "b"], hidden=8, out=6,
                            raw_weight=w, map_learned=0.1, map_whiten=30.0, theme_raw=True)
    g = torch.Generator().manual_seed(4)
    names = [f"c{i:03d}" for i in range(n)]
    heads = {"general": (names, _general_vectors(n, w, g)),
             "a": (names, _general_vectors(n, w, g)),
             "b": (names[::2], _general_vectors(n // 2, w, g))}  # half the cultures lack b
    run = tmp_path / "train"
    mats = _write_train_run(run, heads, mcfg, g)
    alpha = {"a": 0.7, "b": 0.3}
    ref = {}
    for t in alpha:
        cs, x = heads[t]
        x32 = x.float()
        sim = ModalityCosine([(0, 4), (4, 12)], learned=0.1, whitening=mats).fit(x32)
        ref[t] = (cs, sim(x32, x32).double().numpy())
    cultures, total = combine_matrices(ref, alpha)
    np.fill_diagonal(total, -np.inf)
    cfg = AllPairsConfig(k=4, alpha=alpha, heads=["a", "b"], prefilter="off", block_rows=16)
    manifest = run_allpairs(str(run), str(tmp_path / "out"), cfg, log=quiet)
    assert manifest["head_similarity"]["a"]["whitened"]
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet")
    combined = pairs.filter(pc.equal(pairs.column("theme"), "combined")).to_pylist()
    assert len(combined) == n * 4
    want = np.sort(total, axis=1)[:, ::-1][:, :4]
    got = np.zeros((n, 4))
    for r in combined:
        got[cultures.index(r["culture_a"]), r["rank"] - 1] = r["score"]
        i, j = cultures.index(r["culture_a"]), cultures.index(r["culture_b"])
        assert r["score"] == pytest.approx(total[i, j], abs=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_whitened_train_run_on_s3_maps_as_it_does_locally(ray_session, s3_server, tmp_path):
    """A train run's culture embeddings, config and whitening read from S3 and the map
    written there: the same pairs and manifest record as from local disk; without its
    whitening file the job stops, naming it."""
    from culturesim_ray.models.culturesim import CultureSimConfig

    mcfg = CultureSimConfig({"image": 4, "text": 8}, hidden=8, out=6, raw_weight=0.9,
                            map_learned=0.1, map_whiten=30.0)
    g = torch.Generator().manual_seed(6)
    names = [f"c{i:03d}" for i in range(80)]
    run = tmp_path / "train"
    _write_train_run(run, {"general": (names, _general_vectors(80, 0.9, g))}, mcfg, g)
    fs, bucket = s3_server["fs"], s3_server["bucket"]
    fs.put(str(run), f"{bucket}/runs/w/train", recursive=True)
    s3 = {"endpoint_url": s3_server["endpoint_url"], "key": "testing", "secret": "testing"}
    cfg = AllPairsConfig(k=4, prefilter="off", s3=s3)
    local = run_allpairs(str(run), str(tmp_path / "local"), cfg, log=quiet)
    remote = run_allpairs(f"s3://{bucket}/runs/w/train", f"s3://{bucket}/maps/w", cfg, log=quiet)
    assert remote["head_similarity"] == local["head_similarity"]
    assert remote["head_similarity"]["general"]["whitened"]
    with fs.open(f"{bucket}/maps/w/pairs.parquet", "rb") as fh:
        got = pq.read_table(fh)
    want = pq.read_table(tmp_path / "local" / "pairs.parquet")
    assert got.num_rows == want.num_rows == 80 * 4
    assert got.column("culture_b").to_pylist() == want.column("culture_b").to_pylist()
    np.testing.assert_allclose(got.column("score").to_numpy(), want.column("score").to_numpy(),
                               atol=1e-6)
    fs.rm(f"{bucket}/runs/w/train/map_whitening.npz")
    with pytest.raises(FileNotFoundError, match="map_whitening.npz"):
        run_allpairs(f"s3://{bucket}/runs/w/train", f"s3://{bucket}/maps/w2", cfg, log=quiet)


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

    run_embed(str(small_corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=4, uri_roots=[str(FLAGS)]),
              log=quiet)
    manifest = run_allpairs(str(tmp_path / "emb"), str(tmp_path / "ap"), AllPairsConfig(k=2),
                            log=quiet)
    pairs = pq.read_table(Path(tmp_path / "ap" / "pairs.parquet")).to_pylist()
    assert {r["culture_a"] for r in pairs} == {"Turkish", "Greek", "Persian"}
    assert manifest["counts"]["heads"]["general"]["cultures"] == 3
    img = run_allpairs(str(tmp_path / "emb"), str(tmp_path / "ap-img"),
                       AllPairsConfig(k=2, modality="image"), log=quiet)
    assert img["counts"]["heads"]["general"]["dim"] == 1280
