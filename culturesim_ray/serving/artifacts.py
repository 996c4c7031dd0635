"""What a serving replica loads instead of rebuilding (pure: torch, numpy, faiss, pyarrow).

A Fusion replica answers a query as a new item node that receives messages
from its nearest corpus items, so it needs, per modality, every corpus item's
input state to each conv layer and an index over the items' normalised
vectors. The train job computes them once (`write_serving_state`, after
training) under TRAIN/serving/:

    <m>/layer-<i>.npy   float16 (N_m, hidden): the input states of conv layer i
                        (memory-mapped by the replica: start time and memory do not
                        grow with N until rows are read)
    <m>/index.faiss     FAISS inner-product index over the L2-normalised item
                        vectors: flat below `ivf_min` items, IVF above
    <m>/culture.npy     int32 (N_m,): each item's culture, a position in the
                        manifest's `cultures` (memory-mapped; the set-level query
                        score of `ops.query_score` reads the shortlist's rows)
    <m>/item_ids.arrow  the items' ids in row order (an Arrow IPC file, memory-
                        mapped: an answer names the item that drew a culture in)
    <m>/abtt_*.npy      for the modalities the query mix debiases (`QueryMix.abtt`):
                        the corpus mean and dominant directions, and each item's
                        coordinates (`ops.abtt.item_coords`, memory-mapped)
    manifest.json       modalities, item counts, layers, index kinds, the digest of
                        the model weights they were computed with, the culture
                        names, the query mix (`ops.query_score.QueryMix`), and
                        the theme gate's fit report (`record_gate`)

`load_serving_state` refuses state computed with other weights (a retrained
model in the same directory) by that digest. `ArrowNeighbors` serves the
all-pairs neighbours from an Arrow table sorted by (theme, culture) with
row offsets found by binary search, not Python dicts of rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from culturesim_ray import io
from culturesim_ray.models.culturesim import CultureSim, ModalityGraph
from culturesim_ray.ops.abtt import Abtt, fit_items

MANIFEST = "manifest.json"
ITEM_IDS = "item_ids.arrow"


def weights_digest(path: str) -> str:
    """sha256 of a weights file (model.pt), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


BLOCK = 65_536  # destination items per block of the full-corpus forward


@torch.inference_mode()
def layer_states(model: CultureSim, graphs: dict[str, ModalityGraph]) -> dict[str, list[Any]]:
    """Per modality, the input states of each conv layer for every corpus item
    (the full-graph forward, in blocks of destination items; the corpus does not
    change when a query arrives)."""
    device = next(model.parameters()).device
    model.eval()
    graphs = {m: g.to(device) for m, g in graphs.items() if m in model.modalities}
    return {m: s[:-1] for m, s in model.layer_inputs(graphs, block=BLOCK).items()}


NPROBE = 32  # IVF lists a replica's neighbour search probes (at least nlist / 64)


def item_index(x: np.ndarray, ivf_min: int = 50_000, nprobe: int = NPROBE) -> Any:
    """The replica's neighbour index over the normalised rows of x (normalised a chunk
    at a time: no normalised copy of x): exact below ivf_min, IVF above."""
    from culturesim_ray.graph import build as gb

    kind, nlist = gb.choose_index(len(x), ivf_min)
    return gb.build_index(x, kind, nlist, nprobe=nprobe, train_sample=100_000, seed=0,
                          normalise=True)


def graph_index(path: str, n: int, dim: int, nprobe: int = NPROBE) -> Any:
    """The graph stage's index over the same rows (`graph.build.save_index`: the
    L2-normalised item vectors, built as `item_index` builds one), its vectors
    memory-mapped, searching `nprobe` lists as `item_index`'s; a ValueError when it
    holds other rows than the n x dim the serving state is for."""
    import faiss

    from culturesim_ray.graph import build as gb

    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    if index.ntotal != n or index.d != dim:
        raise ValueError(f"{path}: the graph's index holds {index.ntotal} vectors of "
                         f"dimension {index.d}, the serving state is for {n} x {dim}")
    if hasattr(index, "nprobe"):
        index.nprobe = gb.probes(nprobe, index.nlist)
    return index


def write_serving_state(model: CultureSim, graphs: dict[str, ModalityGraph], root: str,
                        model_path: str, ivf_min: int = 50_000,
                        cultures: list[str] | None = None,
                        query_mix: dict[str, Any] | None = None,
                        item_ids: dict[str, pa.Array | pa.ChunkedArray] | None = None,
                        ) -> dict[str, Any]:
    """Compute and write the replica's state (module docstring) from graphs held in
    memory (`write_states` writes it from states already computed); returns the
    manifest. cultures: the names the graphs' culture indices point into; query_mix:
    the run's `QueryMix` (`TrainConfig.query`) as a dict (None: the plain general
    cosine); item_ids: per modality, the items' ids in the graphs' row order (None:
    none written)."""
    states = layer_states(model, graphs)
    return write_states({m: [t.float().cpu().numpy() for t in s] for m, s in states.items()},
                        {m: graphs[m].x.cpu().numpy() for m in states},
                        {m: graphs[m].culture.cpu().numpy() for m in states}, root, model_path,
                        ivf_min, cultures, query_mix, item_ids)


def write_states(states: dict[str, list[np.ndarray]], x: dict[str, np.ndarray],
                 culture: dict[str, np.ndarray], root: str, model_path: str,
                 ivf_min: int = 50_000, cultures: list[str] | None = None,
                 query_mix: dict[str, Any] | None = None,
                 item_ids: dict[str, pa.Array | pa.ChunkedArray] | None = None,
                 indexes: dict[str, str] | None = None, block: int = BLOCK) -> dict[str, Any]:
    """`write_serving_state` from per modality the input states of each conv layer
    (float32 arrays or memory maps, N_m x hidden), the item vectors x and culture
    indices (arrays or memory maps: every file is written `block` rows at a time).
    indexes: per modality, the graph stage's index file over the same rows
    (`graph_index`: copied, not rebuilt; a modality without one gets `item_index`)."""
    import faiss

    manifest: dict[str, Any] = {"modalities": {}, "model_sha256": weights_digest(model_path),
                                "cultures": list(cultures) if cultures is not None else None,
                                "query_mix": query_mix}
    for m, layers in states.items():
        d = os.path.join(root, m)
        os.makedirs(d, exist_ok=True)
        n = len(x[m])
        for i, s in enumerate(layers):
            out = np.lib.format.open_memmap(os.path.join(d, f"layer-{i}.npy"), "w+", np.float16,
                                            s.shape)
            for a in range(0, n, block):
                out[a:a + block] = s[a:a + block]
            out.flush()
            del out
        if cultures is not None:
            np.save(os.path.join(d, "culture.npy"), np.asarray(culture[m], np.int32))
        if item_ids is not None and m in item_ids:
            write_item_ids(item_ids[m], n, os.path.join(d, ITEM_IDS))
        directions = write_abtt(x[m], d, m in (query_mix or {}).get("abtt", ()))
        index = (graph_index(indexes[m], n, int(x[m].shape[1])) if m in (indexes or {})
                 else item_index(x[m], ivf_min))
        faiss.write_index(index, os.path.join(d, "index.faiss"))
        manifest["modalities"][m] = {"items": n, "layers": len(layers),
                                     "hidden": int(layers[0].shape[1]),
                                     "index": "ivf" if hasattr(index, "nprobe") else "flat",
                                     "abtt_directions": directions}
    with open(os.path.join(root, MANIFEST), "w") as fh:
        json.dump(manifest, fh, indent=2)
    return manifest


def write_abtt(x: np.ndarray, d: str, wanted: bool) -> int:
    """Under a modality's folder d, the dominant directions of its item vectors x and
    every item's coordinates (`ops.abtt`) when `wanted` (and x has 2 items or more),
    else none (an earlier state's removed); returns the number of directions."""
    parts = {p: os.path.join(d, f"abtt_{p}.npy") for p in ("mean", "basis", "coords")}
    if not wanted or len(x) < 2:
        for path in parts.values():
            if os.path.exists(path):
                os.remove(path)
        return 0
    abtt, coords = fit_items(x)
    np.save(parts["mean"], abtt.mean)
    np.save(parts["basis"], abtt.basis)
    np.save(parts["coords"], coords)
    return int(abtt.basis.shape[1])


def write_item_ids(ids: pa.Array | pa.ChunkedArray, n: int, path: str) -> None:
    """The ids as one string column of an uncompressed Arrow IPC file (what
    `read_item_ids` memory-maps); n: the rows the modality's states have."""
    if len(ids) != n:
        raise ValueError(f"{path}: {len(ids)} item ids for {n} items")
    table = pa.table({"item_id": pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids})
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_item_ids(path: str) -> pa.ChunkedArray:
    """The ids of `write_item_ids`, memory-mapped (nothing read until a row is)."""
    return pa.ipc.open_file(pa.memory_map(path, "r")).read_all().column("item_id")


def record_gate(root: str, model_path: str, report: dict[str, Any]) -> None:
    """After the theme gate is fitted into `model_path`'s weights (`serving.gate`): the
    serving manifest's weights digest follows them (the layer states and indexes do not
    read the gate, so they stay valid) and it records the gate's fit report."""
    path = os.path.join(root, MANIFEST)
    with open(path) as fh:
        manifest = json.load(fh)
    manifest["model_sha256"] = weights_digest(model_path)
    manifest["gate"] = report
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(tmp, path)


@dataclass
class ServingState:
    """layers[m][i]: (N_m, hidden) float16 memory maps; indexes[m]: FAISS indexes;
    item_culture[m]: (N_m,) culture positions in `manifest["cultures"]`; item_ids[m]:
    the items' ids; abtt[m]: the dominant directions and the items' coordinates
    (`ops.abtt`) (each empty for state written before it was)."""

    layers: dict[str, list[np.ndarray]]
    indexes: dict[str, Any]
    manifest: dict[str, Any]
    item_culture: dict[str, np.ndarray] = field(default_factory=dict)
    item_ids: dict[str, pa.ChunkedArray] = field(default_factory=dict)
    abtt: dict[str, tuple[Abtt, np.ndarray]] = field(default_factory=dict)


class StaleStateError(RuntimeError):
    """The serving state was computed with other model weights."""


def has_serving_state(root: str) -> bool:
    return os.path.exists(os.path.join(root, MANIFEST))


def load_serving_state(root: str, model_path: str) -> ServingState:
    """Memory-map the layer states and read the indexes written by `write_serving_state`."""
    import faiss

    with open(os.path.join(root, MANIFEST)) as fh:
        manifest = json.load(fh)
    have = weights_digest(model_path)
    if manifest.get("model_sha256") != have:
        raise StaleStateError(f"{root}: serving state was computed with other weights "
                              f"({manifest.get('model_sha256', '?')[:12]} vs {have[:12]} of "
                              f"{model_path}); rerun the train job")
    layers, indexes, item_culture, item_ids, abtt = {}, {}, {}, {}, {}
    for m, info in manifest["modalities"].items():
        d = os.path.join(root, m)
        if manifest.get("cultures") is not None and os.path.exists(os.path.join(d, "culture.npy")):
            item_culture[m] = np.load(os.path.join(d, "culture.npy"), mmap_mode="r")
        if os.path.exists(os.path.join(d, ITEM_IDS)):
            item_ids[m] = read_item_ids(os.path.join(d, ITEM_IDS))
        if info.get("abtt_directions"):
            abtt[m] = (Abtt(np.load(os.path.join(d, "abtt_mean.npy")),
                            np.load(os.path.join(d, "abtt_basis.npy"))),
                       np.load(os.path.join(d, "abtt_coords.npy"), mmap_mode="r"))
        layers[m] = [np.load(os.path.join(d, f"layer-{i}.npy"), mmap_mode="r")
                     for i in range(info["layers"])]
        # an IVF index's inverted lists are memory-mapped, not read (start time flat in N)
        flags = (faiss.IO_FLAG_MMAP | getattr(faiss, "IO_FLAG_READ_ONLY", 0)
                 if info["index"] == "ivf" else 0)
        indexes[m] = faiss.read_index(os.path.join(d, "index.faiss"), flags)
    return ServingState(layers, indexes, manifest, item_culture, item_ids, abtt)


def rows_of(states: Any, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` of a layer's states (a tensor, or a float16 memory map) as float32
    on idx's device."""
    if isinstance(states, torch.Tensor):
        return states[idx]
    rows = idx.cpu().numpy()
    order = np.argsort(rows)  # read the map in ascending row order
    got = np.asarray(states[rows[order]], np.float32)[np.argsort(order)]
    return torch.from_numpy(got).to(idx.device)


class ArrowNeighbors:
    """A culture's precomputed top-k neighbours per theme (the all-pairs output), as
    an Arrow table sorted by (theme, culture_a, rank); a key's rows are found by
    binary search over the sorted distinct keys (no per-row Python objects)."""

    def __init__(self, pairs_path: str) -> None:
        table = io.read_table(pairs_path).select(
            ["theme", "culture_a", "culture_b", "score", "rank", "similarity"])
        self._t = table.sort_by([("theme", "ascending"), ("culture_a", "ascending"),
                                 ("rank", "ascending")])
        theme = self._t.column("theme").combine_chunks()
        culture = self._t.column("culture_a").combine_chunks()
        key = pc.binary_join_element_wise(theme, culture, "\x00")
        n = len(key)
        change = (pc.not_equal(key[1:], key[:-1]).to_numpy(zero_copy_only=False)
                  if n > 1 else np.zeros(0, bool))
        self._starts = np.flatnonzero(np.r_[True, change]) if n else np.zeros(0, np.int64)
        self._ends = np.r_[self._starts[1:], n].astype(np.int64)
        self._keys = np.array(key.take(pa.array(self._starts)).to_pylist(), dtype=object)
        self.themes = sorted(pc.unique(theme).to_pylist())
        self.cultures = sorted(pc.unique(culture).to_pylist())

    def rows(self, theme: str, culture: str, k: int) -> list[dict[str, Any]] | None:
        """Up to k neighbour rows (culture, score, rank, similarity); None: unknown key."""
        key = f"{theme}\x00{culture}"
        i = int(np.searchsorted(self._keys, key))
        if i >= len(self._keys) or self._keys[i] != key:
            return None
        s, e = int(self._starts[i]), int(self._ends[i])
        part = self._t.slice(s, min(e - s, k))
        return [{"culture": b, "score": float(sc), "rank": int(r), "similarity": sim}
                for b, sc, r, sim in zip(part.column("culture_b").to_pylist(),
                                         part.column("score").to_pylist(),
                                         part.column("rank").to_pylist(),
                                         part.column("similarity").to_pylist(), strict=True)]
