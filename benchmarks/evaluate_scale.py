"""How `culturesim evaluate`'s memory grows with the corpus when the gold stays the
same size, in one run.

A platform engineer's run has many cultures; the gold a researcher has names a
few of them. `culturesim evaluate` reads the items (and, for the TF-IDF row, the
corpus texts) of the cultures the gold names alone, so its memory should follow
the gold, not the corpus. Measured here as `benchmarks/scale.py` measures a job:
the `culturesim evaluate` CLI process's own peak RSS (psutil, sampled every
--interval s) and its wall time, at a small and a large run.

Data, synthetic, written by this process in chunks (no Ray, no encoder): a
corpus of short texts (`scale_data.write_corpus`: N rows over C cultures, the
same number of items per culture at both sizes) and the embed run an embed job
would write for it (one d=384 vector per row: its culture's centre plus noise,
each with its corpus row), no trained model (the model row is left out, as
evaluate says). The gold: every pair of the first G cultures (default 30),
scored by the negated distance of their centres.

Sizes (rows, cultures): full 20,000 / 200 and 400,000 / 4,000; --quick 10,000 /
100 and 100,000 / 1,000. Ratios are large/small: an evaluate that reads the
gold's cultures alone keeps its RSS ratio near 1 while N and C grow; one that
reads the whole run grows with N. Then, per size, `culturesim fit-metric` on the
same gold and `culturesim evaluate --metric` with its file: a metric is
standardised over every culture's pairs, so both read every culture's raw mean,
file by file: their memory may follow C x d, never N x d.

    python benchmarks/evaluate_scale.py [--quick] [--gold-cultures 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.measure import add_measure_args, measure, ratio, save_json  # noqa: E402
from benchmarks.scale_data import D, write_corpus  # noqa: E402

ITEMS_PER_CULTURE = 100
JOBS = [("evaluate", "evaluate"), ("fit_metric", "fit-metric"),
        ("evaluate_metric", "evaluate --metric")]


def write_run(corpus: Path, run: Path, cultures: int, seed: int) -> dict[str, Any]:
    """The embed run for `corpus`: per corpus shard one embeddings file (item_id,
    culture, modality, vector, themes, error, source_row, as the embed job writes
    them, in files of the embed job's `rows_per_file`) and the manifest."""
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.tables import list_corpus_files

    layout = EmbedLayout(str(run / "embed"))
    out = Path(layout.embeddings("text"))
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(cultures, D)).astype(np.float32)
    ids = {f"culture_{c:04d}": c for c in range(cultures)}
    rows, part, per_file = 0, 0, EmbedConfig().rows_per_file  # the embed job's file size
    for file in list_corpus_files(str(corpus)):
        t = pq.read_table(file, columns=["item_id", "culture", "themes"])
        c = np.fromiter((ids[n] for n in t.column("culture").to_pylist()), np.int64)
        x = centres[c] + 1.5 * rng.normal(size=(len(c), D)).astype(np.float32)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
        table = pa.table({
            "item_id": t.column("item_id"), "culture": t.column("culture"),
            "modality": pa.array(["text"] * len(c)),
            "vector": vec,  # fixed_size_list<float32>, as the embed job writes it
            "themes": t.column("themes"), "error": pa.nulls(len(c), pa.string()),
            "source_row": pa.array([f"{file}#{j}" for j in range(len(c))])})
        for start in range(0, table.num_rows, per_file):
            pq.write_table(table.slice(start, per_file), out / f"part-{part:05d}.parquet")
            part += 1
        rows += len(c)
    Path(layout.manifest).write_text(json.dumps(
        {"encoders": {"text": {"name": "synthetic", "dim": D}}, "corpus": str(corpus)}))
    return {"rows": rows, "centres": centres}


def write_gold(path: Path, centres: np.ndarray, g: int) -> int:
    lines = ["culture_a,culture_b,score"]
    for a in range(g):
        for b in range(a + 1, g):
            d = float(np.linalg.norm(centres[a] - centres[b]))
            lines.append(f"culture_{a:04d},culture_{b:04d},{-d:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def run_size(n: int, c: int, work: Path, ns: argparse.Namespace) -> dict[str, Any]:
    corpus, run = work / f"corpus_{n}", work / f"run_{n}"
    print(f"\nN={n:,} over {c:,} cultures: writing the corpus and its embed run ...", flush=True)
    written = write_corpus(corpus, n, c, 50_000, ns.seed)
    data = write_run(corpus, run, c, ns.seed + 1)
    gold = work / f"gold_{n}.csv"
    pairs = write_gold(gold, data["centres"], ns.gold_cultures)
    m = measure(f"evaluate_{n}", n, ["evaluate", str(run), "--gold", str(gold), "--out",
                                     str(run / "evaluation")], work / "logs", ns.interval,
                ns.timeout)
    result = json.loads((run / "evaluation" / "evaluation.json").read_text())
    # a metric fitted on the gold, then scored as evaluate's extra row: both read
    # every culture's raw mean (the metric is standardised over the run's pairs)
    metric = work / f"metric_{n}.json"
    fit = measure(f"fit_metric_{n}", n, ["fit-metric", str(run), "--gold", str(gold),
                                         "--out", str(metric)], work / "logs", ns.interval,
                  ns.timeout)
    with_metric = measure(f"evaluate_metric_{n}", n, [
        "evaluate", str(run), "--gold", str(gold), "--metric", str(metric), "--out",
        str(run / "evaluation-metric")], work / "logs", ns.interval, ns.timeout)
    return {"n": n, "cultures": c, "corpus_shards": written["shards"], "gold_pairs": pairs,
            "evaluate": asdict(m), "fit_metric": asdict(fit),
            "evaluate_metric": asdict(with_metric), "rows": len(result["rows"]),
            "methods": sorted({r["method"] for r in result["rows"]})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 / 100 and 100,000 / 1,000")
    ap.add_argument("--gold-cultures", type=int, default=30, help="cultures the gold names")
    add_measure_args(ap, 3600, "evaluate run")
    ns = ap.parse_args()
    small, large = (10_000, 100_000) if ns.quick else (20_000, 400_000)
    if ns.gold_cultures < 3 or ns.gold_cultures > small // ITEMS_PER_CULTURE:
        ap.error(f"--gold-cultures must be 3 .. {small // ITEMS_PER_CULTURE}")
    work = Path(tempfile.mkdtemp(prefix="culturesim-evalscale-", dir=ns.workdir))
    print(f"evaluate scale: N {small:,} and {large:,} ({ITEMS_PER_CULTURE} items per culture), "
          f"gold over {ns.gold_cultures} cultures; {os.cpu_count()} CPUs; data in {work}",
          flush=True)
    try:
        s = run_size(small, small // ITEMS_PER_CULTURE, work, ns)
        lg = run_size(large, large // ITEMS_PER_CULTURE, work, ns)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nthe culturesim CLI process (peak RSS sampled); no trained model")
    print(f"{'command':<18}{'run':<7}{'items':>10}{'cultures':>10}{'gold pairs':>12}"
          f"{'peak RSS MB':>13}{'wall s':>9}")
    figures: dict[str, Any] = {}
    for job, label in JOBS:
        for size, r in (("small", s), ("large", lg)):
            print(f"{label:<18}{size:<7}{r['n']:>10,}{r['cultures']:>10,}"
                  f"{r['gold_pairs']:>12}{r[job]['peak_rss_mb']:>13.0f}"
                  f"{r[job]['wall_s']:>9.1f}")
        figures[f"{job}_rss_ratio"] = ratio(s[job]["peak_rss_mb"], lg[job]["peak_rss_mb"])
        figures[f"{job}_wall_ratio"] = ratio(s[job]["wall_s"], lg[job]["wall_s"])
    print(f"\nlarge/small (N and C x{large / small:.0f}, gold the same):")
    for job, label in JOBS:
        print(f"  {label}: peak RSS x{figures[f'{job}_rss_ratio']}, "
              f"wall x{figures[f'{job}_wall_ratio']}")
    res = {"command": shlex.join([sys.executable, *sys.argv]), "quick": ns.quick,
           "sizes": [small, large], "gold_cultures": ns.gold_cultures,
           "items_per_culture": ITEMS_PER_CULTURE, "cpus": os.cpu_count(),
           "evaluate_rss_mb_small": s["evaluate"]["peak_rss_mb"],
           "evaluate_rss_mb_large": lg["evaluate"]["peak_rss_mb"],
           **figures, "runs": {"small": s, "large": lg}}
    save_json(ns.json, res)


if __name__ == "__main__":
    main()
