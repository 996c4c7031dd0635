"""The item graph stage's kernels and its on-disk contract (pure: numpy, faiss, pyarrow).

Each modality's kNN graph is built from a FAISS inner-product index over the
L2-normalised vectors (so scores are cosines): exact `IndexFlatIP` below
`ivf_min` items, `IndexIVFFlat` above it (nlist ~ 8 sqrt(n) lists, `nprobe`
of them searched per query), on the GPU when faiss-gpu sees one. The index is
built once, serialised to a uint8 array, and searched by row blocks
(`search_block`), each block independent of the others. What IVF loses is
measured, not hidden: `sample_recall` compares it with an exact search over
every row on a random sample of rows.

On disk (`culturesim_ray.layout.GraphLayout`), per modality m::

    ROOT/<m>/x.npy            float32 (N_m, d), the raw vectors, rows in items order
    ROOT/<m>/items.parquet    item_id, culture, themes (list<str>), artifact_id
    ROOT/<m>/edges/*.parquet  every edge INTO m: src, dst, weight, relation, src_modality

kNN edges (relation "knn") are directed query -> neighbour as searched: dst is
the query row, src its neighbour, weight the cosine; consumers symmetrise and
coalesce. Artifact and relations-file edges are stored both ways.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from culturesim_ray import io
from culturesim_ray.layout import GraphLayout

if TYPE_CHECKING:
    from culturesim_ray.graph.hetero import Relations

KNN_RELATION = "knn"
EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("weight", pa.float32()),
                         ("relation", pa.string()), ("src_modality", pa.string())])
ITEMS_SCHEMA = pa.schema([("item_id", pa.string()), ("culture", pa.string()),
                          ("themes", pa.list_(pa.string())), ("artifact_id", pa.string())])


@dataclass(frozen=True)
class GraphConfig:
    """Settings of the graph stage.

    k: neighbours per item (default 10); ivf_min: items from which IVF replaces
    the exact flat index (50,000); nlist: IVF lists (None: ~8 sqrt(n)); nprobe:
    lists searched per query (16); block_rows: rows per search task (50,000);
    train_sample: IVF training rows at most (100,000); recall_sample: rows whose
    recall is measured (2,000); seed: sampling and k-means seed;
    num_cpus_per_task: Ray CPUs per task."""

    k: int = 10
    ivf_min: int = 50_000
    nlist: int | None = None
    nprobe: int = 16
    block_rows: int = 50_000
    train_sample: int = 100_000
    recall_sample: int = 2_000
    seed: int = 0
    num_cpus_per_task: float = 1.0


# --- vectors and tables -------------------------------------------------------------

def normalize_rows(v: np.ndarray, copy: bool = True) -> np.ndarray:
    """(n, d) float32 copy with unit-length rows; zero rows stay zero. copy=False:
    a float32 array is normalised in place (e.g. a sample just gathered)."""
    v = np.array(v, dtype=np.float32, copy=True) if copy else np.asarray(v, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", v, v))[:, None]  # no (n, d) temporary
    np.divide(v, norms, out=v, where=norms > 0)
    return v


def items_table(table: pa.Table) -> pa.Table:
    """item_id, culture, themes (empty list where missing), artifact_id (null where missing)."""
    n = table.num_rows
    names = table.column_names
    themes = (pc.fill_null(table.column("themes"), pa.scalar([], pa.list_(pa.string())))
              if "themes" in names else pa.array([[]] * n, pa.list_(pa.string())))
    artifact = (table.column("artifact_id") if "artifact_id" in names
                else pa.nulls(n, pa.string()))
    return pa.table([table.column("item_id"), table.column("culture"), themes, artifact],
                    schema=ITEMS_SCHEMA)


def edges_table(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, relation: str,
                src_modality: str) -> pa.Table:
    """An edge file's table (EDGE_SCHEMA); one relation and source modality."""
    n = len(src)
    return pa.table([pa.array(np.asarray(src, np.int64)), pa.array(np.asarray(dst, np.int64)),
                     pa.array(np.asarray(weight, np.float32)),
                     pa.array([relation] * n, pa.string()),
                     pa.array([src_modality] * n, pa.string())], schema=EDGE_SCHEMA)


def relation_edges(rel: Relations) -> dict[str, dict[str, pa.Table]]:
    """dst modality -> {"artifact": table, "relations": table} of a `hetero.Relations`
    (edges already both ways), duplicates removed, weight 1; only non-empty tables."""
    from culturesim_ray.graph.hetero import ARTIFACT_RELATION

    parts: dict[str, dict[str, list[pa.Table]]] = {}
    for (src_m, relation, dst_m), pairs in rel.pair_arrays().items():
        p = np.unique(pairs, axis=0)
        kind = "artifact" if relation == ARTIFACT_RELATION else "relations"
        t = edges_table(p[:, 0], p[:, 1], np.ones(len(p), np.float32), relation, src_m)
        parts.setdefault(dst_m, {}).setdefault(kind, []).append(t)
    return {m: {kind: pa.concat_tables(ts) for kind, ts in kinds.items()}
            for m, kinds in parts.items()}


# --- the index ----------------------------------------------------------------------

def faiss_gpus() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def on_gpu(index: Any) -> bool:
    return type(index).__name__.startswith("Gpu")


def choose_index(n: int, ivf_min: int = 50_000, nlist: int | None = None
                 ) -> tuple[str, int | None]:
    """("flat", None) below ivf_min items, else ("ivf", nlist): the given nlist (at
    most n), or ~8 sqrt(n) clamped to [16, 65536] and to n / 39 (FAISS wants 39
    training points per list). 8 rather than FAISS's lower bound 4: finer lists
    follow a corpus's many small clusters (one per culture and topic) instead of
    merging them, so the lists probed hold more of the true neighbours for about
    the same points scanned (benchmarks/RESULTS.md, "Train scale")."""
    if n < ivf_min:
        return "flat", None
    if nlist is not None:
        return "ivf", max(1, min(int(nlist), n))
    auto = min(max(16, int(8 * math.sqrt(n))), 65_536, n // 39)
    return "ivf", max(1, auto)


def build_index(v_normalised: np.ndarray, kind: str, nlist: int | None = None,
                nprobe: int = 16, train_sample: int = 100_000, seed: int = 0,
                add_rows: int = 1 << 16, normalise: bool = False) -> Any:
    """An inner-product FAISS index over the rows of v_normalised (n, d) float32:
    IndexFlatIP, or IndexIVFFlat over an IndexFlatIP quantizer trained on a random
    sample of train_sample rows (at least 50 per list, at most n), probing
    max(nprobe, nlist / 64) lists. Moved to the GPU when faiss
    sees one (faiss-gpu only). Rows are added `add_rows` at a time. normalise: the
    rows are raw (e.g. a memory-mapped x.npy): each sample and chunk is normalised
    as it is read, so no normalised copy of the whole matrix is made."""
    import faiss

    v = v_normalised
    rows = normalize_rows if normalise else (
        lambda a: np.ascontiguousarray(a, dtype=np.float32))
    n, d = v.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        if not nlist:
            raise ValueError("an IVF index needs nlist")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, int(nlist), faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        # at least 50 training points per list: k-means with fewer gives poor lists
        # and loses recall (benchmarks/RESULTS.md, "Train scale")
        size = min(n, max(int(train_sample), 50 * int(nlist)))
        sample = np.sort(rng.choice(n, size=size, replace=False))
        points = np.asarray(v[sample], np.float32)  # a copy (fancy indexing)
        # normalised in place: no second copy of the sample
        index.train(normalize_rows(points, copy=False) if normalise else points)
        del points  # not held while the rows are added
        # at least nlist / 64 lists probed: a fixed nprobe loses recall as nlist grows
        # (benchmarks/RESULTS.md, "Train scale")
        index.nprobe = probes(nprobe, nlist)
    else:
        raise ValueError(f"index kind {kind!r}: expected 'flat' or 'ivf'")
    for r0 in range(0, n, add_rows):
        index.add(rows(v[r0:r0 + add_rows]))
    return to_gpu(index)


def to_gpu(index: Any) -> Any:
    """`index` on GPU 0 when faiss-gpu sees a GPU, else unchanged."""
    import faiss

    if faiss_gpus() == 0 or not hasattr(faiss, "StandardGpuResources") or on_gpu(index):
        return index
    res = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(res, 0, index)
    gpu.referenced_objects = [res]  # the resources must outlive the index
    return gpu


def serialize(index: Any) -> np.ndarray:
    """The index as a uint8 array (a GPU index is copied to the CPU first)."""
    import faiss

    if on_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index)


def save_index(index: Any, path: str) -> None:
    """The index to a file (a GPU index copied to the CPU first), written whole
    or not at all (a temporary file renamed)."""
    import faiss

    if on_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    tmp = path + ".tmp"
    faiss.write_index(index, tmp)
    os.replace(tmp, path)


def probes(nprobe: int, nlist: int) -> int:
    """The lists an IVF index of nlist lists searches: nprobe, at least nlist / 64."""
    return max(1, min(max(int(nprobe), int(nlist) // 64), int(nlist)))


def load_index(path: str) -> Any:
    """The index `save_index` wrote, its vectors memory-mapped (a flat index's and
    an IVF index's lists alike: the tasks of one node share the file's pages instead
    of each holding a copy); on the GPU when faiss-gpu sees one (a copy there)."""
    import faiss

    return to_gpu(faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC))


def deserialize(arr: np.ndarray) -> Any:
    """The CPU index of `serialize` (a read-only array, as from Ray, is fine)."""
    import faiss

    return faiss.deserialize_index(np.asarray(arr, dtype=np.uint8))


# --- search -------------------------------------------------------------------------

def neighbours(index: Any, v: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, sims), each (b, k): the k best hits of the normalised queries v (b, d)
    whose own row ids are `rows` (b,), searching k+1 and dropping the self hit and
    FAISS's -1 (missing) ids; a row with fewer hits is padded with -1 / nan."""
    b = len(v)
    if b == 0 or k <= 0:
        return np.zeros((b, max(k, 0)), np.int64), np.zeros((b, max(k, 0)), np.float32)
    kk = max(1, min(k + 1, int(index.ntotal)))
    sims, ids = index.search(np.ascontiguousarray(v, dtype=np.float32), kk)
    return _drop_self(ids, sims, rows, k)


def _drop_self(ids: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rank-ordered hits (b, kk) -> the first k that are neither the query's own row
    nor -1, padded with -1 / nan to (b, k)."""
    keep = (ids != np.asarray(rows, np.int64)[:, None]) & (ids >= 0)
    keep &= np.cumsum(keep, axis=1) <= k
    order = np.argsort(~keep, axis=1, kind="stable")  # kept hits first, in rank order
    ids = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)[:, :k]
    sims = np.take_along_axis(np.where(keep, sims, np.nan), order, axis=1)[:, :k]
    if ids.shape[1] < k:
        pad = ((0, 0), (0, k - ids.shape[1]))
        ids = np.pad(ids, pad, constant_values=-1)
        sims = np.pad(sims, pad, constant_values=np.nan)
    return ids.astype(np.int64), sims.astype(np.float32)


def search_block(index: Any, v_block: np.ndarray, row0: int, k: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed kNN edges of the normalised rows row0.. (v_block (b, d)): src the
    neighbour (int64), dst the query row (int64), weight the cosine (float32)."""
    rows = np.arange(row0, row0 + len(v_block), dtype=np.int64)
    ids, sims = neighbours(index, v_block, rows, k)
    keep = ids >= 0
    dst = np.broadcast_to(rows[:, None], ids.shape)[keep]
    return ids[keep], dst.astype(np.int64), sims[keep].astype(np.float32)


def exact_neighbours(x: np.ndarray, rows: np.ndarray, k: int, block_rows: int = 100_000
                     ) -> np.ndarray:
    """(len(rows), k) exact cosine neighbour ids of x[rows] over every row of x (n, d),
    raw or memory-mapped: IndexFlatIP over `block_rows` rows at a time, merged."""
    import faiss

    q = normalize_rows(x[rows])
    kk = k + 1
    best_s = np.full((len(rows), 0), -np.inf, np.float32)
    best_i = np.zeros((len(rows), 0), np.int64)
    for r0 in range(0, len(x), block_rows):
        block = faiss.IndexFlatIP(x.shape[1])
        block.add(normalize_rows(x[r0:r0 + block_rows]))
        s, i = block.search(q, min(kk, block.ntotal))
        s = np.where(i >= 0, s, -np.inf)
        best_s = np.concatenate([best_s, s], axis=1)
        best_i = np.concatenate([best_i, np.where(i >= 0, i + r0, -1)], axis=1)
        top = np.argsort(-best_s, axis=1, kind="stable")[:, :kk]
        best_s = np.take_along_axis(best_s, top, axis=1)
        best_i = np.take_along_axis(best_i, top, axis=1)
    return _drop_self(best_i, best_s, rows, k)[0]


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over rows of |approx ∩ exact| / |exact|, -1 ids ignored (rows without
    exact neighbours are left out; 1.0 when there are none)."""
    a = np.asarray(approx_ids, np.int64)
    e = np.asarray(exact_ids, np.int64)
    valid = e >= 0
    hits = ((a[:, :, None] == e[:, None, :]) & (a[:, :, None] >= 0)).any(axis=1) & valid
    denom = valid.sum(axis=1)
    rows = denom > 0
    if not rows.any():
        return 1.0
    return float(np.mean(hits.sum(axis=1)[rows] / denom[rows]))


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A sorted random sample of min(size, n) distinct rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(size), n), replace=False)).astype(np.int64)


def sample_recall(index: Any, x: np.ndarray, rows: np.ndarray, k: int,
                  block_rows: int = 100_000) -> float:
    """recall_at_k of `index` on the rows `rows` of x (raw, (n, d)) against exact search."""
    approx, _ = neighbours(index, normalize_rows(x[rows]), rows, k)
    return recall_at_k(approx, exact_neighbours(x, rows, k, block_rows))


# --- reading the graph back ------------------------------------------------------------

def read_edges(root: str, modality: str) -> pa.Table:
    """Every edge into `modality` (all its edge files concatenated, EDGE_SCHEMA)."""
    d = GraphLayout(root).edges(modality)
    if not os.path.isdir(d):
        return EDGE_SCHEMA.empty_table()
    files = sorted(f for f in os.listdir(d) if f.endswith(".parquet"))
    tables = [pq.read_table(os.path.join(d, f)).cast(EDGE_SCHEMA) for f in files]
    return pa.concat_tables(tables) if tables else EDGE_SCHEMA.empty_table()


def read_items(root: str, modality: str) -> pa.Table:
    """item_id, culture, themes, artifact_id of `modality`, in the rows of x.npy."""
    return io.read_table(GraphLayout(root).items(modality))


def open_x(root: str, modality: str) -> np.ndarray:
    """The (N, d) float32 raw vectors of `modality`, memory-mapped read-only."""
    return np.load(GraphLayout(root).x(modality), mmap_mode="r")
