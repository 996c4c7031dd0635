"""The online answer to "which cultures is this text / image / melody closest to,
and on which themes?" as plain predictors (pure: no ray). The Serve app
(pipeline/serve.py) wraps each in a deployment; `SimilarityService` composes
them in-process (tests, benchmarks' floor, scripts).

1. `QueryEncoders` (`serving.query_encoders`): the query -> a base embedding, with the encoder its modality
   was embedded with in the run (same space as the corpus items).
2. `FusionPredictor`: the base embedding -> the trained model's fused culture
   state. A query is a new item node of its modality's graph: it receives
   messages from its `k_graph` most cosine-similar corpus items and sends none,
   so the corpus nodes' states are those of the full-graph forward pass
   (precomputed per layer once) and the query's state is exactly what the model
   computes for that node in the augmented graph. The query forms a one-item
   culture; its other modalities are masked in fusion, not zero-filled.
3. `Retriever` and `QueryRanker` (`serving.retrieval`): general embedding ->
   top-k cultures.
4. `ThemeReranker`: the fused state -> each theme head's embedding, and the
   top-k candidates re-ranked per theme by cosine to the culture's theme
   embedding, with the gate's weight of each theme: how likely the query is
   about it (a classifier of the items' theme tags fitted after training on
   items fused as queries, `serving.gate`).
5. `NeighborTable` (`serving.neighbors`): a culture's precomputed neighbours from the all-pairs job.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from culturesim_ray import io, runs
from culturesim_ray.layout import AllPairsLayout, TrainLayout
from culturesim_ray.models.branch import SELF_RELATION
from culturesim_ray.models.culturesim import CultureSim, ModalityGraph
from culturesim_ray.ops.abtt import fit_items
from culturesim_ray.ops.query_score import QueryMix
from culturesim_ray.serving.artifacts import (
    MANIFEST,
    ServingState,
    has_serving_state,
    item_index,
    layer_states,
    load_serving_state,
    normalise,
    rows_of,
)
from culturesim_ray.serving.errors import QueryError
from culturesim_ray.serving.neighbors import NeighborTable
from culturesim_ray.serving.query_encoders import MODALITY_FIELDS, QueryEncoders
from culturesim_ray.serving.retrieval import QueryRanker, Retriever, modality_view


class FusionPredictor:
    """Base embeddings of queries -> fused states (B, hidden) and general embeddings."""

    def __init__(self, model: CultureSim, graphs: dict[str, ModalityGraph] | None,
                 k_graph: int = 10, state: ServingState | None = None,
                 cultures: list[str] | None = None) -> None:
        """From in-memory item graphs (the corpus states computed here; `cultures`:
        the names their culture indices point into), or from the train job's `state`
        (`serving.artifacts`: memory-mapped, nothing rebuilt)."""
        self.model = model.eval()
        self.k_graph = k_graph
        if state is None:
            if graphs is None:
                raise ValueError("FusionPredictor needs the item graphs or a serving state")
            mods = [m for m in model.modalities if m in graphs]
            state = ServingState(layer_states(model, graphs),
                                 {m: item_index(graphs[m].x.cpu().numpy()) for m in mods},
                                 {"cultures": cultures},
                                 {m: graphs[m].culture.cpu().numpy() for m in mods}
                                 if cultures is not None else {},
                                 abtt={m: fit_items(graphs[m].x.cpu().numpy())
                                       for m in mods if len(graphs[m].x) >= 2})
        self.modalities = [m for m in model.modalities if m in state.layers]
        self._layers: dict[str, list[Any]] = state.layers
        self._index: dict[str, Any] = state.indexes
        # items' cultures (positions in self.cultures) for the set-level query score
        self.cultures: list[str] | None = state.manifest.get("cultures")
        self.item_culture: dict[str, np.ndarray] = state.item_culture
        self.item_ids = state.item_ids  # modality -> ids by row (empty: state without them)
        self.abtt = state.abtt  # modality -> (dominant directions, items' coordinates)
        self.query_mix = QueryMix.from_dict(state.manifest.get("query_mix"))

    @classmethod
    def from_run(cls, train_dir: str, embed_dir: str, device: str = "cpu",
                 k_graph: int = 10) -> FusionPredictor:
        """Load the train run's serving state; a run without one (older runs) has its
        item graph rebuilt from the embed run instead."""
        from culturesim_ray.training.data import build_training_data

        model = runs.load_fusion_model(train_dir, device)
        layout = TrainLayout(train_dir)
        if has_serving_state(layout.serving):
            return cls(model, None, k_graph, load_serving_state(layout.serving, layout.model))
        data = build_training_data(runs.read_embeddings(embed_dir), k=k_graph,
                                   relations_path=runs.train_relations(train_dir))
        return cls(model, data.graphs, k_graph)

    def neighbours(self, modality: str, vectors: np.ndarray,
                   skip: np.ndarray | None = None) -> np.ndarray:
        """(B, k) corpus items of `modality` nearest to each query (cosine). skip (B,):
        a corpus row to leave out of each query's neighbours (a corpus item fused as a
        query, as if it were new: `serving.gate`); -1 fills a row that comes back short."""
        if skip is None:
            return self.search(modality, vectors, self.k_graph)[1]
        items = self.search(modality, vectors, self.k_graph + 1)[1]
        own = items == np.asarray(skip, np.int64)[:, None]
        order = np.argsort(own, axis=1, kind="stable")  # the item itself last
        return np.take_along_axis(np.where(own, -1, items), order, axis=1)[:, :self.k_graph]

    def evidence(self, modality: str, rows: np.ndarray, similarities: np.ndarray
                 ) -> list[dict[str, Any] | None]:
        """One query's evidence rows and similarities (`QueryRanker.rank`, (k,)) as what an
        answer shows per ranked culture: {"item_id", "modality", "similarity"}, None where
        the culture had no item in the shortlist or the state has no item ids."""
        ids = self.item_ids.get(modality)
        return [None if ids is None or r < 0 else
                {"item_id": ids[int(r)].as_py(), "modality": modality, "similarity": float(c)}
                for r, c in zip(rows, similarities, strict=True)]

    def search(self, modality: str, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) cosines and positions of the corpus items of `modality` nearest to
        each query (-1: none; an IVF search may come back short)."""
        index = self._index[modality]
        return index.search(normalise(vectors), min(k, index.ntotal))

    @torch.inference_mode()
    def item_state(self, modality: str, vectors: np.ndarray,
                   skip: np.ndarray | None = None) -> Tensor:
        """(B, hidden): branch output + raw projection of each query as a new node
        (skip: see `neighbours`)."""
        if modality not in self.modalities:
            raise QueryError(MODALITY_FIELDS.get(modality, "modality"),
                             f"the model has no {modality} branch "
                             f"(modalities: {', '.join(self.modalities)})", 422)
        branch = self.model.branches[modality]
        device = next(self.model.parameters()).device
        nbrs = torch.from_numpy(self.neighbours(modality, vectors, skip)).to(device)  # (B, k)
        b, k = nbrs.shape
        found = nbrs.reshape(-1) >= 0  # an IVF search may come back short (-1)
        uniq, inv = torch.unique(nbrs.reshape(-1)[found], return_inverse=True)
        src = inv  # neighbour j of query i -> node uniq-position
        dst = torch.arange(b, device=device).repeat_interleave(k)[found] + len(uniq)
        edge_index = torch.stack([src, dst])
        raw = branch.project(torch.as_tensor(np.array(vectors, dtype=np.float32),  # a writable copy
                                             device=device))
        h = raw
        own = (modality, SELF_RELATION, modality)
        for layer in range(len(branch.convs)):
            # the query nodes after their neighbours; other modalities' states are
            # empty: a query has no cross-modal edges (hetero: only root terms)
            states = {m: h[:0] for m in self.modalities}
            states[modality] = torch.cat([rows_of(self._layers[modality][layer], uniq), h])
            h = branch.layer(layer, states, {own: edge_index})[len(uniq):]
        return h + raw

    @torch.inference_mode()
    def fuse(self, modality: str, vectors: np.ndarray,
             skip: np.ndarray | None = None) -> Tensor:
        """(B, hidden) fused state of each query as a one-item culture (skip: see
        `neighbours`)."""
        state = self.item_state(modality, vectors, skip)
        j = self.model.modalities.index(modality)
        tokens = state.new_zeros(len(state), len(self.model.modalities), state.shape[1])
        tokens[:, j] = self.model.normalize_tokens(modality, state)
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=state.device)
        mask[:, j] = True
        return self.model.fusion(tokens, mask)

    @torch.inference_mode()
    def general(self, fused: Tensor, modality: str | None = None,
                vectors: np.ndarray | None = None) -> np.ndarray:
        """(B, D) general embeddings of the fused queries; with the model's raw
        residual (`raw_weight` > 0) the queries' modality and base vectors fill its slot."""
        if self.model.cfg.raw_weight <= 0:
            return self.model.projection(fused).float().cpu().numpy()
        if modality is None or vectors is None:
            raise ValueError("this model has a raw residual: pass the queries' modality and vectors")
        x = torch.as_tensor(np.array(vectors, dtype=np.float32), device=fused.device)  # a writable copy
        return self.model.query_general(fused, modality, x).float().cpu().numpy()


class ThemeReranker:
    """Theme heads over the fused state; re-rank candidates per theme.

    A run with `theme_raw` (a theme's culture embedding carries the raw slots of the
    culture's items of that theme) scores a one-modality query like the general query
    score without its nearest-items term: the raw part of the cosine with the
    culture's theme view of that modality (`retrieval.modality_view`) plus `learned`
    times the learned part (the run's `QueryMix.learned`)."""

    def __init__(self, model: CultureSim, theme_vectors: dict[str, tuple[list[str], np.ndarray]],
                 cultures: list[str], learned: float = 1.0) -> None:
        self.model, self.heads = model, model.theme_heads
        self.cultures = list(cultures)
        self.themes = list(self.heads.themes) if self.heads is not None else []
        self.learned = float(learned)
        cfg = model.cfg
        pos = {c: i for i, c in enumerate(cultures)}
        # theme -> (C, D) normalised culture vectors (NaN: a culture the head lacks), or
        # for a theme with raw slots theme -> modality -> (C, D) view of the cultures
        self.vectors: dict[str, np.ndarray] = {}
        self.views: dict[str, dict[str, np.ndarray]] = {}
        for theme in self.themes:
            names, vec = theme_vectors[theme]
            table = np.full((len(cultures), vec.shape[1]), np.nan, dtype=np.float32)
            if not cfg.has_raw(theme):
                table[[pos[c] for c in names]] = normalise(vec)
                self.vectors[theme] = table
                continue
            if vec.shape[1] != cfg.raw_dim + cfg.out:
                raise ValueError(f"theme {theme!r}: vectors of width {vec.shape[1]}, "
                                 f"expected raw slots + projection ({cfg.raw_dim + cfg.out})")
            # as exported (unit rows, but a culture without items of the theme keeps its
            # learned part at sqrt(1 - w), as a general view does)
            table[[pos[c] for c in names]] = vec
            self.views[theme] = {m: modality_view(table, cfg.slots(), m) for m in cfg.slots()}

    @classmethod
    def from_run(cls, model: CultureSim, train_dir: str) -> ThemeReranker:
        """The model's theme heads against a train run's culture theme embeddings, the
        learned part at the run's `QueryMix.learned` (from its serving state)."""
        layout = TrainLayout(train_dir)
        heads = runs.read_culture_embeddings(layout.culture_embeddings)
        manifest = os.path.join(layout.serving, MANIFEST)
        mix = QueryMix.from_dict(io.read_json(manifest).get("query_mix")
                                 if os.path.exists(manifest) else None)
        return cls(model, heads, heads["general"][0], mix.learned)

    def check_themes(self, themes: Sequence[str] | None) -> list[str]:
        if themes is None:
            return list(self.themes)
        unknown = [t for t in themes if t not in self.themes]
        if unknown:
            raise QueryError("themes", f"unknown theme(s) {unknown} "
                             f"(this model has: {', '.join(self.themes) or 'none'})", 422)
        return list(dict.fromkeys(themes))

    def _queries(self, projected: Tensor, theme: str, modality: str | None,
                 vectors: np.ndarray | None) -> np.ndarray:
        """(B, D) the queries' `theme` embeddings, with the raw residual (vectors in
        `modality`'s slot) where the theme's culture vectors carry it."""
        if theme not in self.views:
            return projected.float().cpu().numpy()
        if modality is None or vectors is None:
            raise ValueError(f"theme {theme!r} has raw slots: pass the queries' modality "
                             "and vectors")
        if modality not in self.views[theme]:
            raise ValueError(f"no raw slot for {modality!r} (slots: {sorted(self.views[theme])})")
        x = torch.as_tensor(np.array(vectors, dtype=np.float32), device=projected.device)
        # unit rows already: the head's output and the input, each normalised, weighted
        return self.model.query_embedding(projected, modality, x).float().cpu().numpy()

    def _scores(self, theme: str, q: np.ndarray, cand: np.ndarray,
                modality: str | None) -> np.ndarray:
        """(len(cand),) one query's scores of its candidates under `theme`."""
        if theme not in self.views:
            return self.vectors[theme][cand] @ q
        view, r = self.views[theme][modality][cand], self.model.cfg.raw_dim
        return view[:, :r] @ q[:r] + self.learned * (view[:, r:] @ q[r:])

    @torch.inference_mode()
    def rerank(self, fused: Tensor, candidates: np.ndarray,
               themes: Sequence[str] | None = None, modality: str | None = None,
               vectors: np.ndarray | None = None) -> list[dict[str, Any]]:
        """For each query i: {theme: {"gate": w, "ranking": [(position, score), ...]}}
        over its candidate positions `candidates[i]`, best first; w: the gate's weight of
        the theme for the query (`serving.gate`: how likely the query is about it).
        themes None: every theme, the query's likeliest first. modality, vectors
        (B, d): the one-modality queries' modality (the slot they are compared in) and
        input vectors, needed by themes with raw slots (see the class)."""
        by_gate = themes is None  # themes not named: the query's likeliest first
        themes = self.check_themes(themes)
        if self.heads is None or not themes:
            return [{} for _ in range(len(fused))]
        per_theme, gate = self.heads(fused)
        gate_np = gate.float().cpu().numpy()
        queries = {t: self._queries(per_theme[t], t, modality, vectors) for t in themes}
        out: list[dict[str, Any]] = []
        for i in range(len(fused)):
            cand = candidates[i][candidates[i] >= 0]
            answer = {}
            order_t = (sorted(themes, key=lambda t: -gate_np[i, self.themes.index(t)])
                       if by_gate else themes)
            for theme in order_t:
                scores = self._scores(theme, queries[theme][i], cand, modality)
                scores = np.where(np.isnan(scores), -np.inf, scores)
                order = np.argsort(-scores, kind="stable")
                answer[theme] = {
                    "gate": float(gate_np[i, self.themes.index(theme)]),
                    "ranking": [(int(cand[o]), float(scores[o])) for o in order
                                if math.isfinite(scores[o])]}
            out.append(answer)
        return out


@dataclass
class RunPaths:
    embed: str
    train: str
    allpairs: str | None = None

    @classmethod
    def of(cls, run_dir: str) -> RunPaths:
        """The demo layout: RUN/embed, RUN/train, RUN/allpairs (the last optional); or
        a train run's own directory, with the embed run its manifest names."""
        from culturesim_ray.layout import RunLayout, TrainLayout

        run, train = RunLayout(str(run_dir)), TrainLayout(str(run_dir))
        embed = (train.embed_input()
                 if not io.exists(run.train.model) and io.exists(train.model) else None)
        if embed:
            return cls(embed, train.root)
        return cls(run.embed.root, run.train.root,
                   run.allpairs.root if io.exists(run.allpairs.pairs) else None)


def named(reranked: dict[str, Any], cultures: list[str]) -> dict[str, Any]:
    """A `ThemeReranker.rerank` answer with culture positions replaced by names."""
    return {t: {"gate": a["gate"], "ranking": [(cultures[p], s) for p, s in a["ranking"]]}
            for t, a in reranked.items()}


def format_answer(names: list[str], scores: np.ndarray, reranked: dict[str, Any],
                  evidence: list[dict[str, Any] | None] | None = None,
                  note: str | None = None) -> dict[str, Any]:
    """One query's two-stage answer: the general ranking (candidate names, best
    first, with their scores and, given `evidence` aligned with names, each one's
    nearest corpus item: `FusionPredictor.evidence`) and each theme's re-ranking of
    them (`named`); `note`: what the user should know about the query
    (`QueryEncoders.notes`), else None."""
    ev = list(evidence) if evidence is not None else [None] * len(names)
    general = [{"culture": c, "score": float(s), "rank": r + 1, "evidence": e}
               for r, (c, s, e) in enumerate(zip(names, scores, ev, strict=False))]
    general_rank = {g["culture"]: g["rank"] for g in general}
    themes = {}
    for theme, ans in reranked.items():
        themes[theme] = {"gate": ans["gate"], "ranking": [
            {"culture": c, "score": s, "rank": r + 1, "general_rank": general_rank[c]}
            for r, (c, s) in enumerate(ans["ranking"]) if c in general_rank]}
    return {"general": general, "themes": themes, "note": note}


class SimilarityService:
    """Every stage in one process: query -> two-stage answer."""

    def __init__(self, paths: RunPaths, device: str = "cpu", k_graph: int = 10,
                 precision: str = "auto") -> None:
        self.encoders = QueryEncoders(paths.embed, device, precision=precision)
        self.fusion = FusionPredictor.from_run(paths.train, paths.embed, device, k_graph)
        self.retriever = Retriever.from_run(paths.train, use_gpu=device.startswith("cuda"))
        self.cultures = self.retriever.cultures
        self.ranker = QueryRanker(self.fusion, self.retriever)
        self.reranker = ThemeReranker.from_run(self.fusion.model, paths.train)
        self.neighbor_table = (NeighborTable(AllPairsLayout(paths.allpairs).pairs)
                               if paths.allpairs else None)

    def similar(self, modality: str, payload: Any, k: int = 5,
                themes: Sequence[str] | None = None,
                sequence_format: str = "abc", cross_modal: bool = False) -> dict[str, Any]:
        self.reranker.check_themes(themes)  # an unknown theme fails before any work
        target = modality  # cross_modal: text -> images, image -> texts (serving.cross_modal)
        if cross_modal:
            from culturesim_ray.serving.cross_modal import cross_modal_target
            target = cross_modal_target(self.encoders, modality, self.retriever.views)
        res = self.encoders.encode(modality, [payload], sequence_format)
        if res.errors[0]:
            raise QueryError(MODALITY_FIELDS[modality], res.errors[0])
        fused = self.fusion.fuse(modality, res.vectors)
        scores, pos, found = self.ranker.rank(fused, modality, target, res.vectors, k)
        reranked = named(self.reranker.rerank(fused, pos, themes, target, res.vectors)[0],
                         self.cultures)
        keep = pos[0] >= 0
        evidence = (self.fusion.evidence(modality, found[0][0][keep], found[1][0][keep])
                    if found is not None else None)
        return format_answer([self.cultures[p] for p in pos[0][keep]], scores[0], reranked,
                             evidence, self.encoders.notes(modality, [payload])[0])
