"""How the item graph stage's worker memory grows with the items, in one run.

The graph stage (`pipeline.graph.run_graph`, which `culturesim train` runs first)
reads a modality's embeddings, writes x.npy and items.parquet, builds the FAISS
index (IVF from 50,000 items) and searches it in row blocks, each a Ray task. A
worker must hold the index; this measures what else it holds as N grows.

Data, synthetic (no encoder): an embed run of N text items over N / 100 cultures,
d = 384 (MiniLM's width), each item its culture's centre plus noise, written as
the embed job writes it (files of its `rows_per_file`, fixed-size float32
vectors, the error column). Per size, in a fresh process and Ray session,
`run_graph` with the default GraphConfig; the benchmark samples every Ray worker
process under it every --interval s (psutil) and reports the largest worker's
peak RSS and its peak anonymous memory (private pages: RSS less the pages of
memory-mapped files, which the node's page cache holds once for every task),
plus the wall time, the index and its recall@10 from the stage's manifest.

Sizes: full 60,000 and 480,000 items (both IVF); --quick 60,000 and 240,000.
Ratios are large/small; the index itself grows with N (N x d x 4 bytes: 92 MB
at 60,000, 737 MB at 480,000), so what matters is how many such copies a worker
holds on top.

    python benchmarks/graph_scale.py [--quick] [--json PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.measure import (  # noqa: E402
    anonymous_bytes,
    child_env,
    communicate_sampling,
    print_table,
    ratio,
    save_json,
)
from benchmarks.scale_data import D  # noqa: E402

ITEMS_PER_CULTURE = 100


def write_embed_run(root: Path, n: int, seed: int = 0) -> None:
    """embeddings/text/part-*.parquet and the manifest, as the embed job writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.layout import EmbedLayout

    layout = EmbedLayout(str(root))
    out = Path(layout.embeddings("text"))
    out.mkdir(parents=True)
    c = n // ITEMS_PER_CULTURE
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, D)).astype(np.float32)
    per = EmbedConfig().rows_per_file
    for part, r0 in enumerate(range(0, n, per)):
        m = min(per, n - r0)
        cul = rng.integers(0, c, m)
        x = centres[cul] + 1.5 * rng.normal(size=(m, D)).astype(np.float32)
        pq.write_table(pa.table({
            "item_id": [f"item-{r0 + j:08d}" for j in range(m)],
            "culture": [f"culture_{k:05d}" for k in cul],
            "modality": ["text"] * m, "encoder": ["synthetic"] * m,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D),
            "themes": [["a"] if k % 2 else [] for k in cul],
            "error": pa.nulls(m, pa.string())}), out / f"part-{part:05d}.parquet")
    Path(layout.manifest).write_text(json.dumps({"encoders": {"text": {"name": "synthetic",
                                                                       "dim": D}}}))


def measure_graph(embed: Path, out: Path, interval: float, timeout: float) -> dict[str, Any]:
    """run_graph in a child process (its own Ray); the Ray workers' peaks, sampled."""
    code = ("import json, sys; from culturesim_ray.pipeline.graph import run_graph; "
            "m = run_graph(sys.argv[1], sys.argv[2], log=lambda s: None); "
            "import ray; ray.shutdown(); print(json.dumps(m))")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(embed), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), start_new_session=True)
    rss: dict[int, int] = {}
    anon: dict[int, int] = {}
    me = psutil.Process(proc.pid)

    def sample() -> bool:
        try:
            kids = me.children(recursive=True)
        except psutil.Error:
            return False
        for k in kids:
            try:
                if not k.cmdline() or not k.cmdline()[0].startswith("ray::"):
                    continue
                rss[k.pid] = max(rss.get(k.pid, 0), k.memory_info().rss)
                anon[k.pid] = max(anon.get(k.pid, 0), anonymous_bytes(k.pid))
            except psutil.Error:
                continue
        return True

    stdout, stderr = communicate_sampling(proc, sample, interval, timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run_graph failed ({proc.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads(stdout.strip().splitlines()[-1])
    text = manifest["modalities"]["text"]
    return {"wall_s": round(wall, 1), "graph_seconds": manifest["seconds"],
            "worker_peak_rss_mb": round(max(rss.values(), default=0) / 2**20),
            "worker_peak_anonymous_mb": round(max(anon.values(), default=0) / 2**20),
            "workers_sampled": len(rss), "index": text["index"], "nlist": text["nlist"],
            "nprobe": text["nprobe"], "recall_at_10": text["recall_at_k"],
            "manifest_worker_peak_rss_mb": text.get("worker_peak_rss_mb")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60,000 and 240,000 items")
    ap.add_argument("--interval", type=float, default=0.1, help="RSS sampling period, s")
    ap.add_argument("--timeout", type=float, default=3600, help="per graph run, s")
    ap.add_argument("--workdir", help="make the temporary directory under this one")
    ap.add_argument("--json", help="write the figures here")
    ns = ap.parse_args()
    sizes = (60_000, 240_000) if ns.quick else (60_000, 480_000)
    work = Path(tempfile.mkdtemp(prefix="culturesim-graphscale-", dir=ns.workdir))
    print(f"graph scale: N {sizes[0]:,} and {sizes[1]:,} items, d={D}; {os.cpu_count()} CPUs; "
          f"data in {work}", flush=True)
    rows = []
    try:
        for n in sizes:
            print(f"\nN={n:,}: writing the embed run ...", flush=True)
            write_embed_run(work / f"embed_{n}", n)
            r = measure_graph(work / f"embed_{n}", work / f"graph_{n}", ns.interval,
                              ns.timeout)
            rows.append({"n": n, "index_mb": round(n * D * 4 / 2**20), **r})
            print(f"  {r}", flush=True)
            shutil.rmtree(work / f"embed_{n}")
            shutil.rmtree(work / f"graph_{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, [("N items", "n", ","), ("index", "index", ""), ("index MB", "index_mb", ""),
                       ("worker RSS MB", "worker_peak_rss_mb", ""),
                       ("anonymous MB", "worker_peak_anonymous_mb", ""), ("wall s", "wall_s", ""),
                       ("recall@10", "recall_at_10", "")])
    s, lg = rows
    figures = {"worker_rss_ratio": ratio(s["worker_peak_rss_mb"], lg["worker_peak_rss_mb"]),
               "worker_anonymous_ratio": ratio(s["worker_peak_anonymous_mb"],
                                               lg["worker_peak_anonymous_mb"]),
               "wall_ratio": ratio(s["wall_s"], lg["wall_s"])}
    print(f"\nlarge/small (N x{lg['n'] / s['n']:.0f}): worker peak RSS "
          f"x{figures['worker_rss_ratio']}, anonymous x{figures['worker_anonymous_ratio']}, "
          f"wall x{figures['wall_ratio']}")
    save_json(ns.json, {"command": shlex.join([sys.executable, *sys.argv]), "quick": ns.quick,
                        "sizes": list(sizes), "d": D, "cpus": os.cpu_count(), **figures,
                        "rows": rows})


if __name__ == "__main__":
    main()
