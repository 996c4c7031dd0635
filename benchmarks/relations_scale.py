"""How the graph stage's relations-file task grows with the file's rows, in one run.

The graph stage turns an optional relations file (`src_item`, `dst_item`,
`relation`) into edges in one Ray task (`pipeline.graph._other_edges`): it reads
the file, looks up the ids it names among the embeddings' items, quarantines the
rows it cannot use, and writes the edges both ways. This measures the memory of
the process doing it as the file grows over a fixed corpus, so that what grows is
the file alone.

Data, synthetic: 100,000 text and 10,000 image items (their ids as the graph
stage's items.parquet holds them); a Parquet relations file of R rows, each a
random pair of items (a fifth of them text -> image, "depicts"; the rest text ->
text, "cites"), one row in 1,000 naming an item that is not in the corpus (a
row for the quarantine).

Per size, a fresh process runs the task's reading and edge building once
(`graph.hetero.read_relations` over the items tables, then
`graph.build.relation_edges`); the benchmark samples it every --interval s and
reports its peak RSS, its peak anonymous memory and the wall time. Ratios are
large / small. Run through `PYTHONPATH=<a checkout of older code>` (and a
--workdir outside the checkout) for a before / after.

Sizes: full 200,000 and 2,000,000 rows; --quick 50,000 and 500,000.

    python benchmarks/relations_scale.py [--quick] [--json PATH] [--workdir DIR]
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

ITEMS = {"text": 100_000, "image": 10_000}
SIZES = {"full": [200_000, 2_000_000], "quick": [50_000, 500_000]}


def item_ids(m: str, rows: np.ndarray) -> list[str]:
    return [f"{m}-{i:09d}" for i in rows.tolist()]


def write_items(root: Path) -> None:
    """Each modality's items table, as the graph stage writes its `item_id` and
    `artifact_id` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for m, n in ITEMS.items():
        pq.write_table(pa.table({"item_id": item_ids(m, np.arange(n)),
                                 "artifact_id": pa.nulls(n, pa.string())}),
                       root / f"items-{m}.parquet")


def write_relations(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` random pairs, written in blocks (this process stays small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([("src_item", pa.string()), ("dst_item", pa.string()),
                        ("relation", pa.string())])
    with pq.ParquetWriter(str(path), schema) as w:
        for a in range(0, rows, 100_000):
            n = min(100_000, rows - a)
            src = rng.integers(0, ITEMS["text"], n)
            to_image = rng.random(n) < 0.2
            dst = np.where(to_image, rng.integers(0, ITEMS["image"], n),
                           (src + 1 + rng.integers(0, ITEMS["text"] - 1, n)) % ITEMS["text"])
            dst_ids = [f"{'image' if img else 'text'}-{d:09d}"
                       for img, d in zip(to_image.tolist(), dst.tolist(), strict=True)]
            for i in range(0, n, 1_000):  # one row in 1,000: an item the corpus lacks
                dst_ids[i] = f"missing-{a + i}"
            w.write_table(pa.table({"src_item": item_ids("text", src), "dst_item": dst_ids,
                                    "relation": np.where(to_image, "depicts", "cites")},
                                   schema=schema))


CHILD = r"""
import json, sys, time
import pyarrow.parquet as pq
from culturesim_ray.graph import build
from culturesim_ray.graph.hetero import Relations, read_relations
root = sys.argv[1]
tables = {m: pq.read_table(f"{root}/items-{m}.parquet") for m in ("image", "text")}
t = time.perf_counter()
rel = read_relations(sys.argv[2], tables, Relations())
edges = build.relation_edges(rel)
print(json.dumps({"relations_s": time.perf_counter() - t, "quarantined": len(rel.quarantined),
                  "edges": sum(t.num_rows for kinds in edges.values() for t in kinds.values())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    growth_args(ap)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="relations_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        if not (work / "items-text.parquet").exists():
            write_items(work)
        for n in SIZES["quick" if args.quick else "full"]:
            path = work / f"relations-{n}.parquet"
            if not path.exists():
                write_relations(path, n)
            res = sampled_child(CHILD, [str(work), str(path)], str(work), args.interval,
                                args.timeout, what="the relations task")
            rows.append({"n": n, "relations_s": round(res["relations_s"], 1),
                         **{k: res[k] for k in ("edges", "quarantined", "wall_s", "peak_rss_mb",
                                                "peak_anonymous_mb")}})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, [("rows", "n", ","), ("edges", "edges", ","),
                       ("quarantined", "quarantined", ","), ("task s", "relations_s", ".1f"),
                       ("peak RSS MB", "peak_rss_mb", ""),
                       ("peak anon MB", "peak_anonymous_mb", "")])
    result = {"sizes": rows, "items": ITEMS, **memory_growth(rows, "relations_s", "rows")}
    save_json(args.json, result)


if __name__ == "__main__":
    main()
