"""The embed job's encoder state and fingerprints (Ray glue): fitting TF-IDF and
the melody LSTM on the corpus once (a rerun reuses them), and the settings that
shape every vector, recorded before any is written and compared on a rerun.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from culturesim_ray import fingerprint, ingest, io
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.pipeline.embed_stage import _map
from culturesim_ray.schema import MODALITIES


def _gpus_per_actor(cfg: EmbedConfig) -> float:
    """The configured GPUs per actor; unset: 1 when the cluster has GPUs, else 0."""
    import ray

    if cfg.num_gpus_per_actor is not None:
        return cfg.num_gpus_per_actor
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


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
    with io.atomic_open(layout.tfidf, cfg.s3) as fh:  # whole or absent: a rerun reloads it
        np.savez_compressed(fh, **enc.state())
    return enc.state()


def sample_takes(counts: list[int], cap: int) -> list[int]:
    """Rows to take from each partition (in order) so that the first `cap` rows of
    the partitions laid end to end are taken: the LSTM's training sample."""
    takes, left = [], cap
    for n in counts:
        takes.append(min(n, left))
        left -= takes[-1]
    return takes


def _sample_tokens(table: pa.Table, take: int, storage_options: dict[str, Any]
                   ) -> list[list[str]]:
    """The token sequences of a partition's first `take` melodies (by corpus order);
    one that cannot be read is left out (it is quarantined with the parser's
    message when encoded)."""
    from culturesim_ray.encoders.sequence import read_tokens

    seqs = []
    for uri in table.sort_by("_order").column("uri").to_pylist()[:take]:
        try:
            seqs.append(read_tokens(uri, storage_options))
        except (ValueError, OSError):
            continue
    return seqs


def _fit_lstm(layout: EmbedLayout, todo: list[Any], cfg: EmbedConfig, log: Any) -> str | None:
    """Train the melody LSTM on (a bounded sample of) the corpus's own sequences
    once; a rerun reuses it. None when no melody could be parsed (each is then
    quarantined with its reason). The sample, the first `cfg.lstm_sample` melodies
    of the staged partitions `todo` in order, is parsed in Ray tasks, one per
    partition, which write its token sequences under the run (`lstm_sample`) and
    return their token counts: the driver sums the counts into the vocabulary and
    holds no melody. Training runs off the driver too: in one Ray task (a node's
    CPUs, and its GPU when the cluster has one), or with Ray Train on
    `lstm_workers` workers, each keeping its shard of the sample."""
    from culturesim_ray.encoders.music import Vocabulary
    from culturesim_ray.encoders.sequence import LSTMConfig
    from culturesim_ray.pipeline.embed_stage import _map_each

    path = layout.lstm
    fs, p = io.filesystem_for(path, cfg.s3)
    if fs.exists(p + "/lstm.pt"):
        return path
    sample = layout.lstm_sample
    sfs, sp = io.filesystem_for(sample, cfg.s3)
    if sfs.exists(sp):  # parts of a run stopped before its model was saved
        sfs.rm(sp, recursive=True)
    takes = sample_takes(_map(lambda t: t.num_rows, todo), cfg.lstm_sample)
    parts = _map_each(_write_sample_part, todo,
                      [(take, io.join(sample, f"part-{i:05d}.parquet"), cfg.s3) if take else None
                       for i, take in enumerate(takes)])
    n_melodies = sum(n for n, _ in parts)
    if not n_melodies:
        return None
    counts: Counter[str] = Counter()
    for _, part_counts in parts:
        counts.update(part_counts)
    vocab = Vocabulary.from_counts(counts)
    gpus = _gpus_per_actor(cfg)
    if cfg.lstm_workers > 0:
        from culturesim_ray.pipeline.train_lstm import train_lstm_distributed

        with tempfile.TemporaryDirectory(prefix="culturesim-lstm-") as tmp:
            local = tmp if io.is_s3(path) else path
            metrics = train_lstm_distributed(sample, vocab, LSTMConfig(len(vocab)), local,
                                             num_workers=cfg.lstm_workers,
                                             epochs=cfg.lstm_epochs, use_gpu=gpus > 0, s3=cfg.s3)
            if io.is_s3(path):
                _upload_model(local, path, cfg.s3)
        log(f"sequence: trained the melody LSTM with Ray Train on {n_melodies} melodies "
            f"(loss {metrics['history'][0]:.3f} -> {metrics['loss']:.3f})")
        return path
    import ray

    task = ray.remote(num_cpus=_node_cpus(gpus), num_gpus=gpus)(_train_lstm_task)
    losses = ray.get(task.remote(sample, vocab.itos, cfg.lstm_epochs, path, cfg.s3, gpus > 0))
    log(f"sequence: trained the melody LSTM on {n_melodies} melodies "
        f"(loss {losses[0]:.3f} -> {losses[-1]:.3f})")
    return path


def _node_cpus(gpus: float) -> float:
    """The CPUs of the largest node (with `gpus` GPUs, when asked): what the LSTM's
    training task reserves, so that torch trains with as many threads as the node
    has (Ray caps a task's threads at its CPUs); nothing else runs at that point of
    the job."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return max([r.get("CPU", 0.0) for r in nodes if r.get("GPU", 0.0) >= gpus] + [1.0])


def _write_sample_part(table: pa.Table, job: tuple[int, str, Any] | None
                       ) -> tuple[int, dict[str, int]]:
    """Ray task: a partition's share of the LSTM sample (its first `take` melodies
    by corpus order, `_sample_tokens`) written to `path` as token sequences;
    returns how many melodies it wrote and their token counts. None: no share."""
    if job is None:
        return 0, {}
    take, path, s3 = job
    seqs = [t for t in _sample_tokens(table, take, s3.storage_options()) if t]
    if not seqs:
        return 0, {}
    io.write_table(pa.table({"tokens": pa.array(seqs, pa.list_(pa.string()))}), path, s3)
    counts: Counter[str] = Counter()
    for t in seqs:
        counts.update(t)
    return len(seqs), dict(counts)


def _train_lstm_task(sample: str, itos: list[str], epochs: int, path: str, s3: Any,
                     use_gpu: bool) -> list[float]:
    """Ray task: the plain loop on the whole sample (in corpus order), with a thread
    per CPU it holds, on its GPU when it has one; the model folder written to `path`."""
    import ray
    import torch

    from culturesim_ray.encoders.base import pick_device
    from culturesim_ray.encoders.music import SPECIALS, Vocabulary
    from culturesim_ray.encoders.sequence import LSTMConfig, save_model, train_melody_lstm
    from culturesim_ray.pipeline.train_lstm import read_sample_tokens

    # a reused worker process keeps the thread count of the task it was started for
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources()
                                     .get("CPU", 1))))
    vocab = Vocabulary(itos[len(SPECIALS):])
    ids = [vocab.encode(t) for t in read_sample_tokens(sample, s3)]
    model, losses = train_melody_lstm(ids, LSTMConfig(len(vocab)), epochs=epochs,
                                      device=pick_device(use_gpu))
    if io.is_s3(path):
        with tempfile.TemporaryDirectory(prefix="culturesim-lstm-") as tmp:
            save_model(model, vocab, tmp)
            _upload_model(tmp, path, s3)
    else:
        save_model(model, vocab, path)
    return losses


def _upload_model(local: str, path: str, s3: Any) -> None:
    """The melody model's files in the folder `local` copied to `path` on S3, the
    weights last: their presence is what tells a rerun the model is complete (the
    local folder's other contents, Ray Train's checkpoints, stay behind)."""
    from culturesim_ray.encoders.sequence import MODEL_FILES

    fs, p = io.filesystem_for(path, s3)
    for name in MODEL_FILES:
        fs.put(f"{local}/{name}", f"{p}/{name}")


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


def vector_settings(cfg: EmbedConfig) -> dict[str, dict[str, Any]]:
    """Per modality, every setting that changes a written vector: the encoder, a
    digest of its packaged weights, the settings it is built with, and for a state
    fitted on the corpus the settings of the fit (or the given state's digest)."""
    out: dict[str, dict[str, Any]] = {}
    for modality in MODALITIES:
        name = cfg.encoder(modality)
        spec = registry.get(name)
        s: dict[str, Any] = {"encoder": name}
        weights = registry.weights_path(name)
        if weights is not None:
            s["model_files"] = _digest_cached(weights)
        s.update({k: getattr(cfg, k) for k in spec.settings})
        if spec.reads:
            s["reads"] = spec.reads
        if s.get("text_model"):  # adapted weights (culturesim adapt): their own digest
            s["model_files"] = _digest_cached(os.path.join(s["text_model"], "model.safetensors"))
        if s.get("image_align"):  # the image -> text projection (culturesim align)
            s["align_files"] = _digest_cached(os.path.join(s["image_align"], "align.pt"))
        if spec.precision:
            s["precision"] = "float32"  # the corpus is always embedded in float32
        if spec.fitted and modality == "sequence" and cfg.sequence_model:
            s["model_files"] = (_digest_cached(cfg.sequence_model)
                                if not io.is_s3(cfg.sequence_model) else cfg.sequence_model)
        elif spec.fitted:
            s.update({k: getattr(cfg, k) for k in spec.fit_settings})
            if modality == "sequence":
                s["trained_on"] = "corpus"
        out[modality] = s
    return out


_DIGESTS: dict[tuple[str, float], str] = {}


def _digest_cached(path: str) -> str:

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
