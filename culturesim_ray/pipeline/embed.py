"""The Ray Data embedding job (SPEC J1): corpus -> validate -> encode -> Parquet,
streamed: the driver lists files and counts, it never holds rows.

    files --read_validated (per file, in chunks; per-row rules)--+
    written ids (OUT/embeddings) ----------------------------+---+--> hash shuffle on item_id
      --> resolve_partition (duplicates, resume) --> materialised in the object store
      --> bad rows: OUT/quarantine/ (written by workers)
      --> per modality: todo rows --fetch_uris (CPU tasks)--> encoder actor pool --> Parquet

Layout of an output directory (`layout.EmbedLayout`)::

    OUT/embeddings/<modality>/*.parquet   item_id, culture, modality, encoder,
                                          vector (fixed_size_list<float32>), themes,
                                          error, source_row, row_json
    OUT/quarantine/*.parquet              every bad row as given + field + reason
    OUT/models/tfidf.npz, models/lstm/    fitted encoder state (tfidf / lstm runs)
    OUT/models/lstm-sample/*.parquet      the melodies the LSTM was trained on (tokens)
    OUT/fingerprint.json                  the settings that shaped the vectors
    OUT/manifest.json                     config, versions, counts, time

A row whose file cannot be read or decoded is written with a null vector and its
`error` (and quarantined); `read_embeddings` leaves such rows out. A rerun into
the same OUT skips every item already written for its modality (complete
Parquet files only; a file cut short by a crash is removed and its rows are
embedded again), so a crashed run resumes; a rerun with settings that change
the vectors (encoder, its model files, max_length, ...) is refused naming them
unless `overwrite`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray import ingest, io, progress, tables
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import build_encoder, registry
from culturesim_ray.encoders.coverage import CoverageCount
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.pipeline.embed_choice import (
    choice_line,
    coverage_notes,
    resolve_text_encoder,
)
from culturesim_ray.pipeline.embed_report import EmbedReport
from culturesim_ray.pipeline.embed_stage import (
    _complete_files,
    _map_each,
    _map_refs,
    _parquet_files,
    _strict_checks,
    _write_quarantine_part,
    stage_counted,
)
from culturesim_ray.pipeline.embed_state import (
    _check_fingerprint,
    _fit_lstm,
    _fit_tfidf,
    _gpus_per_actor,
    _sequence_error,
)
from culturesim_ray.runs import read_embeddings, read_quarantine  # noqa: F401  (re-exported)
from culturesim_ray.schema import MODALITIES, QUARANTINE_SCHEMA
from culturesim_ray.uris import UriRoots

ENCODED_COLUMNS = ("item_id", "culture", "modality", "encoder", "vector", "themes", "error",
                   "source_row", "row_json")


class EncoderUDF:
    """Ray Data callable class: one encoder per actor, loaded once in `__init__`."""

    def __init__(self, encoder: str, use_gpu: bool, encoder_kwargs: dict[str, Any],
                 quarantine: str | None = None, s3: dict[str, Any] | None = None) -> None:
        from culturesim_ray.config import S3Config
        from culturesim_ray.encoders import pick_device

        self.device = pick_device(use_gpu)
        self.encoder = build_encoder(encoder, device=self.device, **encoder_kwargs)
        self.quarantine, self.s3 = quarantine, S3Config(**(s3 or {}))

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = encode_table(self.encoder, batch)
        if self.quarantine and out.column("error").null_count < out.num_rows:
            # the worker quarantines the rows it failed on (a retried batch writes
            # the same records again: read_quarantine keeps one of each)
            import uuid

            io.write_table(ingest.quarantine_of_encoded(out),
                           io.join(self.quarantine, f"encode-{uuid.uuid4().hex}.parquet"),
                           self.s3)
        return out


def encode_table(encoder: Any, batch: pa.Table) -> pa.Table:
    """Encode one batch of staged corpus rows: the pure core of the UDF. Image and
    sequence rows come with their file's bytes (`data`) and any `error` of the
    fetch stage; a row with an error is not encoded."""
    n, dim = batch.num_rows, encoder.dim
    pre = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * n
    if encoder.modality == "text":
        result = encoder.encode(batch.column("text").to_pylist())
    else:
        result = encoder.encode_bytes(batch.column("data").to_pylist(),
                                      names=batch.column("uri").to_pylist())
    errors = [p or e for p, e in zip(pre, result.errors, strict=True)]
    failed = np.array([e is not None for e in errors], dtype=bool)
    flat = pa.array(np.nan_to_num(result.vectors, nan=0.0).reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(failed))
    row_json = [None] * n
    if failed.any():
        rows = batch.take(np.flatnonzero(failed)).to_pylist()
        for i, row in zip(np.flatnonzero(failed), rows, strict=True):
            row_json[i] = ingest.clean_record(row, errors[i])["row_json"]
    return pa.table({
        "item_id": batch.column("item_id"),
        "culture": batch.column("culture"),
        "modality": batch.column("modality"),
        "encoder": pa.array([encoder.name] * n, pa.string()),
        "vector": vectors,
        "themes": batch.column("themes"),
        "error": pa.array(errors, pa.string()),
        "source_row": batch.column("_source_row"),
        "row_json": pa.array(row_json, pa.string()),
    })


def scan_written(out: str, modality: str, cfg: EmbedConfig) -> pa.Table:
    """item_id and error of every row already written for `modality` (in memory:
    for tests and tools; the job joins the written ids in a shuffle instead)."""
    fs, _ = io.filesystem_for(out, cfg.s3)
    parts = []
    for f in _complete_files(out, modality, cfg):
        with fs.open(f, "rb") as fh:
            parts.append(pq.read_table(fh, columns=["item_id", "error"]))
    if not parts:
        return pa.table({"item_id": pa.array([], pa.string()), "error": pa.array([], pa.string())})
    return pa.concat_tables(parts)


def _encoder_for(modality: str, cfg: EmbedConfig) -> str:
    return cfg.encoder(modality)


def pool_sizes(todo_n: int, cfg: EmbedConfig) -> dict[str, int]:
    """The encoder pool's min, max and initial size. It starts with as many actors as
    the rows have batches, up to `num_actors`: Ray Data grows a pool from its initial
    size only while the pool fits the share of the cluster it reserves for the
    operator, which on a small machine is one actor, so starting at `min_actors`
    left the other actors' CPUs idle for the whole job."""
    low = min(cfg.min_actors, cfg.num_actors)
    batches = max(1, math.ceil(todo_n / cfg.batch_size))
    return {"min_size": low, "max_size": cfg.num_actors,
            "initial_size": max(low, min(cfg.num_actors, batches))}


def _auto_cpus_per_actor(cfg: EmbedConfig) -> float:
    """Leave one CPU for read/write tasks: a pool holding every CPU hangs Ray Data."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    share = (total - 1.0) / cfg.num_actors if total > 1.0 else total / (cfg.num_actors + 1)
    return max(0.1, min(cfg.num_cpus_per_actor, round(share, 2)))



# ---------------------------------------------------------------- the job


def run_embed(corpus: str, out: str, cfg: EmbedConfig | None = None,
              log: Any = print, address: str | None = None,
              overwrite: bool = False) -> EmbedReport:
    """Embed a corpus with Ray Data (streamed; see the module docstring).

    Ray is joined (`address`, RAY_ADDRESS) or started locally unless it is
    already initialised. A corpus file that cannot be parsed fails the job
    naming the file and line before any vector is written.
    """
    from culturesim_ray.pipeline.ray_env import init_ray, user_error

    cfg = cfg or EmbedConfig()
    started = time.time()
    layout = EmbedLayout(out)
    files = tables.list_corpus_files(corpus, cfg.s3)
    roots = UriRoots.of(corpus, cfg.uri_roots)
    init_ray(address)
    # text encoder `auto`: the run's recorded one, else chosen on a sample of the texts
    # once they are staged (a run with no fingerprint has nothing written to clear)
    cfg, choice, sampled = resolve_text_encoder(cfg, layout, None)
    settings = (_check_fingerprint(layout, cfg, overwrite, log)
                if cfg.text_encoder != registry.AUTO else None)
    staged, counts = stage_counted(files, roots, layout, cfg)
    rows_in = sum(counts.values())
    log(f"read {rows_in} rows from {corpus} ({len(files)} file(s))")
    text_todo = None  # the text rows to embed, selected once for the sample and the job
    if settings is None:
        text_todo = (_map_refs(ingest.select, staged, "todo", "text")
                     if counts.get(("todo", "text", None), 0) else [])
        cfg, choice, sampled = resolve_text_encoder(cfg, layout, text_todo)
        settings = _check_fingerprint(layout, cfg, overwrite, log)
    if choice is not None:
        log(f"text encoder {choice_line(choice)}")
    if cfg.strict:
        _strict_checks(staged, cfg)
    io.write_json(settings, layout.fingerprint, cfg.s3)
    fs, qp = io.filesystem_for(layout.quarantine, cfg.s3)
    for stale in (qp, io.filesystem_for(layout.legacy_quarantine, cfg.s3)[1]):
        if fs.exists(stale):
            fs.rm(stale, recursive=True)
    if any(status == "bad" for status, _, _ in counts):
        import ray

        task = ray.remote(num_cpus=0.5)(_write_quarantine_part)
        ray.get([task.remote(ref, io.join(layout.quarantine, f"validate-{i:05d}.parquet"), cfg.s3)
                 for i, ref in enumerate(staged)])

    reasons: Counter[str] = Counter()
    embedded: Counter[str] = Counter()
    for (status, modality, field), n in counts.items():
        if status == "bad":
            reasons[field] += n
        elif status == "done":
            embedded[modality] += n
    skipped = sum(embedded.values())
    notes: list[str] = []
    coverage: CoverageCount | None = None
    cpus = _auto_cpus_per_actor(cfg)
    gpus = _gpus_per_actor(cfg)
    for modality in MODALITIES:
        todo_n = counts.get(("todo", modality, None), 0)
        if todo_n == 0:
            if embedded[modality]:
                log(f"{modality}: all {embedded[modality]} rows already embedded, skipping")
            continue
        todo = (text_todo if modality == "text" and text_todo
                else _map_refs(ingest.select, staged, "todo", modality))
        if modality == "text":
            coverage, text_notes = coverage_notes(sampled, todo, cfg)
            for note in text_notes:
                notes.append(note)
                log(f"note: {note}")
        with user_error():
            new_ok, new_bad = _embed_modality(todo, todo_n, modality, staged, layout, cfg,
                                              cpus, gpus, log)
        embedded[modality] += new_ok
        reasons.update(new_bad)
        progress.advance(todo_n, total=sum(n for (st, _, _), n in counts.items() if st == "todo"))

    quarantined = sum(reasons.values())
    report = EmbedReport(rows_in=rows_in, embedded=sum(embedded.values()),
                         quarantined=quarantined, skipped_done=skipped,
                         reasons=dict(sorted(reasons.items())), out=out,
                         seconds=round(time.time() - started, 3), notes=notes)
    per_modality = {m: n for m, n in embedded.items() if n}
    manifest_counts = {"rows_in": rows_in, "embedded": report.embedded,
                       "quarantined": quarantined, "skipped_already_done": skipped,
                       "per_modality": per_modality, "quarantine_reasons": report.reasons,
                       "balanced": report.balanced}
    encoders = {m: {"name": _encoder_for(m, cfg), "dim": _written_dim(out, m, cfg)}
                for m in per_modality}
    io.write_json(io.manifest("embed", cfg.model_dump(mode="json"), manifest_counts, started,
                              corpus=corpus, encoders=encoders, fingerprint=settings,
                              files=len(files), notes=notes,
                              **({"text_coverage": coverage.record()} if coverage else {}),
                              **({"text_encoder_choice": choice} if choice else {})),
                  layout.manifest, cfg.s3)
    log(report.counts_line())
    log(f"outputs in {out} (embeddings/, quarantine/, manifest.json)")
    return report


def _embed_modality(todo: Any, todo_n: int, modality: str, staged: Any, layout: EmbedLayout,
                    cfg: EmbedConfig, cpus: float, gpus: float,
                    log: Any) -> tuple[int, Counter[str]]:
    """Encode the todo rows of one modality; (rows embedded, quarantine reasons)."""
    from ray.data import ActorPoolStrategy

    encoder = _encoder_for(modality, cfg)
    spec = registry.get(encoder)
    s3 = cfg.s3
    kwargs: dict[str, Any] = registry.encoder_kwargs(encoder, cfg)
    if modality != "text":  # image and sequence items are files behind uris
        kwargs["storage_options"] = s3.storage_options()
    if spec.fitted and modality == "text":  # a text state fitted on this corpus (TF-IDF)
        kwargs.update(_fit_tfidf(layout, staged, cfg, log))
    elif spec.fitted and modality == "sequence":  # the melody model, trained on its tunes
        model_path = cfg.sequence_model
        if model_path is None:
            model_path = _fit_lstm(layout, todo, cfg, log)
        if model_path is None:
            def unusable(t: pa.Table, path: str) -> list[str]:
                reasons = [_sequence_error(u, cfg) for u in t.column("uri").to_pylist()]
                rows = [ingest.clean_record(r, e) for r, e in zip(t.to_pylist(), reasons,
                                                                 strict=True)]
                if rows:
                    io.write_table(pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA), path,
                                   cfg.s3)
                return [r["field"] for r in rows]

            fields = _map_each(unusable, todo, [io.join(layout.quarantine, f"sequence-{i:05d}"
                                                        ".parquet") for i in range(len(todo))])
            return 0, Counter(f for part in fields for f in part)
        kwargs[spec.state or "model_path"] = model_path
    blocks = cfg.blocks or 4 * cfg.num_actors
    log(f"{modality}: embedding {todo_n} rows with {encoder} "
        f"({cfg.min_actors}-{cfg.num_actors} actors x {cpus} CPU, {gpus} GPU)")
    import ray

    ds = ray.data.from_arrow_refs(todo).repartition(max(blocks, math.ceil(todo_n / 20_000)))
    if modality != "text":  # file bytes fetched by CPU tasks: an encoder never waits on I/O
        opts, check = s3.storage_options(), cfg.check_uris

        def fetch(t: pa.Table) -> pa.Table:
            from culturesim_ray.encoders.base import read_uri

            return ingest.fetch_uris(t, lambda u: read_uri(u, opts), check)

        # other resources than the pool's, so Ray Data keeps it a task stage of its own
        # instead of fusing it into the encoder actors
        fetch_cpus = 0.25 if cpus != 0.25 else 0.2
        ds = ds.map_batches(fetch, batch_size=cfg.batch_size, batch_format="pyarrow",
                            num_cpus=fetch_cpus)
    ds = ds.map_batches(
        EncoderUDF,
        fn_constructor_kwargs={"encoder": encoder, "use_gpu": gpus > 0, "encoder_kwargs": kwargs,
                               "quarantine": layout.quarantine,
                               "s3": cfg.s3.model_dump(mode="json")},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(**pool_sizes(todo_n, cfg)),
        num_cpus=cpus,
        num_gpus=gpus or None,
    )
    from culturesim_ray.pipeline.atomic_sink import AtomicParquetSink

    fs, p = io.filesystem_for(layout.embeddings(modality), cfg.s3)
    before = set(_parquet_files(fs, p))
    # each file written whole or not at all (temp + rename): a killed job leaves no torn file
    ds.write_datasink(AtomicParquetSink(layout.embeddings(modality), cfg.s3, cfg.rows_per_file))
    rows, reasons = 0, Counter()
    for f in _parquet_files(fs, p):
        if f in before:
            continue
        with fs.open(f, "rb") as fh:  # counts from the footer; the errors of failed rows only
            pf = pq.ParquetFile(fh)
            rows += pf.metadata.num_rows
            err = pf.schema_arrow.get_field_index("error")
            stats = [pf.metadata.row_group(g).column(err).statistics
                     for g in range(pf.metadata.num_row_groups)]
            nulls = (sum(st.null_count for st in stats)
                     if all(st is not None and st.has_null_count for st in stats) else -1)
            if nulls < pf.metadata.num_rows:
                errors = pf.read(columns=["error"]).column("error").drop_null().to_pylist()
                reasons.update(e.partition(": ")[0] or "row" for e in errors)
    return rows - sum(reasons.values()), reasons


def _written_dim(out: str, modality: str, cfg: EmbedConfig) -> int | None:
    """The vector size as written (so TF-IDF's and the LSTM's actual sizes are reported)."""
    fs, p = io.filesystem_for(EmbedLayout(out).embeddings(modality), cfg.s3)
    for f in _parquet_files(fs, p):
        with fs.open(f, "rb") as fh:
            return int(pq.read_schema(fh).field("vector").type.list_size)
    return None
