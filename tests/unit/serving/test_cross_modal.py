"""Cross-modal queries over the predictor (no Ray): in an aligned run a text query
is ranked against the cultures' images (their raw image slot), so the culture whose
images lie where the text points comes first; a run without a shared space, or a
query with no other modality, is a 422 naming `cross_modal`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from culturesim_ray.encoders.align import AlignConfig, ImageProjection, save_alignment
from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.serving.predictor import (
    FusionPredictor,
    QueryEncoders,
    QueryError,
    QueryRanker,
    Retriever,
    SimilarityService,
    ThemeReranker,
)

QUERY = "a red apple on a wooden table"
N, PER, DIM = 6, 6, 384


def _manifest(root, image: dict, text: str = "minilm", config: dict | None = None) -> str:
    path = EmbedLayout(str(root)).manifest
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"encoders": {"text": {"name": text, "dim": DIM}, "image": image},
                   "config": {"text_encoder": text, **(config or {})}}, fh)
    return str(root)


@pytest.fixture(scope="module")
def aligned_service(tmp_path_factory):
    """A run whose images share MiniLM's space: culture 3's images lie around the
    query text's vector, culture 1's texts do; every other vector is random."""
    root = tmp_path_factory.mktemp("run")
    align = root / "align"
    save_alignment(ImageProjection(AlignConfig()), str(align))  # only its config is read here
    embed = _manifest(root / "embed", {"name": "efficientnet-aligned", "dim": DIM},
                      config={"image_encoder": "efficientnet-aligned", "image_align": str(align)})
    encoders = QueryEncoders(embed)
    q = encoders.encode("text", [QUERY]).vectors[0]
    g = torch.Generator().manual_seed(0)
    graphs = {}
    for m in ("text", "image"):
        centers = torch.nn.functional.normalize(torch.randn(N, DIM, generator=g), dim=1)
        centers[3 if m == "image" else 1] = torch.from_numpy(q)
        culture = torch.arange(N).repeat_interleave(PER)
        x = centers[culture] + 0.02 * torch.randn(len(culture), DIM, generator=g)
        themes = torch.stack([torch.arange(len(culture)) % 2 == 0], dim=1)
        graphs[m] = ModalityGraph(x, knn_edges(x, 4)[0], culture, themes)
    torch.manual_seed(0)
    model = CultureSim(CultureSimConfig({"text": DIM, "image": DIM}, ["food"], hidden=32,
                                        out=16, raw_weight=0.9)).eval()
    with torch.no_grad():
        out = model(graphs, N)
    names = [f"c{i}" for i in out["cultures"].tolist()]
    slots = {m: (model.cfg.slot(m).start, model.cfg.slot(m).stop) for m in ("image", "text")}
    svc = SimilarityService.__new__(SimilarityService)  # the in-process service, parts built here
    svc.encoders = encoders
    svc.fusion = FusionPredictor(model, graphs, k_graph=5)
    svc.retriever = Retriever(names, out["general"].numpy(), slots=slots)
    svc.cultures = svc.retriever.cultures
    svc.ranker = QueryRanker(svc.fusion, svc.retriever)
    svc.reranker = ThemeReranker(model, {"food": (names, out["food"].numpy())}, names)
    svc.neighbor_table = None
    return svc


def test_a_text_query_finds_the_culture_of_its_images(aligned_service):
    cross = aligned_service.similar("text", QUERY, k=3, cross_modal=True)
    assert cross["general"][0]["culture"] == "c3"
    assert cross["general"][0]["score"] > cross["general"][1]["score"] + 0.3
    same = aligned_service.similar("text", QUERY, k=3)  # text -> texts: culture 1
    assert same["general"][0]["culture"] == "c1"
    assert set(cross["themes"]) == {"food"}


def test_cross_modal_needs_a_shared_space(tmp_path, aligned_service):
    plain = _manifest(tmp_path / "plain", {"name": "efficientnet", "dim": 1280})
    with pytest.raises(QueryError, match="do not share a space") as err:
        SimilarityService.similar(_with_encoders(aligned_service, plain), "text", QUERY,
                                  cross_modal=True)
    assert err.value.status == 422 and err.value.field == "cross_modal"
    align = tmp_path / "align"
    save_alignment(ImageProjection(AlignConfig()), str(align))
    e5 = _manifest(tmp_path / "e5", {"name": "efficientnet-aligned", "dim": DIM}, text="e5",
                   config={"image_encoder": "efficientnet-aligned", "image_align": str(align)})
    with pytest.raises(QueryError, match="do not share a space"):
        SimilarityService.similar(_with_encoders(aligned_service, e5), "text", QUERY,
                                  cross_modal=True)
    with pytest.raises(QueryError, match="text -> image or image -> text"):
        aligned_service.similar("sequence", "X:1", cross_modal=True)


def test_cross_modal_needs_the_raw_slots(aligned_service):
    svc = SimilarityService.__new__(SimilarityService)
    svc.__dict__.update(aligned_service.__dict__)
    svc.retriever = Retriever(aligned_service.cultures,
                              np.ones((len(aligned_service.cultures), 4), np.float32))
    svc.ranker = QueryRanker(svc.fusion, svc.retriever)
    with pytest.raises(QueryError, match="raw residual"):
        svc.similar("text", QUERY, cross_modal=True)


def _with_encoders(svc: SimilarityService, embed_dir: str) -> SimilarityService:
    other = SimilarityService.__new__(SimilarityService)
    other.__dict__.update(svc.__dict__)
    other.encoders = QueryEncoders(embed_dir)
    return other
