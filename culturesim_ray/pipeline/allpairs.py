"""The all-pairs theme-similarity job (SPEC J2, J3): Ray tasks over row blocks.

Input: an embed run directory (item vectors, pooled to cultures here), an
item-level Parquet (culture, vector[, themes]) or a culture-level Parquet
(culture, head, vector), e.g. the trained model's export.

Output directory::

    OUT/culture_embeddings.parquet     culture, head, vector (what was compared)
    OUT/blocks/<head>/<block>.parquet  one finished Ray task each (rerun skips them)
    OUT/pairs.parquet                  theme, culture_a, culture_b, score, rank, similarity
    OUT/matrices/<head>.parquet        culture_a, culture_b, score (when N <= dense_limit)
    OUT/manifest.json                  config, counts, prefilter recall, versions, time

Heads are "general", one per theme, and "combined" (S_total = sum_t alpha_t S_t
over the theme heads). For cosine and dot the combined score is computed
exactly at any N as one more blockwise top-k over the concatenation of the
sqrt(alpha_t)-weighted theme vectors (a culture lacking theme t contributes 0
for it); for other similarities it is combined from dense matrices, so it
needs N <= dense_limit.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from culturesim_ray import io
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.allpairs import blockwise_topk, check_vectors, dense_similarity
from culturesim_ray.ops.pooling import GENERAL, pool

COMBINED = "combined"
PAIRS_SCHEMA = pa.schema([("theme", pa.string()), ("culture_a", pa.string()),
                          ("culture_b", pa.string()), ("score", pa.float32()),
                          ("rank", pa.int32()), ("similarity", pa.string())])
MATRIX_SCHEMA = pa.schema([("culture_a", pa.string()), ("culture_b", pa.string()),
                           ("score", pa.float32())])


# --- input ----------------------------------------------------------------------

def _vectors(table: pa.Table, what: str) -> np.ndarray:
    col = table.column("vector").combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), col.type.list_size).astype(np.float32)
    rows = col.to_pylist()
    dims = {len(r) if r is not None else -1 for r in rows}
    if len(dims) > 1:
        first = len(rows[0]) if rows[0] is not None else None
        bad = next(i for i, r in enumerate(rows) if r is None or len(r) != first)
        raise ValueError(f"{what}: mixed vector dimensions {sorted(dims)}; row {bad} has "
                         f"{'no vector' if rows[bad] is None else len(rows[bad])} vs {first} in row 0")
    return np.asarray(rows, dtype=np.float32)


def load_culture_vectors(inp: str, cfg: AllPairsConfig) -> dict[str, tuple[list[str], np.ndarray]]:
    """head -> (cultures, (N, d) vectors) from any accepted input form."""
    fs, p = io.filesystem_for(inp, cfg.s3)
    if not fs.exists(p):
        raise FileNotFoundError(f"all-pairs input not found: {inp}")
    if fs.isdir(p) and fs.exists(p.rstrip("/") + "/embeddings"):
        from culturesim_ray.pipeline.embed import read_embeddings

        tables = read_embeddings(inp, cfg.modality, cfg=_embed_cfg(cfg))
        if cfg.modality not in tables:
            raise ValueError(f"{inp}: no {cfg.modality!r} embeddings in this run "
                             f"(choose another modality)")
        table = tables[cfg.modality]
    else:
        table = io.read_table(inp, cfg.s3)
    names = set(table.column_names)
    if not {"culture", "vector"} <= names:
        raise ValueError(f"{inp}: expected columns culture and vector (and themes or head), "
                         f"got {sorted(names)}")
    if table.num_rows == 0:
        raise ValueError(f"{inp}: no vectors (empty input)")
    vecs = _vectors(table, inp)
    bad = ~np.isfinite(vecs).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        ident = table.column("item_id")[row].as_py() if "item_id" in names else \
            table.column("culture")[row].as_py()
        raise ValueError(f"{inp}: row {row} ({ident}) holds NaN or inf ({int(bad.sum())} such rows)")
    cultures = table.column("culture").to_pylist()
    if "head" in names:  # culture level already
        heads: dict[str, tuple[list[str], list[np.ndarray]]] = {}
        for i, h in enumerate(table.column("head").to_pylist()):
            heads.setdefault(h, ([], []))
            heads[h][0].append(cultures[i])
            heads[h][1].append(vecs[i])
        out = {}
        for h, (cs, vs) in heads.items():
            if len(set(cs)) != len(cs):
                raise ValueError(f"{inp}: head {h!r} lists a culture twice")
            order = np.argsort(cs)
            out[h] = ([cs[i] for i in order], np.stack(vs)[order])
        return out
    themes = table.column("themes").to_pylist() if "themes" in names else None
    return pool(vecs, cultures, themes, how=cfg.pooling, min_items=cfg.min_items)


def _embed_cfg(cfg: AllPairsConfig) -> Any:
    from culturesim_ray.config import EmbedConfig

    return EmbedConfig(s3=cfg.s3)


# --- the Ray task -----------------------------------------------------------------

def block_pairs(x: torch.Tensor, cultures: list[str], i0: int, i1: int, k: int, sim: Any,
                sim_name: str, head: str, block_cols: int) -> pa.Table:
    """Top-k pairs for rows i0..i1 of x against all rows (self excluded)."""
    v, idx = blockwise_topk(x[i0:i1], x, k=k, sim=sim, block_rows=i1 - i0,
                            block_cols=block_cols, exclude_self=True, row_offset=i0)
    return _pairs_table(head, cultures, np.arange(i0, i1), v, idx, sim_name)


def _block_file(out: str, head: str, i0: int, i1: int) -> str:
    return io.join(out, "blocks", _safe(head), f"rows-{i0:09d}-{i1:09d}.parquet")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _run_block(x_ref: Any, cultures: list[str], i0: int, i1: int, k: int, sim: Any,
               sim_name: str, head: str, block_cols: int, path: str, s3: Any) -> int:
    """Ray task body: compute one row block and write it (atomically where local)."""
    table = block_pairs(x_ref, cultures, i0, i1, k, sim, sim_name, head, block_cols)
    io.write_table(table, path, s3)
    return table.num_rows


# --- the job --------------------------------------------------------------------

def _alpha(themes: list[str], cfg: AllPairsConfig) -> dict[str, float]:
    if cfg.alpha:
        unknown = sorted(set(cfg.alpha) - set(themes))
        if unknown:
            raise ValueError(f"alpha names unknown themes {unknown}; themes here: {themes}")
        return {t: float(cfg.alpha.get(t, 0.0)) for t in themes}
    return {t: 1.0 / len(themes) for t in themes} if themes else {}


def combined_vectors(heads: dict[str, tuple[list[str], np.ndarray]], alpha: dict[str, float],
                     sim: str) -> tuple[list[str], np.ndarray]:
    """Concatenated sqrt(alpha)-weighted theme vectors whose dot product is S_total."""
    cultures = sorted({c for t in alpha for c in heads[t][0]})
    pos = {c: i for i, c in enumerate(cultures)}
    parts = []
    for t, a in alpha.items():
        cs, v = heads[t]
        if sim == "cosine":
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        block = np.zeros((len(cultures), v.shape[1]), np.float32)
        block[[pos[c] for c in cs]] = v * math.sqrt(a)
        parts.append(block)
    return cultures, np.concatenate(parts, axis=1)


def run_allpairs(inp: str, out: str, cfg: AllPairsConfig | None = None, log: Any = print,
                 address: str | None = None) -> dict[str, Any]:
    """Compute every head's culture-by-culture top-k (and dense matrices for small N)."""
    import ray

    from culturesim_ray.pipeline.ray_env import init_ray

    cfg = cfg or AllPairsConfig()
    started = time.time()
    heads = load_culture_vectors(inp, cfg)
    if cfg.heads:
        missing = sorted(set(cfg.heads) - set(heads))
        if missing:
            raise ValueError(f"heads {missing} not in the input; it has {sorted(heads)}")
        heads = {h: heads[h] for h in cfg.heads}
    themes = [h for h in heads if h not in (GENERAL, COMBINED)]
    alpha = _alpha(themes, cfg)
    jobs: dict[str, tuple[list[str], np.ndarray, str]] = {}
    for h, (cs, v) in heads.items():
        jobs[h] = (cs, v, cfg.similarity)
    if alpha and cfg.similarity in ("cosine", "dot"):
        cs, v = combined_vectors(heads, alpha, cfg.similarity)
        jobs[COMBINED] = (cs, v, "dot")  # the weighted concatenation's dot product is S_total
    for h, (cs, v, _) in jobs.items():
        check_vectors(torch.from_numpy(v), f"head {h!r}")
        if len(cs) < 2:
            raise ValueError(f"head {h!r}: {len(cs)} culture(s); all-pairs needs at least 2")
    largest = max(len(cs) for cs, _, _ in jobs.values())
    if cfg.k > largest - 1:
        raise ValueError(f"k={cfg.k} but the input has only {largest} cultures: "
                         f"k must be at most {largest - 1}")

    # culture embeddings: what was compared
    rows = [{"culture": c, "head": h, "vector": v[i].tolist()} for h, (cs, v) in heads.items()
            for i, c in enumerate(cs)]
    io.write_table(pa.Table.from_pylist(rows), io.join(out, "culture_embeddings.parquet"), cfg.s3)

    init_ray(address)
    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_run_block)
    counts: dict[str, Any] = {"heads": {}, "blocks_run": 0, "blocks_skipped": 0}
    recall: dict[str, Any] = {}
    pending = []
    for h, (cs, v, sim_name) in jobs.items():
        n = len(cs)
        k = min(cfg.k, n - 1)
        x = torch.from_numpy(v)
        sim: Any = sim_name
        if sim_name == "mahalanobis":
            sim = S.Mahalanobis().fit(x)
        use_pf = cfg.prefilter == "on" or (cfg.prefilter == "auto" and n >= cfg.prefilter_min)
        counts["heads"][h] = {"cultures": n, "dim": int(v.shape[1]), "k": k, "prefilter": use_pf}
        if use_pf:
            recall[h] = _prefiltered_head(out, h, cs, x, k, sim_name, cfg, log)
            continue
        x_ref = ray.put(x)
        for i0 in range(0, n, cfg.block_rows):
            i1 = min(n, i0 + cfg.block_rows)
            path = _block_file(out, h, i0, i1)
            if io.exists(path, cfg.s3):
                counts["blocks_skipped"] += 1
                continue
            pending.append(task.remote(x_ref, cs, i0, i1, k, sim, sim_name, h, cfg.block_cols,
                                       path, cfg.s3))
    total = len(pending)
    if total:
        log(f"all-pairs: {total} blocks over {len(jobs)} heads ({counts['blocks_skipped']} "
            f"already done)")
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
        done += 1
        if done == total or done % max(1, total // 10) == 0:
            log(f"  blocks {done}/{total}")
    counts["blocks_run"] = total

    pairs = _collect_pairs(out, jobs, cfg)
    io.write_table(pairs, io.join(out, "pairs.parquet"), cfg.s3)
    dense = _write_dense(out, heads, alpha, cfg)
    counts["pairs"] = pairs.num_rows
    counts["dense_matrices"] = dense
    manifest = io.manifest("allpairs", cfg.model_dump(mode="json"), counts, started, input=inp,
                           alpha=alpha, prefilter_recall=recall)
    io.write_json(manifest, io.join(out, "manifest.json"), cfg.s3)
    log(f"all-pairs: {pairs.num_rows} pairs over heads {sorted(jobs)} -> {out}")
    return manifest


def _collect_pairs(out: str, jobs: dict[str, Any], cfg: AllPairsConfig) -> pa.Table:
    tables = []
    for h in jobs:
        fs, p = io.filesystem_for(io.join(out, "blocks", _safe(h)), cfg.s3)
        files = sorted(f for f in fs.find(p) if f.endswith(".parquet")) if fs.exists(p) else []
        for f in files:
            with fs.open(f, "rb") as fh:
                tables.append(pq.read_table(fh, schema=PAIRS_SCHEMA))
    return pa.concat_tables(tables) if tables else PAIRS_SCHEMA.empty_table()


def _write_dense(out: str, heads: dict[str, tuple[list[str], np.ndarray]],
                 alpha: dict[str, float], cfg: AllPairsConfig) -> list[str]:
    """Dense matrices for heads with N <= dense_limit, plus the combined one."""
    written = []
    mats: dict[str, tuple[list[str], np.ndarray]] = {}
    for h, (cs, v) in heads.items():
        if len(cs) > cfg.dense_limit:
            continue
        sim: Any = S.Mahalanobis().fit(torch.from_numpy(v)) if cfg.similarity == "mahalanobis" \
            else cfg.similarity
        m = dense_similarity(torch.from_numpy(v), sim=sim).numpy()
        mats[h] = (cs, m)
    if alpha and all(t in mats for t in alpha):
        cultures = sorted({c for t in alpha for c in mats[t][0]})
        pos = {c: i for i, c in enumerate(cultures)}
        total = np.zeros((len(cultures), len(cultures)), np.float64)
        for t, a in alpha.items():
            cs, m = mats[t]
            idx = np.array([pos[c] for c in cs])
            total[np.ix_(idx, idx)] += a * m  # a culture without theme t adds 0 for it
        mats[COMBINED] = (cultures, total.astype(np.float32))
    for h, (cs, m) in mats.items():
        n = len(cs)
        table = pa.table({"culture_a": pa.array(np.repeat(cs, n).tolist(), pa.string()),
                          "culture_b": pa.array(np.tile(cs, n).tolist(), pa.string()),
                          "score": pa.array(m.reshape(-1).astype(np.float32))},
                         schema=MATRIX_SCHEMA)
        io.write_table(table, io.join(out, "matrices", f"{_safe(h)}.parquet"), cfg.s3)
        written.append(h)
    return written


def _pairs_table(head: str, cultures: list[str], rows: np.ndarray, v: torch.Tensor,
                 idx: torch.Tensor, sim_name: str) -> pa.Table:
    k = idx.shape[1]
    ok = (idx >= 0).reshape(-1).numpy()
    a = np.repeat(rows, k)[ok]
    b = idx.reshape(-1).numpy()[ok]
    return pa.table({
        "theme": pa.array([head] * len(a), pa.string()),
        "culture_a": pa.array([cultures[i] for i in a], pa.string()),
        "culture_b": pa.array([cultures[j] for j in b], pa.string()),
        "score": pa.array(v.reshape(-1).numpy()[ok].astype(np.float32)),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))[ok]),
        "similarity": pa.array([sim_name] * len(a), pa.string()),
    }, schema=PAIRS_SCHEMA)


def _run_clusters(x: torch.Tensor, cultures: list[str], clusters: Any, ids: list[int], k: int,
                  sim_name: str, head: str, block_rows: int, path: str, s3: Any) -> int:
    """Ray task body: pre-filtered top-k for the rows of some clusters, written to `path`."""
    from culturesim_ray.ops.prefilter import topk_for_clusters

    rows, v, idx, _ = topk_for_clusters(x, clusters, ids, k, sim_name, block_rows)
    table = _pairs_table(head, cultures, rows.numpy(), v, idx, sim_name)
    io.write_table(table, path, s3)
    return table.num_rows


def _prefiltered_head(out: str, head: str, cultures: list[str], x: torch.Tensor, k: int,
                      sim_name: str, cfg: AllPairsConfig, log: Any) -> dict[str, Any]:
    """Cluster pre-filtered top-k for one head: FAISS k-means on the driver (saved, so a
    rerun uses the same clusters), then groups of clusters as Ray tasks."""
    import ray

    from culturesim_ray.ops.prefilter import (
        Clusters,
        build_clusters,
        cluster_members,
        sample_recall,
    )

    if sim_name not in ("cosine", "dot"):
        raise ValueError(f"pre-filtering supports cosine and dot, not {sim_name!r}: "
                         f"set prefilter: off")
    n = len(cultures)
    cpath = io.join(out, "blocks", _safe(head), "clusters.npz")
    fs, cp = io.filesystem_for(cpath, cfg.s3)
    if fs.exists(cp):
        with fs.open(cp, "rb") as fh, np.load(fh) as z:
            cl = Clusters(z["centroids"], z["assign"], z["probes"])
    else:
        cl = build_clusters(x, cfg.nlist or None, cfg.nprobe, spherical=sim_name == "cosine")
        fs.makedirs(cp.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(cp, "wb") as fh:
            np.savez(fh, centroids=cl.centroids, assign=cl.assign, probes=cl.probes)
    members = cluster_members(cl)
    groups: list[list[int]] = [[]]
    size = 0
    for c, m in enumerate(members):
        if size >= cfg.block_rows:
            groups.append([])
            size = 0
        groups[-1].append(c)
        size += len(m)
    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_run_clusters)
    x_ref, cl_ref = ray.put(x), ray.put(cl)
    pending, skipped = [], 0
    for g in groups:
        path = io.join(out, "blocks", _safe(head), f"clusters-{g[0]:06d}-{g[-1]:06d}.parquet")
        if io.exists(path, cfg.s3):
            skipped += 1
            continue
        pending.append(task.remote(x_ref, cultures, cl_ref, g, k, sim_name, head,
                                   cfg.block_rows, path, cfg.s3))
    log(f"  {head}: pre-filtered, {len(cl.centroids)} clusters in {len(groups)} tasks "
        f"({skipped} already done)")
    ray.get(pending)
    # recall@k on a sample, from what was written
    pos = {c: i for i, c in enumerate(cultures)}
    idx = torch.full((n, k), -1, dtype=torch.long)
    table = _collect_pairs(out, {head: None}, cfg)
    for a, b, r in zip(table.column("culture_a").to_pylist(), table.column("culture_b").to_pylist(),
                       table.column("rank").to_pylist(), strict=True):
        idx[pos[a], r - 1] = pos[b]
    rec = sample_recall(x, idx, k, sim=sim_name, sample=cfg.recall_sample)
    probed = sum(len(members[c]) * sum(len(members[int(p)]) for p in cl.probes[c])
                 for c in range(len(members)))
    log(f"  {head}: {n * n / max(1, probed):.1f}x fewer pair evaluations, recall@{k} {rec:.3f}")
    return {"recall_at_k": rec, "k": k, "sample": min(cfg.recall_sample, n),
            "nlist": len(cl.centroids), "nprobe": int(cl.probes.shape[1]),
            "pair_evaluations": probed, "pair_reduction": n * n / max(1, probed)}
