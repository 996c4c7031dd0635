"""How the train job's store task grows with the items, in one run.

Before training, one Ray task cuts the graph stage's output into what the
workers read (`training.store.write_store`): every item's split (held out,
validation, training), culture and themes, three CSR graphs over the global
node space (train, val, full), the relational term's culture means. This
measures the memory of the process doing it as N grows.

Data, synthetic, written as the graph stage writes it (`GraphLayout`): N text
items over N / 100 cultures, d = 384 (MiniLM's width), each its culture's centre
plus noise, half carrying a theme; items.parquet (ids, cultures, themes); edges
of 10 random same-culture neighbours an item in one Parquet file per 50,000
items (the graph stage's search blocks), and an image modality of N / 10 items
(d = 64) whose every item is linked to one text item both ways (a relations
file's cross-modal edges).

Per size, a fresh process runs the store task's call once; the benchmark
samples it every --interval s and reports its peak RSS, its peak anonymous
memory (RSS less the pages of memory-mapped files, which the kernel can drop)
and the wall time. Ratios are large / small. Run through `PYTHONPATH=<a checkout
of older code>` (and a --workdir outside the checkout) for a before / after.

Sizes: full 100,000 and 1,000,000 items; --quick 25,000 and 100,000.

    python benchmarks/store_scale.py [--quick] [--json PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.measure import (  # noqa: E402
    growth_args,
    memory_growth,
    print_table,
    sampled_child,
    save_json,
)
from benchmarks.scale_data import D, clustered_npy, same_culture_dst  # noqa: E402

ITEMS_PER_CULTURE = 100
DEGREE = 10
BLOCK = 50_000
SIZES = {"full": [100_000, 1_000_000], "quick": [25_000, 100_000]}


def write_graph(root: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """The graph stage's output for N synthetic text items and N / 10 images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray.graph import build as gb
    from culturesim_ray.layout import GraphLayout

    layout = GraphLayout(str(root))
    rng = np.random.default_rng(seed)
    c = max(1, n // ITEMS_PER_CULTURE)
    edges = 0
    n_img = n // 10
    for m, count, d in (("text", n, D), ("image", n_img, 64)):
        Path(layout.edges(m)).mkdir(parents=True)
        culture = np.sort(rng.integers(0, c, count))
        clustered_npy(layout.x(m), culture, c, d, rng, BLOCK)
        pq.write_table(pa.table({
            "item_id": [f"{m}-{i:09d}" for i in range(count)],
            "culture": [f"culture_{k:06d}" for k in culture],
            "themes": [["a"] if i % 2 else [] for i in range(count)],
            "artifact_id": pa.nulls(count, pa.string())}, schema=gb.ITEMS_SCHEMA),
            layout.items(m))
        for a in range(0, count, BLOCK):  # kNN edges within the modality, one file a block
            src = np.repeat(np.arange(a, min(a + BLOCK, count)), DEGREE)
            dst = same_culture_dst(culture, c, src, rng)
            pq.write_table(gb.edges_table(src, dst, rng.random(len(src)).astype(np.float32),
                                          gb.KNN_RELATION, m),
                           f"{layout.edges(m)}/knn-{a // BLOCK:05d}.parquet")
            edges += len(src)
    img = np.arange(n_img)
    txt = rng.integers(0, n, n_img)
    for src_m, dst_m, s, d in (("text", "image", txt, img), ("image", "text", img, txt)):
        pq.write_table(gb.edges_table(s, d, np.ones(len(s), np.float32), "depicts", src_m),
                       f"{layout.edges(dst_m)}/relations.parquet")
        edges += len(s)
    meta = {"n": n, "images": n_img, "cultures": c, "edges": edges}
    Path(layout.manifest).write_text(json.dumps({"modalities": {"text": {}, "image": {}}}))
    (root / "meta.json").write_text(json.dumps(meta))
    return meta


CHILD = r"""
import json, sys, time
from culturesim_ray.training.store import write_store
t = time.perf_counter()
meta = write_store(sys.argv[1], sys.argv[2], 0.2, 0, 0.1, 4096, True)
print(json.dumps({"store_s": time.perf_counter() - t, "held": meta["held"].num_rows,
                  "counts": meta["counts"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    growth_args(ap)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="store_scale_"))
    rows = []
    try:
        for n in SIZES["quick" if args.quick else "full"]:
            data = work / f"graph_{n}"
            if not (data / "meta.json").exists():
                shutil.rmtree(data, ignore_errors=True)
                write_graph(data, n)
            meta = json.loads((data / "meta.json").read_text())
            out = work / f"store_{n}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            res = sampled_child(CHILD, [str(data), str(out)], str(out), args.interval,
                                args.timeout, what="the store task")
            shutil.rmtree(out, ignore_errors=True)
            rows.append({"n": n, **{k: meta[k] for k in ("images", "cultures", "edges")},
                         "store_s": round(res["store_s"], 1), "counts": res["counts"],
                         **{k: res[k] for k in ("wall_s", "peak_rss_mb", "peak_anonymous_mb")}})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, [("text items", "n", ","), ("edges", "edges", ","),
                       ("store s", "store_s", ".1f"), ("peak RSS MB", "peak_rss_mb", ""),
                       ("peak anon MB", "peak_anonymous_mb", "")])
    result = {"sizes": rows, "d": D, **memory_growth(rows, "store_s")}
    save_json(args.json, result)


if __name__ == "__main__":
    main()
