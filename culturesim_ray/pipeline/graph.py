"""The item graph stage: FAISS kNN per modality built by Ray tasks over row blocks.

Per modality m (the kernels and the on-disk contract are in `graph.build`):

1. one task streams m's embeddings into ROOT/<m>/items.parquet and x.npy (raw
   vectors, rows by item_id, written a batch at a time into the memory-mapped
   file), builds the index from x.npy (flat, or IVF from `ivf_min` items; on the
   GPU when the cluster has one and faiss-gpu is installed) and writes it to
   ROOT/<m>/index.faiss: its memory is the index, not the embeddings as well;
2. one task per `block_rows` rows memory-maps x.npy and the index file (the tasks
   of a node share their pages), normalises its rows, searches k+1 and writes
   edges/knn-<row0>.parquet;
3. one task measures recall@k on `recall_sample` random rows against an exact
   search over every row (1.0 for a flat index, measured all the same).

Once every modality's items are written, one task links items sharing an
artifact_id (edges/artifact.parquet) and reads the optional relations file
(edges/relations.parquet; bad rows -> ROOT/relations_quarantine.jsonl), each
written into its destination modality. The driver passes paths and counts only;
it never holds a vector.

ROOT/manifest.json records per modality the index, its recall and its counts
(`seconds`: wall time from the job's start until the modality's last task ended;
`worker_peak_rss_mb`: the largest peak memory of a worker that ran its tasks);
ROOT/fingerprint.json the settings that shape the graph. A rerun with the same
settings after a finished run is skipped; other settings are refused
(SettingsMismatchError) unless overwrite=True, which rebuilds from scratch.
Outputs are local paths (x.npy is memory-mapped by its readers).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray import fingerprint, io
from culturesim_ray.graph import build
from culturesim_ray.graph.build import GraphConfig
from culturesim_ray.layout import EmbedLayout, GraphLayout
from culturesim_ray.schema import MODALITIES
from culturesim_ray.vectors import as_matrix

# --- task bodies (run on Ray workers) ---------------------------------------------------


def _peak_rss_mb() -> float:
    """This worker process's peak resident memory so far, MB (the manifest's
    `worker_peak_rss_mb`: how large a worker the stage needs)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_vectors(embed_dir: str, m: str, layout: GraphLayout) -> tuple[int, int]:
    """ROOT/<m>/items.parquet and x.npy from the embed run, rows by item_id, streamed:
    a first pass reads the item ids alone (their order), a second writes each batch's
    vectors into their rows of a memory-mapped x.npy, so this task holds one batch of
    vectors, never the modality's. Returns (n, d)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from culturesim_ray.runs import iter_embeddings

    ids = pa.concat_arrays([b.column("item_id") for b in iter_embeddings(
        embed_dir, m, ["item_id"])] or [pa.array([], pa.string())])
    order = pc.sort_indices(ids).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    x_path, tmp = layout.x(m), layout.x(m) + ".tmp"
    Path(x_path).parent.mkdir(parents=True, exist_ok=True)
    x = None
    meta, at = [], 0
    for batch in iter_embeddings(embed_dir, m, ["item_id", "culture", "themes",
                                                "artifact_id", "vector"]):
        n_b = batch.num_rows
        if not n_b:  # a file whose rows all failed
            continue
        if not pc.all(pc.equal(batch.column("item_id"), ids[at:at + n_b])).as_py():
            raise RuntimeError(f"{embed_dir}: the {m} embeddings changed while the graph "
                               f"stage read them")
        v = as_matrix(batch.column("vector"), f"{embed_dir} ({m} embeddings)", at)
        if x is None:
            x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                          shape=(len(ids), v.shape[1]))
        x[rank[at:at + n_b]] = v
        meta.append(pa.Table.from_batches([batch]).drop_columns(["vector"]))
        at += n_b
    if x is None:  # no rows
        x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(0, 0))
    shape = x.shape
    x.flush()
    del x
    os.replace(tmp, x_path)
    items = pa.concat_tables(meta).take(pa.array(order)) if meta else None
    if items is None:
        items = pa.table({"item_id": pa.array([], pa.string()),
                          "culture": pa.array([], pa.string())})
    io.write_table(build.items_table(items), layout.items(m))
    return shape


def _prepare(embed_dir: str, root: str, m: str, cfg: GraphConfig) -> dict[str, Any]:
    """Items, x.npy and the index file of modality m (`_write_vectors`; the index
    built from the memory-mapped rows, normalised a chunk at a time); its facts."""
    t0 = time.time()
    layout = GraphLayout(root)
    n, d = _write_vectors(embed_dir, m, layout)
    kind, nlist = build.choose_index(n, cfg.ivf_min, cfg.nlist)
    facts: dict[str, Any] = {"items": int(n), "dim": int(d), "index": kind, "nlist": nlist,
                             "nprobe": None, "gpu": False}
    if n > 0:
        x = np.load(layout.x(m), mmap_mode="r")
        index = build.build_index(x, kind, nlist, cfg.nprobe, cfg.train_sample, cfg.seed,
                                  normalise=True)
        if kind == "ivf":
            facts["nprobe"] = int(index.nprobe)
        facts["gpu"] = build.on_gpu(index)
        build.save_index(index, layout.index(m))
        del index, x
    return {**facts, "build_seconds": round(time.time() - t0, 3),
            "peak_rss_mb": _peak_rss_mb()}


def _search(root: str, m: str, row0: int, row1: int, k: int) -> dict[str, float]:
    """kNN edges of rows row0:row1 -> edges/knn-<row0>.parquet; the edge count."""
    layout = GraphLayout(root)
    x = np.load(layout.x(m), mmap_mode="r")
    v = build.normalize_rows(x[row0:row1])
    index = build.load_index(layout.index(m))
    src, dst, w = build.search_block(index, v, row0, k)
    table = build.edges_table(src, dst, w, build.KNN_RELATION, m)
    io.write_table(table, io.join(layout.edges(m), f"knn-{row0}.parquet"))  # tmp + rename
    return {"edges": int(len(src)), "peak_rss_mb": _peak_rss_mb()}


def _recall(root: str, m: str, k: int, cfg: GraphConfig) -> dict[str, Any]:
    """recall@k of the index on a random sample of rows against an exact search."""
    layout = GraphLayout(root)
    x = np.load(layout.x(m), mmap_mode="r")
    rows = build.sample_rows(len(x), cfg.recall_sample, cfg.seed)
    index = build.load_index(layout.index(m))
    recall = build.sample_recall(index, x, rows, k, cfg.block_rows)
    return {"recall_at_k": round(recall, 6), "recall_sample": int(len(rows)),
            "peak_rss_mb": _peak_rss_mb()}


def _other_edges(root: str, modalities: list[str], relations: str | None,
                 *_built: Any) -> dict[str, Any]:
    """Artifact and relations-file edges into each modality; the quarantine file.
    `_built`: the modalities' facts, only so that this task waits for their items."""
    from culturesim_ray.graph.hetero import Relations, artifact_links, read_relations

    layout = GraphLayout(root)
    tables = {m: io.read_table(layout.items(m), columns=["item_id", "artifact_id"])
              for m in modalities}
    rel = artifact_links(tables, Relations())
    if relations:
        read_relations(relations, tables, rel)  # looks up the ids the file names
    counts = {m: 0 for m in modalities}
    for m, kinds in build.relation_edges(rel).items():
        for kind, table in kinds.items():
            io.write_table(table, io.join(layout.edges(m), f"{kind}.parquet"))
            counts[m] += table.num_rows
    if rel.quarantined:
        path = Path(layout.relations_quarantine)
        path.write_text("".join(json.dumps(q, default=str) + "\n" for q in rel.quarantined))
    return {"other_edges": counts, "quarantined": len(rel.quarantined)}


# --- the driver -----------------------------------------------------------------------------


def _modalities(embed_dir: str) -> list[str]:
    """The modalities with embedding files (a listing; nothing is read)."""
    found = []
    for m in MODALITIES:
        fs, p = io.filesystem_for(EmbedLayout(embed_dir).embeddings(m))
        if fs.exists(p) and any(f.endswith(".parquet") for f in fs.find(p)):
            found.append(m)
    return found


def _settings(embed_dir: str, cfg: GraphConfig, relations: str | None) -> dict[str, Any]:
    """Every setting that shapes the graph (the fingerprint)."""
    embed_fp = EmbedLayout(embed_dir).fingerprint
    rel_digest = fingerprint.files_digest(relations) \
        if relations and os.path.isfile(relations) else None
    return {"embed": embed_dir, "embed_fingerprint":
            fingerprint.digest(io.read_json(embed_fp)) if io.exists(embed_fp) else None,
            "k": cfg.k, "ivf_min": cfg.ivf_min, "nlist": cfg.nlist, "nprobe": cfg.nprobe,
            "train_sample": cfg.train_sample, "relations": relations,
            "relations_digest": rel_digest, "seed": cfg.seed}


def _clear(layout: GraphLayout) -> None:
    """Remove what an earlier run of this stage wrote under layout.root (nothing else)."""
    import shutil

    for m in MODALITIES:
        shutil.rmtree(layout.modality(m), ignore_errors=True)
    for f in (layout.manifest, layout.fingerprint, layout.relations_quarantine):
        Path(f).unlink(missing_ok=True)


def _absolute(path: str) -> str:
    return path if io.is_s3(path) else str(Path(path).absolute())


def run_graph(embed_dir: str, out: str, cfg: GraphConfig | None = None,
              relations: str | None = None, log: Any = print,
              overwrite: bool = False) -> dict[str, Any]:
    """Build every modality's item graph from the embed run `embed_dir` into `out`
    (local); returns the manifest. See the module docstring."""
    import ray

    from culturesim_ray.graph.hetero import RelationsError
    from culturesim_ray.pipeline.ray_env import _user_cause, init_ray

    cfg = cfg or GraphConfig()
    if io.is_s3(out):
        raise ValueError(f"{out}: the graph stage writes local files (x.npy is memory-mapped)")
    started = time.time()
    embed_dir, out = _absolute(embed_dir), _absolute(out)
    relations = _absolute(relations) if relations else None
    if relations and not io.exists(relations):  # before anything is written or recorded
        raise RelationsError(f"relations file {relations}: not found")
    layout = GraphLayout(out)
    modalities = _modalities(embed_dir)
    if not modalities:
        where = EmbedLayout(embed_dir).embeddings()
        raise ValueError(f"{embed_dir}: no embeddings (expected {where}/<modality>/*.parquet)")
    settings = _settings(embed_dir, cfg, relations)
    recorded = io.read_json(layout.fingerprint) if io.exists(layout.fingerprint) else None
    if fingerprint.check(recorded, settings, out, overwrite=overwrite):
        log(f"graph: overwrite: replacing a graph built with other settings "
            f"({fingerprint.describe(recorded, settings)})")
    elif recorded is not None and io.exists(layout.manifest) and not overwrite:
        log(f"graph: {out} already holds a finished graph with these settings; skipped")
        return io.read_json(layout.manifest)
    _clear(layout)
    Path(out).mkdir(parents=True, exist_ok=True)
    io.write_json(settings, layout.fingerprint)

    init_ray()
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and _faiss_has_gpu() else 0
    opts = {"num_cpus": cfg.num_cpus_per_task, "num_gpus": gpus, "max_retries": 3}
    prepare = ray.remote(**opts)(_prepare)
    search = ray.remote(**opts)(_search)
    recall = ray.remote(**opts)(_recall)
    other = ray.remote(num_cpus=cfg.num_cpus_per_task, max_retries=3)(_other_edges)

    stats: dict[str, dict[str, Any]] = {}
    pending: dict[Any, tuple[str, str]] = {}
    facts = {}
    for m in modalities:
        facts[m] = prepare.remote(embed_dir, out, m, cfg)
        pending[facts[m]] = (m, "built")
        stats[m] = {"worker_peak_rss_mb": 0.0}
    pending[other.remote(out, modalities, relations, *facts.values())] = ("", "other")
    log(f"graph: {len(modalities)} modalities {modalities} from {embed_dir} -> {out}")
    quarantined = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            m, kind = pending.pop(ready[0])
            value = ray.get(ready[0])
            if m:
                stats[m]["worker_peak_rss_mb"] = max(stats[m]["worker_peak_rss_mb"],
                                                     value.pop("peak_rss_mb"))
            if kind == "built":
                stats[m].update(value)
                pending.update(_submit(stats[m], m, out, cfg, search, recall, log))
            elif kind == "block":
                stats[m]["knn_edges"] += value["edges"]
            elif kind == "recall":
                stats[m].update(value)
            else:
                quarantined = value["quarantined"]
                for dst, n in value["other_edges"].items():
                    stats[dst]["other_edges"] = n
            if m:
                stats[m]["seconds"] = round(time.time() - started, 3)
    except Exception as exc:
        cause = _user_cause(exc, (RelationsError,))
        if cause is None:
            raise
        raise RelationsError(*cause.args) from exc
    if quarantined:
        log(f"graph: {quarantined} relations rows quarantined -> {layout.relations_quarantine}")
    per_modality = {m: {key: s.get(key) for key in _FIELDS} for m, s in stats.items()}
    counts = {"items": sum(s["items"] for s in per_modality.values()),
              "knn_edges": sum(s["knn_edges"] for s in per_modality.values()),
              "other_edges": sum(s["other_edges"] for s in per_modality.values()),
              "relations_quarantined": quarantined}
    manifest = io.manifest("graph", asdict(cfg), counts, started, input=embed_dir,
                           relations=relations, modalities=per_modality, fingerprint=settings)
    io.write_json(manifest, layout.manifest)
    log(f"graph: {counts['items']} items, {counts['knn_edges']} kNN and "
        f"{counts['other_edges']} other edges in {manifest['seconds']} s")
    return manifest


_FIELDS = ("items", "dim", "index", "nlist", "nprobe", "k", "knn_edges", "other_edges",
           "recall_at_k", "recall_sample", "gpu", "seconds", "worker_peak_rss_mb")


def _faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources")


def _submit(s: dict[str, Any], m: str, out: str, cfg: GraphConfig, search: Any, recall: Any,
            log: Any) -> dict[Any, tuple[str, str]]:
    """A built modality's block and recall tasks (each memory-maps its index file)."""
    n = s["items"]
    k = max(0, min(cfg.k, n - 1))
    s.update(k=k, knn_edges=0, other_edges=s.get("other_edges", 0), recall_at_k=None,
             recall_sample=0)
    if k == 0:
        log(f"graph: {m}: {n} item(s), no kNN edges")
        return {}
    tasks = {search.remote(out, m, r0, min(r0 + cfg.block_rows, n), k): (m, "block")
             for r0 in range(0, n, cfg.block_rows)}
    tasks[recall.remote(out, m, k, cfg)] = (m, "recall")
    nlist = f" (nlist {s['nlist']}, nprobe {s['nprobe']})" if s["nlist"] else ""
    log(f"graph: {m}: {n} items, {s['dim']}-d, {s['index']} index{nlist}, "
        f"{len(tasks) - 1} blocks")
    return tasks
