"""Which parameters each stage trains; schedule and early stopping."""

from __future__ import annotations

import copy

import pytest
import torch

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.queue import MoCoQueue
from culturesim_ray.training.stages import (
    EarlyStopping,
    StageConfig,
    param_groups,
    warmup_cosine,
)
from culturesim_ray.training.step import StepConfig, moco_step
from synthetic_data import synthetic


def trained_after_one_step(stage: int, stage_epoch: int = 0) -> dict[str, bool]:
    torch.manual_seed(0)
    model = CultureSim(CultureSimConfig({"text": 24, "image": 16}, ["music"], hidden=32, out=16,
                                        layers=2, dropout=0.0))
    key = copy.deepcopy(model)
    groups = param_groups(model, stage, StageConfig(), stage_epoch)
    opt = torch.optim.AdamW(groups)
    before = {n: p.clone() for n, p in model.named_parameters()}
    queues = {h: MoCoQueue(16, 32) for h in ("general", "music")}
    moco_step(model, key, queues, synthetic(), 8, opt, StepConfig(keep=0.8),
              torch.Generator().manual_seed(0))
    return {n: not torch.equal(before[n], p) for n, p in model.named_parameters()}


def test_stage1_freezes_branches_trains_fusion_and_heads():
    moved = trained_after_one_step(1)
    assert not any(v for n, v in moved.items() if n.startswith("branches."))
    assert moved["projection.net.0.weight"] and moved["fusion.norm_out.weight"]


def test_stage2_unfreezes_top_layers_gradually():
    first = trained_after_one_step(2, stage_epoch=0)
    assert first["branches.text.convs.1.lin_l.weight"]  # top conv layer opens first
    assert not first["branches.text.convs.0.lin_l.weight"]
    assert not first["branches.text.input.weight"]
    later = trained_after_one_step(2, stage_epoch=2)
    assert later["branches.text.convs.0.lin_l.weight"] and later["branches.text.input.weight"]


def test_stage3_trains_everything_with_weight_decay():
    moved = trained_after_one_step(3)
    assert all(moved[n] for n in moved if n.endswith("weight") and "norm" not in n
               and "gate" not in n)
    groups = param_groups(CultureSim(CultureSimConfig({"text": 4}, [], hidden=8, out=4)), 3,
                          StageConfig())
    assert all(g["weight_decay"] > 0 and g["lr"] == 1e-5 for g in groups)
    with pytest.raises(ValueError):
        param_groups(CultureSim(CultureSimConfig({"text": 4}, [], hidden=8, out=4)), 4,
                     StageConfig())


def test_warmup_cosine_and_early_stopping():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = warmup_cosine(opt, warmup=4, total=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.5) and lrs[-1] < 0.05
    stop = EarlyStopping(patience=2)
    assert [stop.step(v) for v in (1.0, 0.9, 0.95, 0.91)] == [False, False, False, True]
