"""The Serve deployments behind the Ingress (SPEC V1): Encoder, Fusion, Rerank,
each a thin wrapper of a plain predictor of `culturesim_ray.serving.predictor`
(Fusion loads the train job's serving state: nothing is rebuilt at start)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from culturesim_ray.encoders import pick_device
from culturesim_ray.serving.errors import QueryError
from culturesim_ray.serving.predictor import (
    FusionPredictor,
    QueryRanker,
    Retriever,
    ThemeReranker,
    format_answer,
    named,
)
from culturesim_ray.serving.query_encoders import QueryEncoders
from culturesim_ray.serving.replica import apply_batch_config, set_threads

DEFAULT_BATCH = {"max_batch_size": 16, "batch_wait_timeout_s": 0.002}
DEFAULT_INGRESS = {"default_k": 5, "max_k": 50, "max_request_bytes": 2_000_000, **DEFAULT_BATCH}


# ---------------------------------------------------------------- deployments
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, user_config=DEFAULT_BATCH)
class Encoder:
    """Query payloads -> base embeddings of the run's encoders, batched per modality.
    Each call carries a list of payloads (an Ingress batch); each payload comes
    back as (vector or None, error or None, note or None: `QueryEncoders.notes`)."""

    def __init__(self, embed_dir: str, use_gpu: bool = False, torch_threads: int = 0,
                 precision: str = "auto") -> None:
        set_threads(torch_threads)
        self.device = pick_device(use_gpu)
        self.encoders = QueryEncoders(embed_dir, self.device, precision=precision)
        for m in self.encoders.modalities:  # load every model now, not on the first request
            self.encoders.encoder(m)

    def reconfigure(self, cfg: dict[str, Any]) -> None:
        apply_batch_config(cfg, DEFAULT_BATCH, self.encode)

    async def modalities(self) -> list[str]:
        return self.encoders.modalities

    async def cross_target(self, modality: str, slots: list[str]) -> str | dict[str, Any]:
        """The modality a cross-modal `modality` query ranks against, or {"error":
        (field, message, status)} when this run's spaces are not shared."""
        from culturesim_ray.serving.cross_modal import cross_modal_target

        try:
            return cross_modal_target(self.encoders, modality, slots)
        except QueryError as exc:
            return {"error": (exc.field, exc.message, exc.status)}

    def _run(self, modality: str, payloads: list[Any], fmt: str = "abc") -> list[tuple]:
        res = self.encoders.encode(modality, payloads, fmt)
        notes = self.encoders.notes(modality, payloads)
        return [(None, e.removeprefix("uri: "), None) if e else (res.vectors[i], None, notes[i])
                for i, e in enumerate(res.errors)]

    def _encode(self, modality: str, payloads: list[Any]) -> list[tuple]:
        if modality != "sequence":
            return self._run(modality, payloads)
        out: list[tuple] = [()] * len(payloads)  # sequences: (source, format)
        for fmt in sorted({f for _, f in payloads}):
            idx = [i for i, (_, f) in enumerate(payloads) if f == fmt]
            for i, r in zip(idx, self._run("sequence", [payloads[i][0] for i in idx], fmt),
                            strict=True):
                out[i] = r
        return out

    @serve.batch(**DEFAULT_BATCH)
    async def encode(self, modalities: list[str], payloads: list[list[Any]]) -> list[list[tuple]]:
        flat: dict[str, list[Any]] = {}
        for m, p in zip(modalities, payloads, strict=True):
            flat.setdefault(m, []).extend(p)
        done = {m: iter(self._encode(m, p)) for m, p in flat.items()}
        return [[next(done[m]) for _ in p] for m, p in zip(modalities, payloads, strict=True)]


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, user_config=DEFAULT_BATCH)
class Fusion:
    """Base embeddings -> fused states (hidden,) and the general top-k, batched."""

    def __init__(self, train_dir: str, embed_dir: str, use_gpu: bool = False,
                 k_graph: int = 10, torch_threads: int = 0) -> None:
        set_threads(torch_threads)
        device = pick_device(use_gpu)
        self.fusion = FusionPredictor.from_run(train_dir, embed_dir, device, k_graph)
        self.retriever = Retriever.from_run(train_dir, use_gpu=device.startswith("cuda"))
        self.ranker = QueryRanker(self.fusion, self.retriever)

    def reconfigure(self, cfg: dict[str, Any]) -> None:
        apply_batch_config(cfg, DEFAULT_BATCH, self.search)

    async def info(self) -> dict[str, Any]:
        return {"cultures": self.retriever.cultures, "modalities": self.fusion.modalities,
                "slots": sorted(self.retriever.views)}

    @serve.batch(**DEFAULT_BATCH)
    async def search(self, modalities: list[str], encoded: list[list[tuple]],
                     ks: list[list[int]], targets: list[list[str]]) -> list[list[tuple]]:
        """Per call, per query: the Encoder's (vector, error, note), k and the modality it
        is ranked against (itself, or the other one of a cross-modal query) -> (fused,
        scores, names, error, vector, target, evidence, note) (vector and target for the
        theme re-rank; evidence: per name its nearest corpus item or None,
        `FusionPredictor.evidence`); an encoding error travels on for Rerank to answer."""
        out = [[(None, None, None, q[1], None, None, None, None) for q in e] for e in encoded]
        pairs = {(m, t) for m, ts in zip(modalities, targets, strict=True) for t in ts}
        for modality, target in sorted(pairs):
            at = [(c, j) for c, m in enumerate(modalities) if m == modality
                  for j, q in enumerate(encoded[c])
                  if not q[1] and targets[c][j] == target]
            if not at:
                continue
            vectors = np.stack([encoded[c][j][0] for c, j in at])
            fused = self.fusion.fuse(modality, vectors)
            scores, pos, found = self.ranker.rank(fused, modality, target, vectors,
                                                  max(ks[c][j] for c, j in at))
            fused_np = fused.float().cpu().numpy()
            names = self.retriever.cultures
            for r, (c, j) in enumerate(at):
                k = ks[c][j]
                keep = pos[r, :k] >= 0
                evidence = (self.fusion.evidence(modality, found[0][r, :k][keep],
                                                 found[1][r, :k][keep])
                            if found is not None else None)
                note = encoded[c][j][2] if len(encoded[c][j]) > 2 else None
                out[c][j] = (fused_np[r], scores[r, :k], [names[p] for p in pos[r, :k][keep]],
                             None, vectors[r], target, evidence, note)
        return out


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Rerank:
    """The theme heads re-rank each query's general top-k; per-theme scores and gates."""

    def __init__(self, train_dir: str, use_gpu: bool = False) -> None:
        from culturesim_ray.runs import load_fusion_model

        self.device = pick_device(use_gpu)
        self.reranker = ThemeReranker.from_run(load_fusion_model(train_dir, self.device),
                                               train_dir)
        self.cultures = self.reranker.cultures
        self.position = {c: i for i, c in enumerate(self.cultures)}

    async def themes(self) -> list[str]:
        return self.reranker.themes

    async def answer(self, found: list[tuple], themes: list[list[str] | None]) -> list[dict]:
        """Fusion's (fused, scores, names, error, vector, target, evidence, note) per
        query -> the two-stage answer, or
        {"error": ...}. Candidates go by name (the Fusion replica's culture list need
        not be this replica's, e.g. during a rolling model update): unknown names
        are left out."""
        import torch

        out: list[dict] = []
        for item, th in zip(found, themes, strict=True):
            fused, scores, names, err, vector, target = item[:6]
            evidence = item[6] if len(item) > 6 else None  # a Fusion replica of older code
            note = item[7] if len(item) > 7 else None
            if err:
                out.append({"error": err})
                continue
            pos = np.array([self.position[c] for c in names if c in self.position] or [-1])
            x = torch.as_tensor(fused, device=self.device).unsqueeze(0)
            reranked = named(self.reranker.rerank(x, pos[None, :], th, target,
                                                  np.asarray(vector)[None, :])[0], self.cultures)
            out.append(format_answer(names, scores, reranked, evidence, note))
        return out
