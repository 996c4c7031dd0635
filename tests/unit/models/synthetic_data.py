"""Synthetic cultures for model tests: clustered item vectors, two modalities."""

from __future__ import annotations

import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import ModalityGraph


def synthetic(n_cultures=8, per=12, seed=0, cross=False):
    """cross: also link each image to a random text item of its culture
    ("artifact" edges both ways, in `incoming`), for the hetero variant."""
    g = torch.Generator().manual_seed(seed)
    graphs = {}
    for m, d in (("text", 24), ("image", 16)):
        centers = torch.randn(n_cultures, d, generator=g) * 2
        culture = torch.arange(n_cultures).repeat_interleave(per)
        if m == "image":  # culture 0 has no image at all: a missing modality
            culture = culture[culture != 0]
        x = centers[culture] + torch.randn(len(culture), d, generator=g)
        ei, _ = knn_edges(x, 4)
        themes = torch.stack([torch.arange(len(culture)) % 2 == 0,
                              torch.arange(len(culture)) % 3 == 0], dim=1)
        graphs[m] = ModalityGraph(x, ei, culture, themes)
    if cross:
        text, image = graphs["text"], graphs["image"]
        src = torch.stack([torch.nonzero(text.culture == c).squeeze(1)[
            torch.randint(0, per, (1,), generator=g)] for c in image.culture.tolist()]).squeeze(1)
        dst = torch.arange(len(image.culture))
        image.incoming[("text", "artifact")] = torch.stack([src, dst])
        text.incoming[("image", "artifact")] = torch.stack([dst, src])
    return graphs
