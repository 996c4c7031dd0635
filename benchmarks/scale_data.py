"""Synthetic data for `benchmarks/scale.py`, written in chunks so the writer stays small:
a corpus of short texts from a per-culture-skewed vocabulary, and clustered culture
vectors for the all-pairs job alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray.schema import CORPUS_SCHEMA  # pyarrow only: no ray, no torch

D = 384
THEMES = ("ritual", "craft", "music", "food", "kinship", "trade", "myth", "dress")
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "de", "fa",
             "gu", "ha", "je", "ko", "li", "mo", "nu", "pe", "qi", "zo")
VOCAB = 6000  # distinct words (3 syllables of 20: 8,000 possible)
HOME_WORDS = 60  # words each culture favours
HOME_SHARE = 0.45  # share of a text's words drawn from its culture's favourites
CHUNK_VECTORS = 10_000  # culture vectors per written chunk



def vocabulary() -> np.ndarray:
    s = len(SYLLABLES)
    words = [SYLLABLES[i % s] + SYLLABLES[(i // s) % s] + SYLLABLES[(i // s // s) % s]
             for i in range(VOCAB)]
    return np.asarray(words, dtype=object)


def write_corpus(out: Path, n: int, cultures: int, shard_rows: int, seed: int) -> dict[str, Any]:
    """N rows as Parquet shards under `out`, one shard generated at a time."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = vocabulary()
    zipf = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    zipf /= zipf.sum()
    home = np.stack([rng.choice(VOCAB, HOME_WORDS, replace=False) for _ in range(cultures)])
    names = np.asarray([f"culture_{c:04d}" for c in range(cultures)], dtype=object)
    start, shards = time.perf_counter(), 0
    for lo in range(0, n, shard_rows):
        m = min(shard_rows, n - lo)
        cult = rng.integers(0, cultures, m)
        lengths = rng.integers(8, 16, m)  # 8-15 words
        common = rng.choice(VOCAB, size=(m, 15), p=zipf)
        favoured = home[cult[:, None], rng.integers(0, HOME_WORDS, (m, 15))]
        tokens = np.where(rng.random((m, 15)) < HOME_SHARE, favoured, common)
        texts = [" ".join(words[row[:k]]) + "." for row, k in zip(tokens, lengths, strict=True)]
        n_themes = rng.integers(0, 3, m)  # 0, 1 or 2 distinct themes
        first = rng.integers(0, len(THEMES), m)
        second = (first + rng.integers(1, len(THEMES), m)) % len(THEMES)
        flat = np.stack([first, second], axis=1)[np.arange(2)[None, :] < n_themes[:, None]]
        offsets = np.concatenate([[0], np.cumsum(n_themes)]).astype(np.int32)
        theme_values = pa.array(np.asarray(THEMES, dtype=object)[flat].tolist(), pa.string())
        nulls_s, nulls_i = pa.nulls(m, pa.string()), pa.nulls(m, pa.int64())
        cols = {
            "item_id": pa.array([f"syn-{i:09d}" for i in range(lo, lo + m)], pa.string()),
            "culture": pa.array(names[cult].tolist(), pa.string()),
            "modality": pa.array(["text"] * m, pa.string()),
            "text": pa.array(texts, pa.string()),
            "uri": nulls_s,
            "lang": pa.array(["en"] * m, pa.string()),
            "era_start": nulls_i,
            "era_end": nulls_i,
            "themes": pa.ListArray.from_arrays(pa.array(offsets), theme_values),
            "artifact_id": nulls_s,
            "source": pa.array(["synthetic"] * m, pa.string()),
        }
        table = pa.Table.from_arrays([cols[f.name] for f in CORPUS_SCHEMA], schema=CORPUS_SCHEMA)
        pq.write_table(table, out / f"part-{shards:05d}.parquet")
        shards += 1
    return {"rows": n, "shards": shards, "seconds": round(time.perf_counter() - start, 2)}


def write_culture_vectors(path: Path, n: int, seed: int, centres: int = 500) -> dict[str, Any]:
    """n culture vectors (head general, d=384), clustered, written CHUNK_VECTORS at a time."""
    rng = np.random.default_rng(seed)
    mu = (rng.standard_normal((centres, D)) * 0.35).astype(np.float32)
    schema = pa.schema([("culture", pa.string()), ("head", pa.string()),
                        ("vector", pa.list_(pa.float32(), D))])
    start = time.perf_counter()
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, n, CHUNK_VECTORS):
            m = min(CHUNK_VECTORS, n - lo)
            x = mu[rng.integers(0, centres, m)]
            x += rng.standard_normal((m, D), dtype=np.float32) * np.float32(0.3)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
            writer.write_table(pa.Table.from_arrays(
                [pa.array([f"c{i:07d}" for i in range(lo, lo + m)], pa.string()),
                 pa.array(["general"] * m, pa.string()), vec], schema=schema))
    return {"cultures": n, "dim": D, "seconds": round(time.perf_counter() - start, 2)}


def clustered_npy(path: Path | str, culture: np.ndarray, cultures: int, d: int,
                  rng: np.random.Generator, block: int = 50_000) -> None:
    """An (n, d) float32 `.npy` at path, row i its culture's centre (drawn here, one
    per culture) plus unit noise, written a block at a time through a memory map."""
    centres = rng.normal(size=(cultures, d)).astype(np.float32)
    x = np.lib.format.open_memmap(path, "w+", np.float32, (len(culture), d))
    for a in range(0, len(culture), block):
        b = min(a + block, len(culture))
        x[a:b] = centres[culture[a:b]] + rng.normal(size=(b - a, d)).astype(np.float32)
    x.flush()
    del x


def same_culture_dst(culture: np.ndarray, cultures: int, src: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """For each src row, a random row of its culture (culture: sorted codes)."""
    first = np.searchsorted(culture, np.arange(cultures))
    size = np.bincount(culture, minlength=cultures)
    cul = culture[src]
    return first[cul] + (rng.random(len(src)) * size[cul]).astype(np.int64)
