"""The one training loop (pure torch): the Ray Train worker, the benchmarks'
plain loops and the tests all call `train`.

Stages (param-group freezing, `training.stages`), AdamW, the tested
warm-up + cosine factor per stage, mini-batches from the worker's shard
(`training.batch`: W workers see W times the items per step), MoCo queues
gathered over workers (`models.queue`), early stopping in stage 3 on the
validation loss of items that training never sees (their own small graph).
After every epoch `on_epoch(position, metrics)` runs (the Ray worker saves a
checkpoint there); `Position` holds everything that shapes the next step
(stage, epoch, step, history, early-stopping state), and the batches are a
function of (seed, rank, step), so a resumed run draws the same batches.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.queue import MoCoQueue
from culturesim_ray.training.batch import (
    GENERAL,
    Batch,
    ItemStore,
    PassSampler,
    sample_batch,
)
from culturesim_ray.training.config import TrainConfig
from culturesim_ray.training.stages import EarlyStopping, param_groups, warmup_cosine_factor
from culturesim_ray.training.step import moco_step, validation_loss


@dataclass
class Position:
    """Where a run is: next stage index and epoch within it, steps done, per-epoch
    history, resumes seen, and the early-stopping state."""

    stage_idx: int = 0
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    best: float = math.inf
    bad: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Position:
        return cls(**d)


def queue_sum(queues: dict[str, MoCoQueue]) -> float:
    """A fingerprint of the queues' state (keys, cultures, pointers), for resume checks."""
    return float(sum(q.keys.double().sum() + q.cultures.sum() + q.ptr for q in queues.values()))


def set_lrs(opt: torch.optim.Optimizer, groups: list[dict], factor: float) -> None:
    for g, spec in zip(opt.param_groups, groups, strict=True):
        g["lr"] = spec["lr"] * factor
        g["weight_decay"] = spec["weight_decay"]


def heads_of(model: CultureSim) -> list[str]:
    return [GENERAL, *model.cfg.themes]


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    return Batch({m: g.to(device) for m, g in batch.graphs.items()},
                 batch.culture_ids.to(device), batch.n_slots,
                 {h: r.to(device) for h, r in batch.references.items()}, batch.nodes)


def validation_batch(val: ItemStore, cfg: TrainConfig, heads: list[str]) -> Batch:
    """A fixed batch of the validation items: up to batch_cultures cultures (a fixed
    draw), up to items_per_culture items each, all their edges in the validation graph."""
    rng = np.random.default_rng([cfg.seed, 99])
    nodes = val.shards(1)[0]  # its seedable items
    nc = val.node_culture()[nodes]
    present = np.unique(nc)
    b = cfg.batch.batch_cultures
    chosen = present[rng.permutation(len(present))[:b]]
    seeds = np.concatenate([rng.permutation(nodes[nc == c])[:cfg.batch.items_per_culture]
                            for c in chosen]) if len(chosen) else np.zeros(0, np.int64)
    return sample_batch(val, seeds, b, [-1] * len(cfg.batch.fanouts), rng, heads,
                        cfg.model.graph == "hetero")


def make_queues(model: CultureSim, size: int, device: torch.device | str = "cpu"
                ) -> dict[str, MoCoQueue]:
    return {h: MoCoQueue(model.cfg.head_dim(h), size).to(device) for h in heads_of(model)}


def init_training(store: ItemStore, mcfg: CultureSimConfig, cfg: TrainConfig,
                  device: torch.device | str = "cpu",
                  ) -> tuple[CultureSim, CultureSim, dict[str, MoCoQueue], torch.optim.Optimizer]:
    """What every training run starts from, on `device`: the model (seeded by cfg.seed,
    its branches centred on the store's item means), its momentum copy, the queues, and
    AdamW over the first stage's parameter groups."""
    torch.manual_seed(cfg.seed)
    model = CultureSim(mcfg)
    model.set_center_means(store.item_means())
    model.to(device)
    key_model = copy.deepcopy(model)
    queues = make_queues(model, cfg.queue_size, device)
    opt = torch.optim.AdamW(param_groups(model, cfg.stages[0][0], cfg.stages_cfg))
    return model, key_model, queues, opt


def train(model: CultureSim, key_model: CultureSim, queues: dict[str, MoCoQueue],
          opt: torch.optim.Optimizer, store: ItemStore, cfg: TrainConfig,
          position: Position | None = None, val: Batch | None = None, rank: int = 0,
          world: int = 1, device: torch.device | str = "cpu",
          on_epoch: Callable[[Position, dict[str, Any]], None] | None = None,
          on_step: Callable[[int, dict[str, float], Batch], None] | None = None,
          train_heads: list[str] | None = None,
          groups_for: Callable[..., list[dict]] = param_groups) -> Position:
    """Run (or resume from `position`) the stages of `cfg` on `store`; returns the
    final position. `val`: the validation batch (`validation_batch`), None = no
    early stopping. The model, key model and queues must already be on `device`.
    train_heads: the heads whose losses train (default every head; `add-theme`
    trains its new head alone); groups_for(model, stage, stages_cfg, stage_epoch=)
    gives the optimiser's parameter groups and their rates (default
    `stages.param_groups`, which `opt` must have been built from)."""
    pos = position or Position()
    heads = heads_of(model)
    hetero = cfg.model.graph == "hetero"
    nc = store.node_culture()
    b, m = cfg.batch.batch_cultures, cfg.batch.items_per_culture
    shards = store.shards(world, cfg.batch.items_per_culture)
    sampler = PassSampler(nc, shards[rank], b, m, cfg.seed, rank,
                          PassSampler.steps_for(nc, shards, b, m))
    stopper = EarlyStopping(patience=cfg.patience)
    stopper.best, stopper.bad = pos.best, pos.bad
    plan = list(cfg.stages)
    val_dev = batch_to(val, device) if val is not None else None
    for stage_idx in range(pos.stage_idx, len(plan)):
        stage, epochs = plan[stage_idx]
        start = pos.epoch if stage_idx == pos.stage_idx else 0
        total_steps = epochs * cfg.steps_per_epoch
        for epoch in range(start, epochs):
            groups = groups_for(model, stage, cfg.stages_cfg, stage_epoch=epoch)
            losses = []
            for s in range(cfg.steps_per_epoch):
                i = epoch * cfg.steps_per_epoch + s
                set_lrs(opt, groups, warmup_cosine_factor(i, cfg.stages_cfg.warmup_steps,
                                                          total_steps))
                step = pos.step
                rng = np.random.default_rng([cfg.seed, rank, step])
                batch = batch_to(sample_batch(store, sampler.seeds(step), b, cfg.batch.fanouts,
                                              rng, heads, hetero), device)
                gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
                out = moco_step(model, key_model, queues, batch.graphs, b, opt, cfg.step, gen,
                                references=batch.references, culture_ids=batch.culture_ids,
                                heads_only=train_heads)
                losses.append(out["loss"])
                if on_step is not None:
                    on_step(step, out, batch)
                pos.step += 1
            val_loss = (validation_loss(model, key_model, queues, val_dev.graphs, b, cfg.step,
                                        references=val_dev.references,
                                        culture_ids=val_dev.culture_ids)
                        if val_dev is not None else float("nan"))
            pos.history.append({"stage": stage, "epoch": epoch, "step": pos.step,
                                "loss": sum(losses) / max(1, len(losses)), "val_loss": val_loss,
                                "queue_sum": queue_sum(queues)})
            last_epoch = epoch == epochs - 1
            stop = stage == 3 and math.isfinite(val_loss) and stopper.step(val_loss)
            pos.best, pos.bad = stopper.best, stopper.bad
            pos.stage_idx = stage_idx + (1 if last_epoch or stop else 0)
            pos.epoch = 0 if last_epoch or stop else epoch + 1
            if on_epoch is not None:
                on_epoch(pos, {**pos.history[-1], "step": pos.step})
            if stop:
                break
    return pos
