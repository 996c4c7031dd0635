"""Throughput of the Ray Data embedding job vs a plain single-process loop.

Both run the same encoder (MiniLM by default) over the same real texts (the
demo source's Wikipedia summaries), in one run, on this machine:

- plain: one process, torch using every core, `encode_table` batch by batch;
- ray:   `run_embed` on a local Ray instance (actor pool, Parquet output),
         timed end to end: actor start, model loads and writes included.

    python benchmarks/embed.py [--quick] [--n 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from culturesim_ray.encoders import registry  # noqa: E402
from culturesim_ray.pipeline.ray_env import set_safe_env  # noqa: E402

set_safe_env()


def corpus(n: int) -> pa.Table:
    from culturesim_ray.demo import text_rows
    from culturesim_ray.schema import CORPUS_FIELDS, CORPUS_SCHEMA

    rows = text_rows(per_culture_per_lang=10_000)
    if len(rows) < n:
        rows = (rows * (n // len(rows) + 1))
        rows = [{**r, "item_id": f"{r['item_id']}#{i}"} for i, r in enumerate(rows)]
    rows = rows[:n]
    return pa.Table.from_pylist([{k: r[k] for k in CORPUS_FIELDS} for r in rows],
                                schema=CORPUS_SCHEMA)


def plain(table: pa.Table, encoder: str, batch_size: int) -> float:
    import torch

    from culturesim_ray.encoders import build_encoder
    from culturesim_ray.pipeline.embed import encode_table

    torch.set_num_threads(os.cpu_count() or 1)
    enc = build_encoder(encoder)
    # the column staging adds (where a bad row came from): encode_table carries it on
    table = table.append_column("_source_row", pa.array([str(i) for i in range(table.num_rows)]))
    start = time.perf_counter()
    for i in range(0, table.num_rows, batch_size):
        encode_table(enc, table.slice(i, batch_size))
    return time.perf_counter() - start


def with_ray(table: pa.Table, encoder: str, batch_size: int, actors: int) -> float:
    import ray

    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.pipeline.embed import run_embed
    from culturesim_ray.pipeline.ray_env import init_ray

    init_ray(log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "corpus.parquet")
        pq.write_table(table, path)
        cfg = EmbedConfig(text_encoder=encoder, batch_size=batch_size, num_actors=actors)
        start = time.perf_counter()
        report = run_embed(str(path), str(Path(tmp, "out")), cfg, log=lambda *_: None)
        elapsed = time.perf_counter() - start
        assert report.embedded == table.num_rows, report
    ray.shutdown()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="600 texts (under 2 minutes)")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--encoder", default=registry.DEFAULTS["text"],
                    choices=[n for n in registry.names("text") if not registry.get(n).fitted])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    n = 600 if args.quick else args.n
    table = corpus(n)
    t_plain = plain(table, args.encoder, args.batch_size)
    t_ray = with_ray(table, args.encoder, args.batch_size, args.actors)
    res = {
        "n_items": n, "encoder": args.encoder, "cpus": os.cpu_count(),
        "actors": args.actors, "batch_size": args.batch_size,
        "plain_s": round(t_plain, 2), "ray_s": round(t_ray, 2),
        "plain_items_per_s": round(n / t_plain, 2), "ray_items_per_s": round(n / t_ray, 2),
    }
    res["ratio"] = round(res["ray_items_per_s"] / res["plain_items_per_s"], 3)
    print(f"\nembedding {n} texts with {args.encoder} on {res['cpus']} CPUs")
    print(f"{'path':<28}{'seconds':>10}{'items/s':>10}{'vs plain':>10}")
    print(f"{'plain loop (1 process)':<28}{t_plain:>10.1f}{res['plain_items_per_s']:>10.1f}{1.0:>10.2f}")
    print(f"{'ray data (' + str(args.actors) + ' actors)':<28}{t_ray:>10.1f}"
          f"{res['ray_items_per_s']:>10.1f}{res['ratio']:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
