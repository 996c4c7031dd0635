"""Stage-wise fine-tuning (SPEC T2): which parameters train, at which rate.

Freezing is done with optimiser parameter groups (lr 0), never by flipping
`requires_grad`, which breaks DDP's bucket layout.

- stage 1: branches frozen; fusion and heads at lr1 (1e-3);
- stage 2: the branches' top layers unfrozen gradually at lr2 (1e-4): after
  `unfreeze_every` epochs of the stage one more conv layer (from the top)
  joins, the input projection last;
- stage 3: everything at lr3 (1e-5) with weight decay; early stopping on a
  validation loss (`EarlyStopping`).
Every stage: AdamW, linear warm-up then cosine decay (`warmup_cosine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from culturesim_ray.models.culturesim import CultureSim


@dataclass
class StageConfig:
    lr1: float = 1e-3
    lr2: float = 1e-4
    lr3: float = 1e-5
    weight_decay: float = 0.01
    unfreeze_every: int = 1
    warmup_steps: int = 10


def branch_layers(model: CultureSim) -> list[list[nn.Parameter]]:
    """Branch parameters from the top conv layer down to the input projection."""
    layers = []
    depth = len(next(iter(model.branches.values())).convs)
    for i in reversed(range(depth)):
        layers.append([p for b in model.branches.values()
                       for p in list(b.convs[i].parameters()) + list(b.norms[i].parameters())])
    layers.append([p for b in model.branches.values() for p in b.input.parameters()])
    return layers


def stage_lr(cfg: StageConfig, stage: int) -> float:
    """The head/fusion learning rate of `stage` (1: lr1, 2: lr2, 3: lr3)."""
    return {1: cfg.lr1, 2: cfg.lr2, 3: cfg.lr3}[stage]


def param_groups(model: CultureSim, stage: int, cfg: StageConfig,
                 stage_epoch: int = 0) -> list[dict]:
    """Parameter groups for `stage` (1, 2, 3); frozen groups have lr 0."""
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    branch_ids = {id(p) for b in model.branches.values() for p in b.parameters()}
    rest = [p for p in model.parameters() if id(p) not in branch_ids]
    layers = branch_layers(model)
    if stage == 1:
        open_layers = 0
    elif stage == 2:
        open_layers = min(len(layers), 1 + stage_epoch // max(1, cfg.unfreeze_every))
    else:
        open_layers = len(layers)
    lr_head = stage_lr(cfg, stage)
    wd = cfg.weight_decay if stage == 3 else 0.0
    groups = [{"params": rest, "lr": lr_head, "weight_decay": wd, "name": "fusion+heads"}]
    for i, params in enumerate(layers):
        trains = i < open_layers
        groups.append({"params": params, "lr": lr_head if trains else 0.0,
                       "weight_decay": wd if trains else 0.0, "name": f"branch-layer-{i}"})
    return groups


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at `step`: linear warm-up over `warmup` steps, then
    cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine_factor` as a LambdaLR scheduler."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine_factor(step, warmup, total))


class EarlyStopping:
    """Stop when the validation loss has not improved by `min_delta` for `patience` checks."""

    def __init__(self, patience: int = 3, min_delta: float = 1e-4) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.bad = 0

    def step(self, value: float) -> bool:
        """Record a validation loss; True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience
