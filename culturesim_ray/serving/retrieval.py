"""Stage 1 of the service: a query's general embedding -> its top-k cultures (pure: no ray).

`Retriever` holds the cultures' general embeddings (a FAISS inner-product index,
a GPU index when faiss sees one) and, per modality, the view a one-modality query
is compared with (`modality_view`: one float32 matrix per modality, which both the
plain top-k and the parts of the query score read, so each view is held once).
`QueryRanker` ranks one-item queries by the query score of `ops.query_score` (the
raw and learned parts of the general cosine, and the culture's nearest items).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from torch import Tensor

from culturesim_ray import runs
from culturesim_ray.layout import TrainLayout
from culturesim_ray.ops.abtt import Abtt, rescore
from culturesim_ray.ops.query_score import (
    QueryMix,
    mix_scores,
    nearest_item_scores,
    nearest_items,
)
from culturesim_ray.serving.artifacts import normalise


class QueryFuser(Protocol):
    """What `QueryRanker` reads of the fusion (`predictor.FusionPredictor`): the
    model, the corpus items' cultures and nearest-item search, and the general
    embedding of fused queries. A protocol, so retrieval does not import the predictor."""

    model: Any
    cultures: list[str] | None
    item_culture: dict[str, np.ndarray]
    query_mix: QueryMix
    abtt: dict[str, tuple[Abtt, np.ndarray]]

    def general(self, fused: Tensor, modality: str | None = None,
                vectors: np.ndarray | None = None) -> np.ndarray: ...

    def search(self, modality: str, vectors: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]: ...


class Retriever:
    """Top-k cultures by cosine: over the general embeddings (a FAISS inner-product
    index) or, for a one-modality query, over that modality's view (`views`)."""

    def __init__(self, cultures: list[str], vectors: np.ndarray, use_gpu: bool = False,
                 slots: dict[str, tuple[int, int]] | None = None) -> None:
        """slots: modality -> (start, stop) columns of the raw residual (see
        `models.culturesim`); a query of modality m is then compared with each
        culture's m slot (rescaled to the weight a one-modality culture gives it)
        plus the learned part, so cultures with more modalities are not ranked
        down for a one-modality query. None: plain cosine."""
        import faiss

        if len(cultures) != len(vectors) or not cultures:
            raise ValueError(f"{len(cultures)} cultures but {len(vectors)} vectors")
        self.cultures = list(cultures)
        self._gpu = use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if self._gpu:
            self._gpu_res = faiss.StandardGpuResources()
        vectors = normalise(vectors)
        index: Any = faiss.IndexFlatIP(vectors.shape[1])
        if self._gpu:
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.index = index
        # modality -> (C, D) view of the cultures (`modality_view`)
        self.views: dict[str, np.ndarray] = {m: modality_view(vectors, slots, m)
                                             for m in slots or {}}
        self.raw_end = max(b for _, b in slots.values()) if slots else 0

    @classmethod
    def from_run(cls, train_dir: str, use_gpu: bool = False) -> Retriever:
        """Over the general head of a train run's culture_embeddings.parquet."""
        cultures, general = runs.read_culture_embeddings(
            TrainLayout(train_dir).culture_embeddings)["general"]
        return cls(cultures, general, use_gpu, runs.raw_slots(train_dir))

    def topk(self, queries: np.ndarray, k: int,
             modality: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and culture positions, best first."""
        k = min(k, len(self.cultures))
        if modality in self.views:
            return top_k(normalise(queries) @ self.views[modality].T, k)
        return self.index.search(normalise(queries), k)

    def parts(self, queries: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(B, C) raw and learned parts of the general cosine of one-`modality` queries
        with every culture (their sum is what `topk` ranks by); needs the raw slots."""
        if modality not in self.views:
            raise ValueError(f"no raw slot for {modality!r} (slots: {sorted(self.views)})")
        q, v, r = normalise(queries), self.views[modality], self.raw_end
        return q[:, :r] @ v[:, :r].T, q[:, r:] @ v[:, r:].T


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) float32 scores and column positions of each row's k largest scores,
    best first, equal scores by position, without sorting all C columns (which of
    several scores tied at the k-th place enter is left to the partition)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((top, -np.take_along_axis(scores, top, axis=1)), axis=1)
    pos = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(scores, pos, axis=1).astype(np.float32), pos


def modality_view(vectors: np.ndarray, slots: dict[str, tuple[int, int]],
                  modality: str) -> np.ndarray:
    """Culture general embeddings as a one-`modality` query sees them: the other
    modalities' raw slots zeroed and this one rescaled to the norm the whole raw part
    has (sqrt(w)); a culture without this modality keeps only its learned part."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    starts = [a for a, _ in slots.values()]
    raw_end = max(b for _, b in slots.values())
    raw_norm = np.linalg.norm(out[:, min(starts):raw_end], axis=1, keepdims=True)
    a, b = slots[modality]
    part = out[:, a:b].copy()
    norm = np.linalg.norm(part, axis=1, keepdims=True)
    out[:, min(starts):raw_end] = 0.0
    out[:, a:b] = np.where(norm > 0, part / np.maximum(norm, 1e-12) * raw_norm, 0.0)
    return out


Shortlist = tuple[np.ndarray, np.ndarray, np.ndarray]  # cosines, item rows, cultures (B, K)


class QueryRanker:
    """Stage 1: one-item queries -> their top-k cultures by the query score of
    `ops.query_score` (the raw and learned parts of the general cosine, and the
    set-level score of the culture's nearest items), with the run's mix
    (`TrainConfig.query`, read from the serving state; `mix` overrides it). A
    cross-modal query, a model without raw residual, or a run trained before the
    mix existed is ranked by the plain general cosine."""

    def __init__(self, fusion: QueryFuser, retriever: Retriever,
                 mix: QueryMix | None = None) -> None:
        self.fusion, self.retriever = fusion, retriever
        self.mix = mix if mix is not None else fusion.query_mix
        self.raw_weight = float(fusion.model.cfg.raw_weight)
        pos = {c: i for i, c in enumerate(retriever.cultures)}
        # fusion's culture positions -> the retriever's (-1: a culture it lacks)
        self._to_retriever = (np.array([pos.get(c, -1) for c in fusion.cultures] + [-1])
                              if fusion.cultures else None)
        self._mix_of: dict[str, QueryMix] = {}

    def mix_for(self, modality: str) -> QueryMix:
        """The mix a query of `modality` is ranked with (resolved once per modality)."""
        if modality not in self._mix_of:
            self._mix_of[modality] = self.mix.for_modality(modality)
        return self._mix_of[modality]

    def mixed(self, modality: str, target: str) -> bool:
        return (not self.mix_for(modality).plain and self.raw_weight > 0
                and target == modality and target in self.retriever.views)

    def score_parts(self, fused: Tensor, modality: str, vectors: np.ndarray,
                    mix: QueryMix | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, C) raw part, learned part, nearest-items score (None: unavailable), for
        `mix` (default: the ranker's mix for this modality)."""
        return self._parts(fused, modality, vectors,
                           mix if mix is not None else self.mix_for(modality))[:3]

    def _parts(self, fused: Tensor, modality: str, vectors: np.ndarray, mix: QueryMix
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Shortlist | None]:
        q = self.fusion.general(fused, modality, vectors)
        raw, learned = self.retriever.parts(q, modality)
        short = self.shortlist(modality, vectors, mix) if mix.nearest > 0 else None
        if short is None:
            return raw, learned, None, None
        near = nearest_item_scores(short[0], short[2], len(self.retriever.cultures), mix.m)
        return raw, learned, near, short

    def shortlist(self, modality: str, vectors: np.ndarray, mix: QueryMix
                  ) -> Shortlist | None:
        """The queries' `mix.shortlist` nearest corpus items of their own modality:
        (B, K) similarities (cosines; with the corpus's dominant directions removed
        where the mix debiases this modality and the state has them: `ops.abtt`),
        item rows and the items' cultures as the retriever's positions (-1: none);
        None where the serving state has no item cultures."""
        cult = self.fusion.item_culture.get(modality)
        if cult is None or self._to_retriever is None:
            return None
        sims, items = self.fusion.search(modality, vectors, mix.shortlist)
        rows = np.maximum(items, 0)
        c = np.where(items >= 0, np.asarray(cult)[rows], -1)
        debias = self.fusion.abtt.get(modality) if mix.debiased(modality) else None
        if debias is not None:
            abtt, coords = debias
            sims = rescore(sims, np.asarray(coords[rows.reshape(-1)]).reshape(*rows.shape, -1),
                           vectors, abtt)
            sims = np.where(items >= 0, sims, -np.inf)
        return sims, items, self._to_retriever[c]  # -1 stays -1 (the table's last entry)

    def topk(self, fused: Tensor, modality: str, target: str, vectors: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and culture positions (the retriever's), best first."""
        return self.rank(fused, modality, target, vectors, k, evidence=False)[:2]

    def rank(self, fused: Tensor, modality: str, target: str, vectors: np.ndarray, k: int,
             evidence: bool = True
             ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """`topk` and, per ranked culture, its corpus item nearest to the query among
        the query's shortlist (what the nearest-items score read first): (B, k) item
        rows of the query's modality (-1: none in the shortlist) and their similarities
        as `shortlist` gives them (`ops.query_score.nearest_items`). The evidence is None for a query ranked
        against another modality (cross-modal) or where the serving state has no item
        cultures."""
        mix = self.mix_for(modality)
        short = None
        if self.mixed(modality, target):
            raw, learned, near, short = self._parts(fused, modality, vectors, mix)
            scores, pos = top_k(mix_scores(raw, learned, near, self.raw_weight, mix), k)
        else:
            scores, pos = self.retriever.topk(self.fusion.general(fused, target, vectors), k,
                                              target)
        if not evidence or target != modality:
            return scores, pos, None
        short = short if short is not None else self.shortlist(modality, vectors, mix)
        return scores, pos, None if short is None else nearest_items(*short, pos)
