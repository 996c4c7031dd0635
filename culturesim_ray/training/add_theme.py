"""Themes as a product (SPEC M6): a new theme head on the frozen backbone (pure torch).

`culturesim add-theme RUN --theme NAME` runs these steps (the Ray glue is
`pipeline/add_theme.py`):

1. `theme_members`: which items belong to the theme, in the store's node order:
   the items tagged NAME in the corpus (`themes` column), or the item ids the
   user lists (`--items FILE`);
2. `extend_store`: the training store gains the theme as its last theme column
   (themes.npy (n, T+1)) with the per-culture reference means of its training
   items, written to temporary names and renamed, store.json last;
3. `with_theme`: a model equal to the trained one plus one new head (its
   momentum copy and MoCo queue come with it in `train_theme`) and one new
   gate row; every other parameter and buffer is copied;
4. `train_theme`: the one training loop (`training.loop.train`) with the new
   head's loss alone, the optimiser holding the new head's parameters alone;
5. `merged_state`: the trained model's state dict for the new head, the
   original state for everything else, so every other head, the backbone, the
   fusion and the token statistics stay bit-identical. (The export that follows
   refits the theme gate over every theme, `serving.gate`.)
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from culturesim_ray.graph import build as gb
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.heads import ThemeHeads
from culturesim_ray.training.batch import GENERAL, ItemStore, culture_means
from culturesim_ray.training.config import TrainConfig
from culturesim_ray.training.loop import Position, make_queues, train
from culturesim_ray.training.stages import stage_lr

THEME_PREFIX = "theme_heads.heads."


class ThemeError(ValueError):
    """A theme that cannot be added (a name taken, too few items or cultures)."""


def theme_members(store_root: str, theme: str, item_ids: Iterable[str] | None = None
                  ) -> np.ndarray:
    """(n,) bool over the store's nodes: the items listed in `item_ids`, or (None)
    the items whose corpus `themes` include `theme`."""
    meta = _meta(store_root)
    wanted = None if item_ids is None else set(item_ids)
    parts = []
    for m in meta["modalities"]:
        items = gb.read_items(meta["graph_root"], m)
        if wanted is not None:
            ids = items.column("item_id").to_pylist()
            parts.append(np.fromiter((i in wanted for i in ids), bool, len(ids)))
        else:
            tags = items.column("themes").to_pylist()
            parts.append(np.fromiter((theme in (t or ()) for t in tags), bool, len(tags)))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def extend_store(store_root: str, theme: str, member: np.ndarray, min_cultures: int = 2
                 ) -> dict[str, Any]:
    """Add `theme` (membership `member` (n,) bool) to the store as its last theme;
    returns {"items", "train_items", "cultures"} of the theme's training items."""
    from culturesim_ray.training.store import TRAIN

    meta = _meta(store_root)
    if theme == GENERAL or theme in meta["themes"]:
        raise ThemeError(f"theme {theme!r} exists already (themes: {meta['themes']})")
    themes = np.load(os.path.join(store_root, "themes.npy"))
    culture = np.load(os.path.join(store_root, "culture.npy"), mmap_mode="r")
    split = np.load(os.path.join(store_root, "split.npy"), mmap_mode="r")
    member = np.asarray(member, bool)
    if member.shape != (len(themes),):
        raise ThemeError(f"theme {theme!r}: membership of {member.shape} for {len(themes)} items")
    train_rows = member & (np.asarray(split) == TRAIN)
    cultures = np.unique(np.asarray(culture)[train_rows])
    if len(cultures) < min_cultures:
        raise ThemeError(f"theme {theme!r}: training items in {len(cultures)} culture(s); "
                         f"a theme head needs items of at least {min_cultures}")
    writes = {"themes.npy": np.concatenate([themes, member[:, None]], axis=1)}
    n_cultures = len(meta["cultures"])
    for m in meta["modalities"]:
        x = gb.open_x(meta["graph_root"], m)
        start = meta["offsets"][m]
        rows = np.flatnonzero(train_rows[start:start + len(x)])
        c_m = np.asarray(culture[start:start + len(x)])
        mu, has = culture_means(x, c_m, n_cultures, rows)
        writes[f"means__{theme}__{m}.npy"] = mu
        writes[f"has__{theme}__{m}.npy"] = has
    for name, arr in writes.items():
        tmp = os.path.join(store_root, name + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, os.path.join(store_root, name))
    meta["themes"] = [*meta["themes"], theme]
    tmp = os.path.join(store_root, "store.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh)
    os.replace(tmp, os.path.join(store_root, "store.json"))  # the store changes here
    return {"items": int(member.sum()), "train_items": int(train_rows.sum()),
            "cultures": int(len(cultures))}


def with_theme(model: CultureSim, theme: str, seed: int = 0) -> CultureSim:
    """A copy of `model` with one more theme head (and gate row) for `theme`;
    every existing parameter and buffer copied. The new head's initial weights
    depend on `seed` only."""
    cfg = replace(model.cfg, themes=[*model.cfg.themes, theme])
    torch.manual_seed(seed)
    out = CultureSim(CultureSimConfig(**asdict(cfg)))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("theme_heads.gate")}
    missing, unexpected = out.load_state_dict(state, strict=False)
    if model.theme_heads is not None:  # existing themes keep their gate rows
        with torch.no_grad():
            out.theme_heads.gate.weight[:-1].copy_(model.theme_heads.gate.weight)
            out.theme_heads.gate.bias[:-1].copy_(model.theme_heads.gate.bias)
    left = {k for k in missing if not k.startswith((THEME_PREFIX + theme + ".",
                                                    "theme_heads.gate"))}
    if left or unexpected:  # the model's layout is not the one its config describes
        raise ThemeError(f"model state does not match its config: missing {sorted(left)}, "
                         f"unexpected {sorted(unexpected)}")
    return out


def head_groups(theme: str) -> Any:
    """`training.loop.train`'s groups_for: the new head's parameters alone, at the
    stage's head rate (stage 1: lr1), no weight decay."""
    def groups(model: CultureSim, stage: int, cfg: Any, stage_epoch: int = 0) -> list[dict]:
        heads: ThemeHeads = model.theme_heads  # type: ignore[assignment]
        return [{"params": list(heads.heads[theme].parameters()), "lr": stage_lr(cfg, stage),
                 "weight_decay": 0.0, "name": f"theme:{theme}"}]
    return groups


def train_theme(model: CultureSim, store: ItemStore, cfg: TrainConfig, theme: str,
                device: torch.device | str = "cpu") -> Position:
    """Train the head `theme` of `model` (built by `with_theme`; on `device`) on
    `store` (extended by `extend_store`) through the one loop; returns its position.
    The rest of `model` takes no optimiser step (its batch statistics move: use
    `merged_state` to keep the original ones)."""
    if store.theme_names[-1:] != [theme] or model.cfg.themes[-1:] != [theme]:
        raise ThemeError(f"theme {theme!r} must be the last theme of both the store "
                         f"({store.theme_names}) and the model ({model.cfg.themes})")
    key_model = copy.deepcopy(model)
    queues = make_queues(model, cfg.queue_size, device)
    groups_for = head_groups(theme)
    opt = torch.optim.AdamW(groups_for(model, cfg.stages[0][0], cfg.stages_cfg))
    return train(model, key_model, queues, opt, store, cfg, device=device,
                 train_heads=[theme], groups_for=groups_for)


def merged_state(original: dict[str, torch.Tensor], trained: CultureSim, theme: str
                 ) -> dict[str, torch.Tensor]:
    """The state dict of the model with `theme`: the trained new head and gate, and
    `original`'s tensors (bit for bit) for every other key."""
    out = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    for k, v in original.items():
        if k.startswith("theme_heads.gate"):
            out[k][:len(v)] = v  # the existing themes' gate rows
        else:
            out[k] = v.detach().clone()
    return out


def _meta(store_root: str) -> dict[str, Any]:
    with open(os.path.join(store_root, "store.json")) as fh:
        return json.load(fh)
