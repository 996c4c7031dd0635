"""Fit the theme heads' gate of a trained run on its items (`ops.gate`), as queries.

Each sampled item is fused exactly as the service fuses a query
(`FusionPredictor.fuse`): a new node fed by its nearest corpus items, with the
item itself left out of its own neighbours (a query is not in the corpus), so
the gate learns from the states it will be applied to. Items come from the
train job's store: training items to fit, validation items to choose the L2
penalty and report; held-out items are never read (they stay for the
benchmarks). The train job's export task calls `fit_run_gate`, writes the gate
into the model's weights and records the report in the serving manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from culturesim_ray.ops.gate import Gate, choose_gate, fit_gate, theme_targets
from culturesim_ray.serving.predictor import FusionPredictor
from culturesim_ray.training.batch import ItemStore

MAX_ITEMS = 20_000  # training items sampled for the fit (validation: the store's, capped)
MIN_VAL = 10  # fewer labelled validation items: the middle of the grid, no choice
DEFAULT_L2 = 1e-2


def fused_items(predictor: FusionPredictor, store: ItemStore, nodes: np.ndarray,
                block: int = 2048) -> np.ndarray:
    """(len(nodes), hidden) fused states of store nodes as one-item queries (each left
    out of its own neighbours), in the order of `nodes`."""
    nodes = np.asarray(nodes, np.int64)
    out: np.ndarray | None = None
    offsets = store.offsets
    for m in store.modalities:
        lo, hi = offsets[m], offsets[m] + len(store.culture[m])
        at = np.flatnonzero((nodes >= lo) & (nodes < hi))
        for i in range(0, len(at), block):
            sel = at[i:i + block]
            rows = nodes[sel] - lo
            vectors = np.asarray(store.x[m][rows], np.float32)
            fused = predictor.fuse(m, vectors, skip=rows).double().cpu().numpy()
            if out is None:
                out = np.empty((len(nodes), fused.shape[1]), np.float64)
            out[sel] = fused
    if out is None:
        raise ValueError("no items to fuse")
    return out


def _labelled(store: ItemStore, nodes: np.ndarray, limit: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` random nodes with at least one theme, sorted, and their targets."""
    tags = np.concatenate([np.asarray(store.themes[m], bool) for m in store.modalities])
    nodes = np.asarray(nodes, np.int64)
    nodes = nodes[tags[nodes].any(axis=1)]
    if len(nodes) > limit:
        nodes = np.sort(rng.choice(nodes, limit, replace=False))
    _, y = theme_targets(tags[nodes])
    return nodes, y


def fit_run_gate(predictor: FusionPredictor, train: ItemStore, val_nodes: np.ndarray,
                 seed: int = 0, max_items: int = MAX_ITEMS) -> tuple[Gate, dict[str, Any]] | None:
    """The gate of `predictor`'s model fitted on `train` (`open_store(root, "train")`:
    its seedable nodes are the training items) and chosen on `val_nodes`; None when the
    model has fewer than two themes or no training item carries one."""
    heads = predictor.model.theme_heads
    if heads is None or len(heads.themes) < 2:
        return None
    if list(heads.themes) != list(train.theme_names):
        raise ValueError(f"the model's themes {heads.themes} are not the store's "
                         f"{train.theme_names}")
    rng = np.random.default_rng(seed)
    fit_nodes, y = _labelled(train, train.seedable, max_items, rng)
    if len(fit_nodes) == 0:
        return None
    val, val_y = _labelled(train, val_nodes, max_items, rng)
    x = fused_items(predictor, train, fit_nodes)
    if len(val) >= MIN_VAL:
        gate, report = choose_gate(x, y, fused_items(predictor, train, val), val_y)
    else:
        gate = fit_gate(x, y, DEFAULT_L2)
        report = {"l2": DEFAULT_L2, "train_items": int(len(x)), "val_items": int(len(val))}
    return gate, {**report, "themes": list(heads.themes)}


def set_gate(model: Any, gate: Gate) -> None:
    """Copy a fitted gate into the model's theme heads (in place)."""
    layer = model.theme_heads.gate
    if tuple(layer.weight.shape) != gate.weight.shape:
        raise ValueError(f"gate of shape {gate.weight.shape} for a layer of shape "
                         f"{tuple(layer.weight.shape)}")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gate.weight).to(layer.weight))
        layer.bias.copy_(torch.from_numpy(gate.bias).to(layer.bias))
