"""How the driver's memory and throughput grow with corpus size, in one run.

Each job runs as its own `culturesim` CLI process (a fresh local Ray each
time: RAY_ADDRESS dropped, usage stats off, hubs offline), so the measured
driver is exactly the process a user starts. Measured per job:

- driver peak RSS: psutil's rss of the CLI process only, sampled every
  --interval seconds (0.05 by default) in a thread until it exits. Ray's
  raylet, GCS and workers are the driver's descendants and are NOT counted:
  this is the memory that has to fit on the machine that submits the job;
- wall time of the whole command (Ray start-up and shutdown included, about
  20-40 s on a small machine, which flatters the small size's rows/s less
  than the large one's);
- rows/s of the embed job: N / its wall time.

Data, all synthetic and written by this process in chunks (it stays small):

- a corpus of N short texts (8-15 words from a per-culture-skewed vocabulary)
  over C cultures (default 200), with 0-2 themes each, as Parquet shards of
  --shard-rows rows (corpus schema; modality text, lang en, source synthetic);
- for all-pairs alone: one vector per culture (head general, d=384) for many
  cultures, Gaussian clusters (500 centres + noise) so the FAISS pre-filter
  (auto from 20,000 cultures) has structure to find.

Jobs, for a small and a large N (full: 100,000 and 1,000,000; --quick: 20,000
and 200,000; --sizes SMALL,LARGE overrides):

    culturesim embed CORPUS --out RUN/embed --text-encoder tfidf
    culturesim allpairs RUN/embed --out RUN/allpairs
    culturesim allpairs cultures.parquet --out DIR      (C alone: full 100,000, quick 20,000)

Ratios are large/small. A driver that streams its input keeps its RSS ratio
near 1 while N grows 10x; one that materialises the corpus grows with N. The
all-pairs alone run also reports, from its manifest's counts,
max_task_input_bytes (the largest argument a Ray task was sent) and
max_block_plus_candidates_bytes (a block's vectors plus its candidate set),
or null where this version of the job does not record them.

    python benchmarks/scale.py [--quick] [--sizes 2000,4000] [--cultures-alone 3000]
                               [--json PATH] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import add_measure_args, measure, ratio, save_json  # noqa: E402
from benchmarks.scale_data import D, write_corpus, write_culture_vectors  # noqa: E402

COUNTERS = ("max_task_input_bytes", "max_block_plus_candidates_bytes")


# ----------------------------------------------------------------- manifest counts

def manifest_counts(out: Path) -> dict[str, Any]:
    path = out / "manifest.json"
    if not path.exists():
        print(f"FAILED: {path} was not written", file=sys.stderr)
        raise SystemExit(1)
    return json.loads(path.read_text()).get("counts", {})


def find_counter(counts: Any, key: str) -> int | None:
    """counts[key], else the largest value of `key` anywhere under counts (per head)."""
    if isinstance(counts, dict):
        if isinstance(counts.get(key), (int, float)):
            return int(counts[key])
        found = [v for v in (find_counter(c, key) for c in counts.values()) if v is not None]
        return max(found) if found else None
    if isinstance(counts, list):
        found = [v for v in (find_counter(c, key) for c in counts) if v is not None]
        return max(found) if found else None
    return None


def mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 3)


# ----------------------------------------------------------------- main

def run_size(n: int, cultures: int, work: Path, ns: argparse.Namespace) -> dict[str, Any]:
    corpus, run = work / f"corpus_{n}", work / f"run_{n}"
    print(f"\nN={n}: writing {cultures} cultures' corpus ...", flush=True)
    written = write_corpus(corpus, n, cultures, ns.shard_rows, ns.seed)
    print(f"  {written['shards']} shards in {written['seconds']:.1f} s", flush=True)
    embed = measure(f"embed_{n}", n, ["embed", str(corpus), "--out", str(run / "embed"),
                                      "--text-encoder", "tfidf"],
                    work / "logs", ns.interval, ns.timeout)
    counts = manifest_counts(run / "embed")
    if counts.get("embedded") != n:
        print(f"FAILED: embed wrote {counts.get('embedded')} of {n} rows "
              f"(quarantined {counts.get('quarantined')}); see {work / 'logs'}", file=sys.stderr)
        raise SystemExit(1)
    pairs = measure(f"allpairs_{n}", n, ["allpairs", str(run / "embed"), "--out",
                                         str(run / "allpairs")],
                    work / "logs", ns.interval, ns.timeout)
    pcounts = manifest_counts(run / "allpairs")
    return {"n": n, "corpus": written, "embed": asdict(embed), "allpairs": asdict(pairs),
            "embed_rows_per_s": round(n / embed.wall_s, 1),
            "allpairs_counters": {k: find_counter(pcounts, k) for k in COUNTERS}}


def run_alone(c: int, work: Path, ns: argparse.Namespace) -> dict[str, Any]:
    base = work / "alone"
    base.mkdir(parents=True, exist_ok=True)
    path = base / "cultures.parquet"
    print(f"\nall-pairs alone: writing {c} culture vectors (d={D}) ...", flush=True)
    written = write_culture_vectors(path, c, ns.seed + 1)
    print(f"  {path.stat().st_size / 2**20:.0f} MB in {written['seconds']:.1f} s", flush=True)
    m = measure(f"allpairs_alone_{c}", c, ["allpairs", str(path), "--out", str(base / "out")],
                work / "logs", ns.interval, ns.timeout)
    counts = manifest_counts(base / "out")
    return {"data": written, "allpairs": asdict(m),
            "counters": {k: find_counter(counts, k) for k in COUNTERS},
            "prefilter": {h: v.get("prefilter") for h, v in counts.get("heads", {}).items()}}


def fmt(v: float | None, spec: str) -> str:
    return "null" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="N 20,000 and 200,000; 20,000 cultures alone")
    ap.add_argument("--sizes", help="SMALL,LARGE corpus rows (overrides --quick's and the default)")
    ap.add_argument("--cultures", type=int, default=200, help="cultures in the corpus (200)")
    ap.add_argument("--cultures-alone", type=int,
                    help="cultures in the all-pairs-alone run (100,000; --quick 20,000)")
    ap.add_argument("--shard-rows", type=int, default=50_000, help="rows per corpus shard")
    add_measure_args(ap, 7200, "job")
    ap.add_argument("--keep", action="store_true", help="keep the data and run outputs")
    ns = ap.parse_args()
    if ns.sizes:
        try:
            small, large = (int(s) for s in ns.sizes.split(","))
        except ValueError:
            ap.error("--sizes takes SMALL,LARGE (two integers)")
    else:
        small, large = (20_000, 200_000) if ns.quick else (100_000, 1_000_000)
    alone = ns.cultures_alone or (20_000 if ns.quick else 100_000)
    if not 0 < small <= large or alone < 2 or ns.cultures < 2:
        ap.error("need 0 < SMALL <= LARGE and at least 2 cultures")
    if ns.workdir:
        Path(ns.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="culturesim-scale-", dir=ns.workdir))
    print(f"scale benchmark: N {small:,} and {large:,} over {ns.cultures} cultures; "
          f"all-pairs alone over {alone:,} cultures; {os.cpu_count()} CPUs; data in {work}",
          flush=True)
    try:
        s = run_size(small, ns.cultures, work, ns)
        lg = run_size(large, ns.cultures, work, ns)
        a = run_alone(alone, work, ns)
    finally:
        if ns.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    counters = a["counters"]
    res: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "quick": ns.quick, "sizes": [small, large], "cultures": ns.cultures,
        "cpus": os.cpu_count(), "sample_interval_s": ns.interval,
        "driver_rss_mb_small": s["embed"]["peak_rss_mb"],
        "driver_rss_mb_large": lg["embed"]["peak_rss_mb"],
        "driver_rss_ratio": ratio(s["embed"]["peak_rss_mb"], lg["embed"]["peak_rss_mb"]),
        "allpairs_rss_mb_small": s["allpairs"]["peak_rss_mb"],
        "allpairs_rss_mb_large": lg["allpairs"]["peak_rss_mb"],
        "allpairs_rss_ratio": ratio(s["allpairs"]["peak_rss_mb"], lg["allpairs"]["peak_rss_mb"]),
        "embed_wall_s_small": s["embed"]["wall_s"], "embed_wall_s_large": lg["embed"]["wall_s"],
        "embed_rows_per_s_small": s["embed_rows_per_s"],
        "embed_rows_per_s_large": lg["embed_rows_per_s"],
        "embed_rows_per_s_ratio": ratio(s["embed_rows_per_s"], lg["embed_rows_per_s"]),
        "allpairs_wall_s_small": s["allpairs"]["wall_s"],
        "allpairs_wall_s_large": lg["allpairs"]["wall_s"],
        "allpairs_100k_driver_rss_mb": a["allpairs"]["peak_rss_mb"],
        "allpairs_cultures_alone": alone,
        "allpairs_alone_wall_s": a["allpairs"]["wall_s"],
        "allpairs_alone_prefilter": a["prefilter"],
        "allpairs_max_task_input_mb": mb(counters["max_task_input_bytes"]),
        "allpairs_block_plus_candidates_mb": mb(counters["max_block_plus_candidates_bytes"]),
        "allpairs_counters_present": {k: v is not None for k, v in counters.items()},
        "bench_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs": {"small": s, "large": lg, "alone": a},
    }

    print(f"\ndriver = the culturesim CLI process alone (Ray's processes not counted); "
          f"{os.cpu_count()} CPUs")
    print(f"{'job':<26}{'size':>12}{'driver peak RSS MB':>20}{'wall s':>10}{'rows/s':>10}")
    for label, r in (("small", s), ("large", lg)):
        print(f"{'embed (tfidf) ' + label:<26}{r['n']:>12,}{r['embed']['peak_rss_mb']:>20.0f}"
              f"{r['embed']['wall_s']:>10.1f}{r['embed_rows_per_s']:>10.0f}")
    for label, r in (("small", s), ("large", lg)):
        print(f"{'allpairs on embed ' + label:<26}{r['n']:>12,}{r['allpairs']['peak_rss_mb']:>20.0f}"
              f"{r['allpairs']['wall_s']:>10.1f}{'':>10}")
    print(f"{'allpairs alone (cultures)':<26}{alone:>12,}{a['allpairs']['peak_rss_mb']:>20.0f}"
          f"{a['allpairs']['wall_s']:>10.1f}{'':>10}")
    print(f"(size: corpus rows; all-pairs on embed pools them to {ns.cultures} cultures per head; "
          "all-pairs alone: cultures)")
    print(f"\nlarge/small (N x{large / small:.1f}): embed driver RSS x{fmt(res['driver_rss_ratio'], '.2f')}, "
          f"embed rows/s x{fmt(res['embed_rows_per_s_ratio'], '.2f')}, "
          f"all-pairs driver RSS x{fmt(res['allpairs_rss_ratio'], '.2f')}")
    missing = " (not in this version's manifest counts)"
    print(f"all-pairs alone over {alone:,} cultures (pre-filter {a['prefilter']}):")
    print(f"  max task input            {fmt(res['allpairs_max_task_input_mb'], '.2f')} MB"
          f"{'' if counters['max_task_input_bytes'] is not None else missing}")
    print(f"  max block + candidates    {fmt(res['allpairs_block_plus_candidates_mb'], '.2f')} MB"
          f"{'' if counters['max_block_plus_candidates_bytes'] is not None else missing}")
    print(f"this benchmark's own peak RSS: {res['bench_process_peak_rss_mb']:.0f} MB")
    save_json(ns.json, res)


if __name__ == "__main__":
    main()
