"""Small two-modality cultures for the raw-residual tests, and float64 references
computed by hand from their input vectors."""

from __future__ import annotations

import numpy as np
import torch

from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph

DIMS = {"text": 5, "image": 3}
# items per culture; culture 4 has no text, culture 0 no image
ITEMS = {"text": [3, 2, 4, 1, 0], "image": [0, 2, 1, 3, 2]}
N_CULTURES = 5


def small_graphs(seed: int = 0) -> dict[str, ModalityGraph]:
    """Random non-zero item vectors of very different norms (so normalising each item
    before the culture mean matters), two modalities, some cultures lacking one."""
    g = torch.Generator().manual_seed(seed)
    graphs = {}
    for m, d in DIMS.items():
        culture = torch.repeat_interleave(torch.arange(N_CULTURES), torch.tensor(ITEMS[m]))
        n = len(culture)
        scale = torch.exp(2 * torch.randn(n, 1, generator=g))  # norms ~ 0.02 .. 50
        x = torch.randn(n, d, generator=g) * scale + 0.01  # (n, d), no zero row
        ei, _ = knn_edges(x, 2)
        graphs[m] = ModalityGraph(x, ei, culture, torch.zeros(n, 0, dtype=torch.bool))
    return graphs


def make_model(raw_weight: float, seed: int = 0) -> CultureSim:
    torch.manual_seed(seed)
    model = CultureSim(CultureSimConfig(dict(DIMS), hidden=8, out=4, raw_weight=raw_weight))
    with torch.no_grad():  # away from the init, so no identity hides a bug
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def raw_means(graphs, keep=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """float64 by hand: modality -> ((C, d) normalised mean of the culture's
    L2-normalised kept items (0 where it has none), (C,) items of the modality)."""
    out = {}
    for m, gr in graphs.items():
        x = gr.x.double().numpy()
        c = gr.culture.numpy()
        kept = np.ones(len(c), bool) if keep is None or m not in keep else keep[m].numpy()
        means = np.zeros((N_CULTURES, x.shape[1]))
        n = np.zeros(N_CULTURES)
        for ci in range(N_CULTURES):
            rows = x[(c == ci) & kept]
            if len(rows):
                s = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).sum(0)
                means[ci], n[ci] = s / np.linalg.norm(s), len(rows)
        out[m] = (means, n)
    return out


def raw_slots_ref(graphs, keep=None) -> np.ndarray:
    """(C, raw_dim) float64: the means in sorted modality order, each scaled by
    sqrt(share of the culture's items in that modality)."""
    means = raw_means(graphs, keep)
    total = np.maximum(sum(n for _, n in means.values()), 1)
    return np.concatenate([means[m][0] * np.sqrt(means[m][1] / total)[:, None]
                           for m in sorted(means)], axis=1)


def raw_dot_ref(graphs) -> np.ndarray:
    """(C, C) float64: sum over the modalities both cultures have of the raw means'
    cosine, weighted by sqrt(share_a * share_b) of each side's items in it."""
    means = raw_means(graphs)
    total_n = np.maximum(sum(n for _, n in means.values()), 1)
    total = np.zeros((N_CULTURES, N_CULTURES))
    for mu, n in means.values():
        share = np.sqrt(n / total_n)
        total += (mu @ mu.T) * np.outer(share, share)
    return total


@torch.no_grad()
def learned(model, graphs) -> np.ndarray:
    """(C, out) float64: the projection head's output over the fused culture tokens."""
    tokens, mask = model.culture_tokens(model.item_states(graphs), graphs, N_CULTURES)
    return model.projection(model.fusion(tokens, mask)).double().numpy()


def slots_of(cfg: CultureSimConfig) -> dict[str, tuple[int, int]]:
    return {m: (cfg.slot(m).start, cfg.slot(m).stop) for m in sorted(cfg.in_dims)}


def general_of(w: float) -> tuple[dict[str, ModalityGraph], CultureSim, torch.Tensor]:
    """(graphs, model with raw_weight w, its general culture embeddings (C, d))."""
    graphs = small_graphs()
    model = make_model(w)
    with torch.no_grad():
        return graphs, model, model(graphs, N_CULTURES)["general"]


def modality_normalised_ref(graphs, w: float, white: dict[str, np.ndarray] | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """float64 by hand: (C, C) raw term w * sum_m sqrt(s_a s_b) cos_m / sum_m sqrt(s_a s_b)
    over the modalities both cultures have (nan where they share none), and the
    (C, C) bool of the pairs that share one. white: per modality a (d, d) matrix T,
    each culture mean compared as mu T renormalised (the whitened culture map)."""
    means = raw_means(graphs)
    total_n = np.maximum(sum(n for _, n in means.values()), 1)
    num = np.zeros((N_CULTURES, N_CULTURES))
    den = np.zeros((N_CULTURES, N_CULTURES))
    for m, (mu, n) in means.items():
        if white is not None:
            mu = mu @ white[m]
            mu = mu / np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-300)
        share = np.sqrt(n / total_n)
        both = np.outer(n > 0, n > 0)
        num += np.where(both, (mu @ mu.T) * np.outer(share, share), 0.0)
        den += np.where(both, np.outer(share, share), 0.0)
    shared = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shared, w * num / den, np.nan), shared
