"""How the train job's export grows with the items, in one run.

After training, the train job applies the model to every item of the corpus
(`pipeline.train.export_corpus`, in one Ray task): every item's state at every
layer gives the culture embeddings (culture_embeddings.parquet) and the serving
state (`serving.artifacts`: float16 layer states, the item index, culture ids).
This measures the memory of the process doing it as N grows.

Data, synthetic (no encoder, no training: the export's cost does not depend on
the weights): N items of one modality over N / 100 cultures, d = 384 (MiniLM's
width), each its culture's centre plus noise, two themes; each item linked to 10
random items of its culture (symmetrised: about 20 edges an item). They are
written as the train job's store is (`.npy` files the export memory-maps: the
vectors, cultures, themes, the CSR graph), with the graph stage's index over the
vectors (IVF from 50,000 items, built as the graph stage builds it; the export
copies it into the serving state). The model: the train job's default
architecture (hidden 128, 2 SAGE layers, raw residual 0.9, theme raw slots),
initialised with seed 0.

Per size, a fresh process runs the export once; the benchmark samples it every
--interval s and reports its peak RSS and its peak anonymous memory (RSS less
the pages of memory-mapped files, which the kernel can drop and the node's page
cache shares), and the wall time. Ratios are large / small.

The code before the streamed export (commit 9d017f2 and earlier) has no
`export_corpus`; run through `PYTHONPATH=<a checkout of it>` the child runs that
code's export instead (the whole corpus as in-memory graphs, `export_heads` and
`write_serving_state`, which builds its own item index), for the before / after
rows in RESULTS.

Sizes: full 100,000 and 400,000 items; --quick 25,000 and 100,000.

    python benchmarks/export_scale.py [--quick] [--json PATH] [--workdir DIR]
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
SIZES = {"full": [100_000, 400_000], "quick": [25_000, 100_000]}


def write_store(root: Path, n: int, seed: int = 0) -> None:
    """The store's arrays for N synthetic items (module docstring) under root."""
    from culturesim_ray.graph import build as gb
    from culturesim_ray.graph.sample import CSRGraph

    rng = np.random.default_rng(seed)
    c = max(1, n // ITEMS_PER_CULTURE)
    culture = np.sort(rng.integers(0, c, n))
    clustered_npy(root / "x.npy", culture, c, D, rng)
    src = np.repeat(np.arange(n), DEGREE)
    dst = same_culture_dst(culture, c, src, rng)
    csr = CSRGraph.from_edges(src, dst, n, symmetric=True)
    for part in ("indptr", "indices", "weights", "relations"):
        np.save(root / f"{part}.npy", getattr(csr, part))
    x = np.load(root / "x.npy", mmap_mode="r")
    kind, nlist = gb.choose_index(n)  # the graph stage's index, as it builds it
    gb.save_index(gb.build_index(x, kind, nlist, normalise=True), str(root / "index.faiss"))
    np.save(root / "culture.npy", culture.astype(np.int64))
    np.save(root / "themes.npy", rng.random((n, 2)) < 0.5)
    (root / "meta.json").write_text(json.dumps({"n": n, "cultures": c,
                                                "edges": int(csr.num_edges)}))


CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from culturesim_ray.graph.sample import CSRGraph
from culturesim_ray.layout import TrainLayout
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.pipeline import train as pt
from culturesim_ray.training.batch import ItemStore

torch.set_num_threads(1)
data, out = sys.argv[1], sys.argv[2]
meta = json.load(open(data + "/meta.json"))
load = lambda name: np.load(f"{data}/{name}.npy", mmap_mode="r")
csr = CSRGraph(*(load(p) for p in ("indptr", "indices", "weights", "relations")))
store = ItemStore(["text"], {"text": load("x")}, {"text": np.asarray(load("culture"))},
                  {"text": load("themes")}, csr, ["similar"],
                  [f"c{i}" for i in range(meta["cultures"])], ["a", "b"])
torch.manual_seed(0)
model = CultureSim(CultureSimConfig(store.in_dims, ["a", "b"], raw_weight=0.9,
                                    map_learned=0.1, theme_raw=True))
mean = np.zeros(store.x["text"].shape[1])
for a in range(0, len(store.x["text"]), 65536):
    mean += np.asarray(store.x["text"][a:a + 65536], np.float64).sum(0)
model.set_center_means({"text": torch.from_numpy(mean / len(store.x["text"])).float()})
model.eval()
layout = TrainLayout(out)
torch.save(model.state_dict(), layout.model)
t = time.perf_counter()
if hasattr(pt, "export_corpus"):
    code = "streamed"
    table = pt.export_corpus(model, store, layout, indexes={"text": data + "/index.faiss"})
else:  # the code before the streamed export: the whole corpus as in-memory graphs
    from culturesim_ray import io
    from culturesim_ray.serving.artifacts import write_serving_state
    from culturesim_ray.training.batch import graphs_of
    from culturesim_ray.training.data import TrainingData
    code = "in-memory"
    graphs = graphs_of(store)
    table = pt.export_culture_embeddings(model, TrainingData(graphs, store.cultures,
                                                             store.theme_names))
    io.write_table(table, layout.culture_embeddings)
    write_serving_state(model, graphs, layout.serving, layout.model, cultures=store.cultures)
print(json.dumps({"code": code, "export_s": time.perf_counter() - t, "rows": table.num_rows,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(data: Path, out: Path, interval: float, timeout: float) -> dict[str, Any]:
    """The export in a child process, its peak RSS and anonymous memory sampled."""
    out.mkdir(parents=True, exist_ok=True)
    res = sampled_child(CHILD, [str(data), str(out)], str(out), interval, timeout,
                        what="the export")
    return {"code": res["code"], "wall_s": res["wall_s"],
            "export_s": round(res["export_s"], 1), "culture_rows": res["rows"],
            "peak_rss_mb": res["peak_rss_mb"], "peak_anonymous_mb": res["peak_anonymous_mb"],
            "ru_maxrss_mb": round(res["ru_maxrss_mb"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    growth_args(ap)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="export_scale_"))
    rows = []
    try:
        for n in SIZES["quick" if args.quick else "full"]:
            data = work / f"store_{n}"
            if not (data / "meta.json").exists():
                data.mkdir(parents=True, exist_ok=True)
                write_store(data, n)
            meta = json.loads((data / "meta.json").read_text())
            shutil.rmtree(work / f"run_{n}", ignore_errors=True)
            row = {"n": n, "cultures": meta["cultures"], "edges": meta["edges"],
                   **measure(data, work / f"run_{n}", args.interval, args.timeout)}
            shutil.rmtree(work / f"run_{n}", ignore_errors=True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, [("items", "n", ","), ("cultures", "cultures", ","), ("code", "code", ""),
                       ("export s", "export_s", ".1f"), ("peak RSS MB", "peak_rss_mb", ""),
                       ("peak anon MB", "peak_anonymous_mb", "")])
    result = {"sizes": rows, "d": D, **memory_growth(rows, "export_s")}
    save_json(args.json, result)


if __name__ == "__main__":
    main()
