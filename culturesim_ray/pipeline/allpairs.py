"""The all-pairs theme-similarity job (SPEC J2, J3): Ray tasks over row blocks.

Input (see `allpairs_input.resolve_input`): an embed run directory (item
vectors, pooled to cultures here), a run directory RUN (read as RUN/embed), an
item-level Parquet (culture, vector[, themes]), a culture-level Parquet
(culture, head, vector), or a train run / all-pairs output directory (read as
its culture_embeddings.parquet).

Output directory::

    OUT/culture_embeddings.parquet     culture, head, vector (what was compared;
                                       pooled means for set-level similarities)
    OUT/blocks/<head>/<block>.parquet  one finished Ray task each (rerun skips them)
    OUT/blocks/<head>/set-*.npy        set-level: the head's (C, C) matrix (rerun skips it)
    OUT/pairs.parquet                  theme, culture_a, culture_b, score, rank, similarity
    OUT/matrices/<head>.parquet        culture_a, culture_b, score (when N <= dense_limit)
    OUT/manifest.json                  config, counts, k, skipped heads, prefilter recall

Heads are "general", one per theme, and "combined" (S_total = sum_t alpha_t S_t
over the theme heads); a head with fewer than 2 cultures is skipped with a
warning. For cosine and dot the combined score is computed exactly at any N as
one more blockwise top-k over the concatenation of the sqrt(alpha_t)-weighted
theme vectors (a culture lacking theme t contributes 0 for it); for other
vector similarities, and for a train run whose theme heads are compared as their
culture maps (`allpairs_settings.head_similarities`), blockwise over the theme
heads, each by its own similarity (`ops.set_pairs.combined_block_topk`): the
combined pairs are then the alpha-weighted sum of the theme heads' scores at any
N, as the dense combined matrix is. Set-level similarities (`ops.setsim`)
compare each head's item sets: one Ray task per head computes its dense (C, C)
matrix; top-k pairs and the combined head are read off those matrices.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from culturesim_ray import fingerprint, io, progress
from culturesim_ray.allpairs_input import (
    ACCEPTED,
    COMBINED,
    Heads,
    Source,
    heads_from_table,
    item_vectors,
    plan_heads,
    resolve_input,
    resolve_k,
)
from culturesim_ray.config import AllPairsConfig, EmbedConfig
from culturesim_ray.layout import AllPairsLayout
from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.allpairs import check_vectors, dense_similarity
from culturesim_ray.ops.pooling import GENERAL
from culturesim_ray.ops.set_pairs import (
    aligned_heads,
    combine_matrices,
    combined_vectors,
    item_groups,
    matrix_table,
    pairs_table,
    topk_from_matrix,
)
from culturesim_ray.pipeline.allpairs_settings import (
    fingerprint_settings,
    head_similarities,
    metric_similarity,
    read_job_metric,
    recorded_settings,
    similarity_record,
)
from culturesim_ray.pipeline.allpairs_tasks import (
    PREFILTERED,
    _combined_blocks,
    _note_input,
    _prefiltered_head,
    _run_block,
    _safe,
    _write_pairs,
    unfinished_blocks,
)
from culturesim_ray.vectors import culture_table

# --- input ----------------------------------------------------------------------

def load_input(inp: str, cfg: AllPairsConfig, log: Any = print,
               src: Source | None = None) -> tuple[Source, pa.Table]:
    """The input's kind and its table of vectors (items or cultures), columns checked,
    read on the driver: for culture-level input (one row per culture and head) and
    the set-level similarities (which compare item sets); item vectors for a vector
    similarity are pooled by `pooled_heads` instead, without the driver."""
    if src is None:
        src = resolve_input(inp, cfg.s3)
        if src.note:
            log(src.note)
    if src.kind == "embed_run":
        from culturesim_ray.pipeline.embed import read_embeddings

        tables = read_embeddings(src.path, cfg.modality, cfg=EmbedConfig(s3=cfg.s3))
        if cfg.modality not in tables:
            raise ValueError(f"{src.path}: no {cfg.modality!r} embeddings in this run "
                             f"(choose another modality)")
        table = tables[cfg.modality]
    else:
        try:
            table = io.read_table(src.path, cfg.s3)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{inp}: not a Parquet file ({exc}); accepted: {ACCEPTED}") from exc
    names = set(table.column_names)
    if not {"culture", "vector"} <= names:
        raise ValueError(f"{inp}: expected columns culture and vector (and themes or head), "
                         f"got {sorted(names)}")
    if table.num_rows == 0:
        raise ValueError(f"{inp}: no vectors (empty input)")
    return src, table


def read_heads(inp: str, cfg: AllPairsConfig, log: Any = print, src: Source | None = None
               ) -> tuple[Source, Heads, dict[str, Any] | None, np.ndarray]:
    """(source, head -> (cultures, vectors), head -> item groups (set-level only), items)."""
    src, table = load_input(inp, cfg, log, src)
    return (src, *heads_from_table(table, src, cfg, inp))


# --- the Ray task -----------------------------------------------------------------


def _matrix_path(out: str, head: str) -> str:
    return io.join(AllPairsLayout(out).matrices, f"{_safe(head)}.parquet")


def _matrix_file(out: str, head: str, cfg: AllPairsConfig) -> str:
    """Where a head's set-level matrix goes; the name carries what shaped it, so a
    rerun with other options never reuses it."""
    shaped = {"similarity": cfg.similarity, "options": cfg.set_options,
              "min_items": cfg.min_items, "modality": cfg.modality}
    tag = hashlib.sha1(json.dumps(shaped, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return io.join(AllPairsLayout(out).blocks(_safe(head)), f"set-{cfg.similarity}-{tag}.npy")


def _run_set_head(inp: str, src: Source, cfg: AllPairsConfig, head: str,
                  cultures: list[str], path: str) -> int:
    """Ray task body: read the input's items (on this worker, never the driver), keep
    `head`'s item sets, save their (C, C) set similarity to `path`; returns the
    head's item count. `cultures` are the head's cultures as the pooling found them."""
    from culturesim_ray.ops.setsim import set_similarity

    _, table = load_input(inp, cfg, log=lambda _m: None, src=src)
    table = table.select([c for c in ("culture", "vector", "themes", "error")
                          if c in table.column_names])
    if "error" in table.column_names:  # an embed run's failed rows carry no vector
        table = table.filter(pa.compute.is_null(table.column("error")))
    themes = table.column("themes").to_pylist() if "themes" in table.column_names else None
    groups = item_groups(table.column("culture").to_pylist(), themes, cfg.min_items)
    cs, idx, labels = groups[head]
    if cs != list(cultures):
        raise RuntimeError(f"head {head!r}: the item sets hold {len(cs)} cultures, the pooling "
                           f"{len(cultures)}: the input changed while the job ran")
    x = item_vectors(table.take(pa.array(idx)), f"{inp} (head {head!r})")
    m = set_similarity(cfg.similarity, torch.from_numpy(x), torch.from_numpy(labels), len(cs),
                       block=cfg.set_block, **cfg.set_options)
    with io.atomic_open(path, cfg.s3) as fh:
        np.save(fh, m.numpy())
    return int(len(idx))


def _load_matrix(path: str, s3: Any) -> np.ndarray:
    fs, p = io.filesystem_for(path, s3)
    with fs.open(p, "rb") as fh:
        return np.load(fh)


# --- the job --------------------------------------------------------------------

def run_allpairs(inp: str, out: str, cfg: AllPairsConfig | None = None, log: Any = print,
                 address: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Compute every head's culture-by-culture top-k (and dense matrices for small N).

    A rerun into `out` resumes from its finished blocks when its settings are the
    same, and is refused naming the differing settings otherwise (unless
    `overwrite`: the old blocks and matrices are removed first)."""
    from culturesim_ray.pipeline.allpairs_pool import is_culture_level, pooled_heads
    from culturesim_ray.pipeline.ray_env import init_ray

    cfg = cfg or AllPairsConfig()
    started = time.time()
    src = resolve_input(inp, cfg.s3)
    if src.note:
        log(src.note)
    metric = read_job_metric(src, cfg)  # checked before anything is read
    init_ray(address)
    if is_culture_level(src, cfg):  # C rows per head: small, read here (an error if set-level)
        src, heads, _, _ = read_heads(inp, cfg, log, src)
    else:  # items: pooled by Ray Data; a set-level task reads its head's items itself
        heads = pooled_heads(src, cfg, inp)
    plan = plan_heads(heads, cfg, inp)
    for h, why in plan.skipped.items():
        log(f"all-pairs: warning: head {h!r} skipped: {why}")
    heads, alpha = plan.heads, plan.alpha
    sims = head_similarities(src, heads, cfg)  # head -> a similarity other than cfg's
    for h, sim in sims.items():
        log(f"all-pairs: {h}: {sim.name}: the model's raw part compared over the modalities "
            f"both cultures have (pairs sharing none: raw term {sim.fill:.3f})")
    metric_sims, metric = metric_similarity(metric, heads, cfg)
    if metric:
        sims.update(metric_sims)
        fit = metric["fitted_on"]
        log(f"all-pairs: {GENERAL}: the metric of {cfg.metric} (fitted on {fit['pairs']} gold "
            f"pairs over {len(fit['cultures'])} cultures; z(cosine) + {metric['b']:g} "
            f"z(metric) over this input's culture pairs)")
    jobs: dict[str, tuple[list[str], np.ndarray, str]] = {}
    for h, (cs, v) in heads.items():
        jobs[h] = (cs, v, sims[h].name if h in sims else cfg.similarity)
    # S_total as one concatenated vector per culture only where every theme head is
    # compared by that plain cosine/dot; else blockwise, each theme by its own similarity
    concat = cfg.similarity in ("cosine", "dot") and not any(t in sims for t in alpha)
    if alpha and concat:
        cs, v = combined_vectors(heads, alpha, cfg.similarity)
        jobs[COMBINED] = (cs, v, "dot")  # the weighted concatenation's dot product is S_total
    for h, (_, v, _) in jobs.items():
        check_vectors(torch.from_numpy(v), f"head {h!r}")
    sizes = [len(cs) for cs, _, _ in jobs.values()]
    if alpha and not cfg.set_level and not concat:
        sizes.append(len({c for t in alpha for c in heads[t][0]}))
    if cfg.set_level and alpha:
        sizes.append(len({c for t in alpha for c in heads[t][0]}))
    k, clamped = resolve_k(cfg.k, max(sizes), cfg.DEFAULT_K)
    if clamped:
        log(clamped)

    settings = fingerprint_settings(cfg, k, src, sims,
                                    combined_by_theme=bool(alpha) and not concat and bool(sims))
    if fingerprint.check(recorded_settings(out, cfg), settings, out, overwrite=overwrite):
        log(f"all-pairs: --overwrite: removing blocks written with other settings "
            f"({fingerprint.describe(recorded_settings(out, cfg), settings)})")
        fs = io.filesystem_for(out, cfg.s3)[0]
        for d in (AllPairsLayout(out).blocks(), AllPairsLayout(out).matrices):
            if fs.exists(io.filesystem_for(d, cfg.s3)[1]):
                fs.rm(io.filesystem_for(d, cfg.s3)[1], recursive=True)
    io.write_json(settings, AllPairsLayout(out).fingerprint, cfg.s3)

    # culture embeddings: what was compared (set-level: the pooled means, for maps and reports)
    io.write_table(culture_table(heads), AllPairsLayout(out).culture_embeddings, cfg.s3)

    counts: dict[str, Any] = {"heads": {}, "blocks_run": 0, "blocks_skipped": 0,
                              "max_task_input_bytes": 0, "max_block_plus_candidates_bytes": 0}
    recall: dict[str, Any] = {}
    if cfg.set_level:
        pairs, dense = _set_level(out, inp, src, heads, alpha, k, cfg, counts, log)
        io.write_table(pairs, AllPairsLayout(out).pairs, cfg.s3)
        n_pairs = pairs.num_rows
    else:
        combined = aligned_heads(heads, alpha) if alpha and not concat else None
        _vector_blocks(out, jobs, k, cfg, counts, recall, log, combined, alpha, sims)
        if combined is not None:
            jobs = {**jobs, COMBINED: None}
        n_pairs = _write_pairs(out, jobs, cfg)
        dense = _write_dense(out, heads, alpha, cfg, sims)
    counts["pairs"] = n_pairs
    counts["dense_matrices"] = dense
    manifest = io.manifest(
        "allpairs", cfg.model_dump(mode="json"), counts, started, input=inp,
        input_read=src.path, input_kind=src.kind, alpha=alpha, prefilter_recall=recall,
        similarity=similarity_record(cfg),
        head_similarity={h: m.manifest_record() for h, m in sims.items()},
        skipped_heads=plan.skipped, **({"metric": metric} if metric else {}),
        k={"given": cfg.k, "default": cfg.DEFAULT_K, "used": k, "clamped": bool(clamped)},
        fingerprint=settings)
    io.write_json(manifest, AllPairsLayout(out).manifest, cfg.s3)
    log(f"all-pairs: {n_pairs} pairs over heads {sorted(counts['heads'])} -> {out}")
    return manifest


def _vector_blocks(out: str, jobs: dict[str, Any], k: int, cfg: AllPairsConfig,
                   counts: dict[str, Any], recall: dict[str, Any], log: Any,
                   combined: Any = None, alpha: dict[str, float] | None = None,
                   sims: dict[str, Any] | None = None) -> None:
    """Every head's row blocks (or pre-filtered clusters) as Ray tasks writing pair
    files; `combined` (cultures, per-theme vectors, presence masks): S_total of a
    similarity other than cosine/dot, computed blockwise over the theme heads;
    `sims`: head -> a fitted similarity that replaces the head's named one."""
    import ray

    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_run_block)
    pending = []
    for h, (cs, v, sim_name) in jobs.items():
        n = len(cs)
        kh = min(k, n - 1)
        x = torch.from_numpy(v)
        sim: Any = (sims or {}).get(h, sim_name)
        if sim_name == "mahalanobis":
            sim = S.Mahalanobis().fit(x)
        if hasattr(sim, "prepare"):
            # the rows as the similarity reads them (a culture map's whitened slots),
            # made once here rather than in every block; the pre-filter clusters them
            x = sim.prepare(x)
            sim, v = sim.on_prepared(), x.numpy()
        servable = sim_name in PREFILTERED
        use_pf = cfg.prefilter == "on" or (cfg.prefilter == "auto" and n >= cfg.prefilter_min
                                            and servable)
        if cfg.prefilter == "auto" and n >= cfg.prefilter_min and not servable:
            log(f"all-pairs: {h}: the pre-filter serves cosine and dot only; exact blockwise "
                f"{sim_name} over {n} cultures")
        counts["heads"][h] = {"cultures": n, "dim": int(v.shape[1]), "k": kh, "prefilter": use_pf}
        if use_pf:
            recall[h] = _prefiltered_head(out, h, cs, x, kh, sim, cfg, counts, log)
            continue
        arr = np.ascontiguousarray(v, dtype=np.float32)
        x_ref, cs_ref = ray.put(arr), ray.put(cs)
        for i0, i1, path in unfinished_blocks(out, h, n, cfg, counts):
            # every row is a candidate of an exact block: the task reads the head's
            # matrix, shared in the object store, and nothing else of size N
            _note_input(counts, arr.nbytes, (i1 - i0) * arr.shape[1] * 4 + arr.nbytes)
            pending.append(task.remote(x_ref, cs_ref, i0, i1, kh, sim, sim_name, h,
                                       cfg.block_cols, path, cfg.s3))
    if combined is not None:
        pending += _combined_blocks(out, combined, alpha or {}, k, cfg, counts, sims)
    total = len(pending)
    if total:
        log(f"all-pairs: {total} blocks over {len(jobs)} heads ({counts['blocks_skipped']} "
            f"already done)")
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
        done += 1
        progress.advance(1, total=total)
        if done == total or done % max(1, total // 10) == 0:
            log(f"  blocks {done}/{total}")
    counts["blocks_run"] = total


def _set_level(out: str, inp: str, src: Source, heads: Heads, alpha: dict[str, float],
               k: int, cfg: AllPairsConfig, counts: dict[str, Any], log: Any
               ) -> tuple[pa.Table, list[str]]:
    """One Ray task per head reads its items and computes its set-level matrix;
    pairs and matrices from them (C x C per head: the driver holds no item)."""
    import ray

    task = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_run_set_head)
    pending, paths = {}, {}
    for h, (cs, _) in heads.items():
        paths[h] = _matrix_file(out, h, cfg)
        if io.exists(paths[h], cfg.s3):
            counts["blocks_skipped"] += 1
            continue
        pending[h] = task.remote(inp, src, cfg, h, cs, paths[h])
    log(f"all-pairs: {cfg.similarity} over {len(heads)} heads in {len(pending)} tasks "
        f"({counts['blocks_skipped']} already done)")
    items = dict(zip(pending, ray.get(list(pending.values())), strict=True))
    counts["blocks_run"] = len(pending)
    mats = {h: (heads[h][0], _load_matrix(p, cfg.s3)) for h, p in paths.items()}
    if alpha:
        mats[COMBINED] = combine_matrices({t: mats[t] for t in alpha}, alpha)
    tables, dense = [], []
    for h, (cs, m) in mats.items():
        n = len(cs)
        kh = min(k, n - 1)
        counts["heads"][h] = {"cultures": n, "k": kh, "prefilter": False,
                              "items": items.get(h)}
        v, idx = topk_from_matrix(torch.from_numpy(m), kh)
        tables.append(pairs_table(h, cs, np.arange(n), v, idx, cfg.similarity))
        if n <= cfg.dense_limit:
            io.write_table(matrix_table(cs, m), _matrix_path(out, h), cfg.s3)
            dense.append(h)
    return pa.concat_tables(tables), dense


def _write_dense(out: str, heads: Heads, alpha: dict[str, float],
                 cfg: AllPairsConfig, sims: dict[str, Any] | None = None) -> list[str]:
    """Dense matrices for heads with N <= dense_limit, plus the combined one."""
    mats: dict[str, tuple[list[str], np.ndarray]] = {}
    for h, (cs, v) in heads.items():
        if len(cs) > cfg.dense_limit:
            continue
        sim: Any = S.Mahalanobis().fit(torch.from_numpy(v)) if cfg.similarity == "mahalanobis" \
            else (sims or {}).get(h, cfg.similarity)
        mats[h] = (cs, dense_similarity(torch.from_numpy(v), sim=sim).numpy())
    if alpha and all(t in mats for t in alpha):
        mats[COMBINED] = combine_matrices({t: mats[t] for t in alpha}, alpha)
    for h, (cs, m) in mats.items():
        io.write_table(matrix_table(cs, m), _matrix_path(out, h), cfg.s3)
    return list(mats)


