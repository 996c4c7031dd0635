"""The Ray Data embedding job (SPEC J1): corpus -> validate -> encode -> Parquet.

Layout of an output directory::

    OUT/embeddings/<modality>/*.parquet   item_id, culture, modality, encoder,
                                          vector (fixed_size_list<float32>), themes, error
    OUT/quarantine.parquet                every bad row as given + field + reason
    OUT/models/tfidf.npz                  the fitted TF-IDF state (tfidf runs only)
    OUT/manifest.json                     config, versions, counts, time

A row whose file cannot be decoded by the encoder is written with a null
vector and its `error`; `read_embeddings` leaves such rows out and the
quarantine lists them. A rerun into the same OUT skips every item_id already
written (complete Parquet files only; a file cut short by a crash is removed
and its rows are embedded again), so a crashed run resumes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from culturesim_ray import io
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import build_encoder
from culturesim_ray.runs import read_embeddings  # noqa: F401  (re-exported)
from culturesim_ray.schema import (
    MODALITIES,
    QUARANTINE_SCHEMA,
    StrictModeError,
    UriRoots,
    validate_rows,
)

ENCODED_COLUMNS = ("item_id", "culture", "modality", "encoder", "vector", "themes", "error")


class EncoderUDF:
    """Ray Data callable class: one encoder per actor, loaded once in `__init__`."""

    def __init__(self, encoder: str, use_gpu: bool, encoder_kwargs: dict[str, Any]) -> None:
        from culturesim_ray.encoders import pick_device

        self.device = pick_device(use_gpu)
        self.encoder = build_encoder(encoder, device=self.device, **encoder_kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return encode_table(self.encoder, batch)


def encode_table(encoder: Any, batch: pa.Table) -> pa.Table:
    """Encode one batch of corpus rows: the pure core of the UDF (and of the plain loop)."""
    column = "text" if encoder.modality == "text" else "uri"
    inputs = batch.column(column).to_pylist()
    result = encoder.encode(inputs)
    n, dim = len(inputs), encoder.dim
    failed = np.array([e is not None for e in result.errors], dtype=bool)
    flat = pa.array(np.nan_to_num(result.vectors, nan=0.0).reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(failed))
    return pa.table({
        "item_id": batch.column("item_id"),
        "culture": batch.column("culture"),
        "modality": batch.column("modality"),
        "encoder": pa.array([encoder.name] * n, pa.string()),
        "vector": vectors,
        "themes": batch.column("themes"),
        "error": pa.array(result.errors, pa.string()),
    })


def _parts(out: str, modality: str, cfg: EmbedConfig) -> tuple[Any, str]:
    fs, p = io.filesystem_for(io.join(out, "embeddings", modality), cfg.s3)
    return fs, p


def scan_written(out: str, modality: str, cfg: EmbedConfig) -> pa.Table:
    """item_id and error of every row already written for `modality`.

    A Parquet file without a valid footer (a write cut short) is deleted so
    its rows are embedded again.
    """
    fs, p = _parts(out, modality, cfg)
    tables = []
    if fs.exists(p):
        for f in sorted(fs.find(p)):
            if not f.endswith(".parquet"):
                continue
            try:
                with fs.open(f, "rb") as fh:
                    tables.append(pq.read_table(fh, columns=["item_id", "error"]))
            except (pa.ArrowInvalid, OSError):
                fs.rm(f)
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


def _fit_tfidf(out: str, texts: list[str], cfg: EmbedConfig) -> dict[str, Any]:
    """Fit TF-IDF over the whole corpus once; a resumed run reuses the saved state."""
    from culturesim_ray.encoders.tfidf import TfidfEncoder

    path = io.join(out, "models", "tfidf.npz")
    fs, p = io.filesystem_for(path, cfg.s3)
    if fs.exists(p):
        with fs.open(p, "rb") as fh:
            enc = TfidfEncoder.load(fh)
    else:
        enc = TfidfEncoder.fit(texts, dim=cfg.tfidf_dim)
        fs.makedirs(os.path.dirname(p), exist_ok=True)
        with fs.open(p, "wb") as fh:
            np.savez_compressed(fh, **enc.state())
    return enc.state()


def _fit_lstm(out: str, uris: list[str], cfg: EmbedConfig, log: Any) -> str | None:
    """Train the melody LSTM on the corpus's own sequences once; a rerun reuses it.
    None when no melody could be parsed (each is then quarantined with its reason)."""
    import tempfile

    from culturesim_ray.encoders.music import Vocabulary
    from culturesim_ray.encoders.sequence import (
        LSTMConfig,
        read_tokens,
        save_model,
        train_melody_lstm,
    )

    path = io.join(out, "models", "lstm")
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
                                         use_gpu=cfg.num_gpus_per_actor > 0)
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


def run_embed(corpus: str, out: str, cfg: EmbedConfig | None = None,
              log: Any = print, address: str | None = None) -> EmbedReport:
    """Embed a corpus with Ray Data.

    The corpus is read and validated first (a malformed file fails before any
    cluster work); then Ray is joined (`address`, RAY_ADDRESS) or started locally
    unless it is already initialised.
    """
    import ray
    from ray.data import ActorPoolStrategy

    from culturesim_ray.pipeline.ray_env import init_ray

    cfg = cfg or EmbedConfig()
    started = time.time()
    rows = io.read_corpus_rows(corpus, cfg.s3)
    log(f"read {len(rows)} rows from {corpus}")
    checker = (lambda uris: io.existing_uris(uris, cfg.s3)) if cfg.check_uris else None
    try:
        checked = validate_rows(rows, uri_exists=checker, strict=cfg.strict,
                                uri_roots=UriRoots.of(corpus, cfg.uri_roots))
    except StrictModeError as exc:
        raise StrictModeError(f"{exc} (--strict: no output written)") from exc
    bad = [b.record() for b in checked.bad]
    good = checked.good_table()
    quarantine_path = io.join(out, "quarantine.parquet")
    io.write_table(pa.Table.from_pylist(bad, schema=QUARANTINE_SCHEMA), quarantine_path, cfg.s3)

    init_ray(address)
    cpus = _auto_cpus_per_actor(cfg)
    skipped = 0
    unreadable: list[dict[str, Any]] = []  # rows no encoder could even start on
    for modality in MODALITIES:
        table = good.filter(pc.equal(good.column("modality"), modality))
        if table.num_rows == 0:
            continue
        encoder = _encoder_for(modality, cfg)
        done = scan_written(out, modality, cfg)
        todo = table.filter(pc.invert(pc.is_in(table.column("item_id"), done.column("item_id"))))
        skipped += table.num_rows - todo.num_rows
        if todo.num_rows == 0:
            log(f"{modality}: all {table.num_rows} rows already embedded, skipping")
            continue
        kwargs: dict[str, Any] = {}
        if encoder == "tfidf":
            kwargs = _fit_tfidf(out, table.column("text").to_pylist(), cfg)
        elif encoder == "minilm":
            kwargs = {"max_length": cfg.max_length}
        elif encoder == "efficientnet":
            kwargs = {"storage_options": cfg.s3.storage_options()}
        elif encoder == "lstm":
            model_path = cfg.sequence_model or _fit_lstm(out, table.column("uri").to_pylist(),
                                                         cfg, log)
            if model_path is None:
                for r in todo.to_pylist():
                    unreadable.append({"item_id": r["item_id"],
                                       "reason": _sequence_error(r["uri"], cfg)})
                continue
            kwargs = {"storage_options": cfg.s3.storage_options(), "model_path": model_path}
        blocks = cfg.blocks or 4 * cfg.num_actors
        size = max(1, -(-todo.num_rows // blocks))
        shards = [todo.slice(i, size) for i in range(0, todo.num_rows, size)]
        log(f"{modality}: embedding {todo.num_rows} rows with {encoder} "
            f"({cfg.num_actors} actors x {cpus} CPU, {cfg.num_gpus_per_actor} GPU, "
            f"{len(shards)} blocks; {table.num_rows - todo.num_rows} already done)")
        ds = ray.data.from_arrow(shards).map_batches(
            EncoderUDF,
            fn_constructor_kwargs={"encoder": encoder, "use_gpu": cfg.num_gpus_per_actor > 0,
                                   "encoder_kwargs": kwargs},
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=cfg.num_actors),
            num_cpus=cpus,
            num_gpus=cfg.num_gpus_per_actor or None,
        )
        fs, p = _parts(out, modality, cfg)
        ds.write_parquet(p, filesystem=io.arrow_filesystem(fs),
                         max_rows_per_file=cfg.rows_per_file)

    report = finalize(corpus, out, cfg, rows_in=len(rows), bad=bad, unreadable=unreadable,
                      skipped=skipped, started=started, good_rows=checked.good)
    log(f"embedded {report.embedded}, quarantined {report.quarantined} of {report.rows_in} rows"
        + (f" ({', '.join(f'{k}: {v}' for k, v in report.reasons.items())})"
           if report.reasons else ""))
    log(f"outputs in {out} (embeddings/, quarantine.parquet, manifest.json)")
    return report


def finalize(corpus: str, out: str, cfg: EmbedConfig, rows_in: int, bad: list[dict[str, Any]],
             unreadable: list[dict[str, Any]], skipped: int, started: float,
             good_rows: list[dict[str, Any]]) -> EmbedReport:
    """Quarantine the rows the encoders could not read, count, and write the manifest."""
    by_id = {r["item_id"]: r for r in good_rows}
    quarantine = list(bad)
    embedded = 0
    per_modality: dict[str, int] = {}
    seen_ids: set[str] = set()
    for modality in MODALITIES:
        written = scan_written(out, modality, cfg)
        ids = written.column("item_id").to_pylist()
        errors = written.column("error").to_pylist()
        for item_id, err in zip(ids, errors, strict=True):
            if item_id not in by_id or item_id in seen_ids:
                continue  # from an earlier corpus version, or a retried block's twin
            seen_ids.add(item_id)
            if err is None:
                embedded += 1
                per_modality[modality] = per_modality.get(modality, 0) + 1
            else:
                quarantine.append(_quarantine_record(by_id[item_id], err))
    for u in unreadable:
        quarantine.append(_quarantine_record(by_id[u["item_id"]], u["reason"]))
    io.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA),
                   io.join(out, "quarantine.parquet"), cfg.s3)
    reasons: dict[str, int] = {}
    for q in quarantine:
        reasons[q["field"]] = reasons.get(q["field"], 0) + 1
    report = EmbedReport(rows_in=rows_in, embedded=embedded, quarantined=len(quarantine),
                         skipped_done=skipped, reasons=dict(sorted(reasons.items())), out=out,
                         seconds=round(time.time() - started, 3))
    counts = {"rows_in": rows_in, "embedded": embedded, "quarantined": len(quarantine),
              "skipped_already_done": skipped, "per_modality": per_modality,
              "quarantine_reasons": report.reasons, "balanced": report.balanced}
    encoders = {m: {"name": _encoder_for(m, cfg), "dim": _written_dim(out, m, cfg)}
                for m in per_modality}
    io.write_json(io.manifest("embed", cfg.model_dump(mode="json"), counts, started,
                              corpus=corpus, encoders=encoders),
                  io.join(out, "manifest.json"), cfg.s3)
    return report


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


def _quarantine_record(row: dict[str, Any], reason: str) -> dict[str, Any]:
    from culturesim_ray.schema import BadRow

    field, _, text = reason.partition(": ")
    return BadRow(dict(row), field or "row", text or reason).record()


def _written_dim(out: str, modality: str, cfg: EmbedConfig) -> int | None:
    """The vector size as written (so TF-IDF's and the LSTM's actual sizes are reported)."""
    fs, p = _parts(out, modality, cfg)
    for f in sorted(fs.find(p)) if fs.exists(p) else []:
        if f.endswith(".parquet"):
            with fs.open(f, "rb") as fh:
                return int(pq.read_schema(fh).field("vector").type.list_size)
    return None
