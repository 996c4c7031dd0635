"""The all-pairs job's Ray tasks: exact row blocks (the head's matrix shared
zero-copy from the object store), pre-filtered cluster groups (each task gets
only its clusters' rows and their candidates), and the combined head's S_total
blocks for similarities other than cosine/dot. The math is `culturesim_ray.ops`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from culturesim_ray import io
from culturesim_ray.allpairs_input import COMBINED
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.layout import AllPairsLayout
from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.allpairs import blockwise_topk
from culturesim_ray.ops.metric import DimensionMetric
from culturesim_ray.ops.modality_cosine import ModalityCosine
from culturesim_ray.ops.set_pairs import PAIRS_SCHEMA, combined_block_topk, pairs_table

# similarities the cluster pre-filter serves (a fitted ModalityCosine or DimensionMetric
# by its name: the cosine's clusters give the candidates, the similarity scores them)
PREFILTERED = ("cosine", "dot", ModalityCosine.name, DimensionMetric.name)


def block_pairs(x: torch.Tensor, cultures: list[str], i0: int, i1: int, k: int, sim: Any,
                sim_name: str, head: str, block_cols: int) -> pa.Table:
    """Top-k pairs for rows i0..i1 of x against all rows (self excluded)."""
    v, idx = blockwise_topk(x[i0:i1], x, k=k, sim=sim, block_rows=i1 - i0,
                            block_cols=block_cols, exclude_self=True, row_offset=i0)
    return pairs_table(head, cultures, np.arange(i0, i1), v, idx, sim_name)


def _block_file(out: str, head: str, i0: int, i1: int) -> str:
    return io.join(AllPairsLayout(out).blocks(_safe(head)), f"rows-{i0:09d}-{i1:09d}.parquet")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor over a numpy array from the object store (read-only, shared memory:
    zero-copy; the kernels never write their inputs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array"
        return torch.from_numpy(x)


def _run_block(x: np.ndarray, cultures: list[str], i0: int, i1: int, k: int, sim: Any,
               sim_name: str, head: str, block_cols: int, path: str, s3: Any) -> int:
    """Ray task body: compute one row block against every row and write it
    (atomically where local). `x` arrives zero-copy from the object store."""
    table = block_pairs(_tensor(x), cultures, i0, i1, k, sim, sim_name, head, block_cols)
    io.write_table(table, path, s3)
    return table.num_rows


def _run_combined(xs: list[np.ndarray], masks: list[np.ndarray], weights: list[float],
                  sims: list[Any], cultures: list[str], i0: int, i1: int, k: int, sim_name: str,
                  block_cols: int, path: str, s3: Any) -> int:
    """Ray task body: S_total's top-k for rows i0..i1 (any vector similarity)."""
    v, idx = combined_block_topk([_tensor(x) for x in xs], [_tensor(m) for m in masks],
                                 weights, sims, i0, i1, k, block_cols)
    table = pairs_table(COMBINED, cultures, np.arange(i0, i1), v, idx, sim_name)
    io.write_table(table, path, s3)
    return table.num_rows


def _combined_blocks(out: str, combined: Any, alpha: dict[str, float], k: int,
                     cfg: AllPairsConfig, counts: dict[str, Any],
                     head_sims: dict[str, Any] | None = None) -> list[Any]:
    """S_total's row blocks as Ray tasks; each theme compared by its head's similarity
    (`head_sims`: a train run's fitted culture map) or by `cfg.similarity`."""
    import ray

    cultures, xs, masks = combined
    n = len(cultures)
    kh = min(k, n - 1)
    head_sims = head_sims or {}
    sims: list[Any] = [head_sims[t] if t in head_sims else S.Mahalanobis().fit(
                       torch.from_numpy(x[m])) if cfg.similarity == "mahalanobis"
                       else cfg.similarity
                       for t, x, m in zip(alpha, xs, masks, strict=True)]
    xs = list(xs)
    for j, s in enumerate(sims):  # the rows as each theme's similarity reads them, once
        if hasattr(s, "prepare"):
            xs[j] = s.prepare(torch.from_numpy(xs[j])).numpy()
            sims[j] = s.on_prepared()
    names = {getattr(s, "name", s) for s in sims}
    sim_name = names.pop() if len(names) == 1 else "+".join(sorted(str(s) for s in names))
    counts["heads"][COMBINED] = {"cultures": n, "dim": int(sum(x.shape[1] for x in xs)), "k": kh,
                                 "prefilter": False}
    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_run_combined)
    # one object each (refs nested in a list would not be resolved for the task)
    x_refs, m_refs, cs_ref = ray.put(list(xs)), ray.put(list(masks)), ray.put(cultures)
    pending = []
    nbytes = sum(x.nbytes + m.nbytes for x, m in zip(xs, masks, strict=True))
    for i0, i1, path in unfinished_blocks(out, COMBINED, n, cfg, counts):
        _note_input(counts, nbytes, nbytes + nbytes * (i1 - i0) // max(1, n))
        pending.append(task.remote(x_refs, m_refs, list(alpha.values()), sims, cs_ref, i0, i1, kh,
                                   sim_name, cfg.block_cols, path, cfg.s3))
    return pending


def unfinished_blocks(out: str, head: str, n: int, cfg: AllPairsConfig,
                      counts: dict[str, Any]) -> list[tuple[int, int, str]]:
    """(i0, i1, path) of the head's row blocks not yet written; finished ones are
    counted as skipped (a rerun resumes)."""
    todo = []
    for i0 in range(0, n, cfg.block_rows):
        i1 = min(n, i0 + cfg.block_rows)
        path = _block_file(out, head, i0, i1)
        if io.exists(path, cfg.s3):
            counts["blocks_skipped"] += 1
        else:
            todo.append((i0, i1, path))
    return todo


def _note_input(counts: dict[str, Any], task_bytes: int, block_plus_candidates: int) -> None:
    counts["max_task_input_bytes"] = max(counts["max_task_input_bytes"], int(task_bytes))
    counts["max_block_plus_candidates_bytes"] = max(counts["max_block_plus_candidates_bytes"],
                                                    int(block_plus_candidates))


def _block_tables(out: str, jobs: dict[str, Any], cfg: AllPairsConfig) -> Iterator[pa.Table]:
    """The pair tables the block tasks wrote, head by head, file by file (sorted)."""
    for h in jobs:
        fs, p = io.filesystem_for(AllPairsLayout(out).blocks(_safe(h)), cfg.s3)
        files = sorted(f for f in fs.find(p) if f.endswith(".parquet")) if fs.exists(p) else []
        for f in files:
            with fs.open(f, "rb") as fh:
                yield pq.read_table(fh, schema=PAIRS_SCHEMA)


def _write_pairs(out: str, jobs: dict[str, Any], cfg: AllPairsConfig) -> int:
    """Stream every block's pairs into OUT/pairs.parquet (atomically), one block in
    memory at a time, not all C x k x heads rows on the driver; returns the rows."""
    rows = 0
    with io.atomic_open(AllPairsLayout(out).pairs, cfg.s3) as fh, \
            pq.ParquetWriter(fh, PAIRS_SCHEMA) as writer:
        for table in _block_tables(out, jobs, cfg):
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _run_clusters(x_u: np.ndarray, rows_u: np.ndarray, assign_u: np.ndarray, probes: np.ndarray,
                  nlist: int, cultures: list[str], ids: list[int], k: int, sim: Any,
                  head: str, block_rows: int, path: str, s3: Any) -> int:
    """Ray task body: pre-filtered top-k for the rows of some clusters, written to
    `path`. The task receives only the rows of those clusters and of the clusters
    they probe (`x_u`, global ids `rows_u` ascending, their cluster `assign_u`).
    sim: a name in PREFILTERED or a fitted similarity whose `name` is one."""
    from culturesim_ray.ops.prefilter import Clusters, topk_for_clusters

    sim_name = getattr(sim, "name", sim)
    local = Clusters(np.zeros((nlist, 1), np.float32), assign_u, probes)
    rows, v, idx, _ = topk_for_clusters(_tensor(x_u), local, ids, k, sim, block_rows)
    glob = torch.from_numpy(rows_u)
    gi = torch.where(idx >= 0, glob[idx.clamp_min(0)], idx)
    table = pairs_table(head, cultures, glob[rows].numpy(), v, gi, sim_name)
    io.write_table(table, path, s3)
    return table.num_rows


def _prefiltered_head(out: str, head: str, cultures: list[str], x: torch.Tensor, k: int,
                      sim: Any, cfg: AllPairsConfig, counts: dict[str, Any],
                      log: Any) -> dict[str, Any]:
    """Cluster pre-filtered top-k for one head: FAISS k-means on the driver (saved, so a
    rerun uses the same clusters), then groups of clusters as Ray tasks. sim: a name
    in PREFILTERED, or a fitted `ModalityCosine` or `DimensionMetric` (clustered as
    cosine: the candidates are the cosine's neighbourhoods, each scored by the
    similarity itself; the recall against its exact top-k is measured as for any)."""
    import ray

    from culturesim_ray.ops.prefilter import (
        Clusters,
        build_clusters,
        cluster_members,
        sample_recall,
        sample_rows,
    )

    sim_name = getattr(sim, "name", sim)
    if sim_name not in PREFILTERED:
        raise ValueError(f"pre-filtering supports cosine and dot, not {sim_name!r}: "
                         f"set prefilter: off (or auto: exact search for other similarities)")
    n = len(cultures)
    cpath = io.join(AllPairsLayout(out).blocks(_safe(head)), "clusters.npz")
    fs, cp = io.filesystem_for(cpath, cfg.s3)
    if fs.exists(cp):
        with fs.open(cp, "rb") as fh, np.load(fh) as z:
            cl = Clusters(z["centroids"], z["assign"], z["probes"])
    else:
        cl = build_clusters(x, cfg.nlist or None, cfg.nprobe, spherical=sim_name != "dot")
        with io.atomic_open(cpath, cfg.s3) as fh:  # whole or absent: a rerun reloads it
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
    xn = x.numpy()
    cs_ref, probes = ray.put(cultures), np.asarray(cl.probes, np.int64)
    pending, skipped, window = [], 0, 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    todo = []
    for g in groups:
        path = io.join(AllPairsLayout(out).blocks(_safe(head)),
                       f"clusters-{g[0]:06d}-{g[-1]:06d}.parquet")
        if io.exists(path, cfg.s3):
            skipped += 1
            continue
        todo.append((g, path))
    log(f"  {head}: pre-filtered, {len(cl.centroids)} clusters in {len(groups)} tasks "
        f"({skipped} already done)")
    for g, path in todo:  # a window of tasks in flight: each one's rows are put when sent
        if len(pending) >= window:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
        own = np.concatenate([members[c] for c in g])
        probed = np.unique(probes[g].reshape(-1))
        rows_u = np.sort(np.concatenate([members[int(c)] for c in probed]))
        x_u = np.ascontiguousarray(xn[rows_u])
        _note_input(counts, x_u.nbytes + rows_u.nbytes * 2,
                    (len(own) + len(rows_u)) * xn.shape[1] * xn.itemsize)
        pending.append(task.remote(x_u, rows_u, np.asarray(cl.assign[rows_u], np.int64), probes,
                                   len(cl.centroids), cs_ref, g, k, sim, head,
                                   cfg.block_rows, path, cfg.s3))
    ray.get(pending)
    # recall@k on a sample, from what was written: only the sampled rows' pairs are kept
    names = pa.array(cultures, pa.string())
    sampled = names.take(pa.array(sample_rows(n, cfg.recall_sample).numpy()))
    parts = [t.filter(pc.is_in(t.column("culture_a"), value_set=sampled))
             for t in _block_tables(out, {head: None}, cfg)]
    table = pa.concat_tables(parts) if parts else PAIRS_SCHEMA.empty_table()
    a = pc.index_in(table.column("culture_a"), value_set=names).to_numpy()
    b = pc.index_in(table.column("culture_b"), value_set=names).to_numpy()
    r = table.column("rank").to_numpy() - 1
    idx = torch.full((n, k), -1, dtype=torch.long)
    idx[torch.from_numpy(a.astype(np.int64)), torch.from_numpy(r.astype(np.int64))] = \
        torch.from_numpy(b.astype(np.int64))
    rec = sample_recall(x, idx, k, sim=sim, sample=cfg.recall_sample)
    probed = sum(len(members[c]) * sum(len(members[int(p)]) for p in cl.probes[c])
                 for c in range(len(members)))
    log(f"  {head}: {n * n / max(1, probed):.1f}x fewer pair evaluations, recall@{k} {rec:.3f}")
    return {"recall_at_k": rec, "k": k, "sample": min(cfg.recall_sample, n),
            "nlist": len(cl.centroids), "nprobe": int(cl.probes.shape[1]),
            "pair_evaluations": probed, "pair_reduction": n * n / max(1, probed)}
