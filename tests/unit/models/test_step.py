"""MoCo steps of the fusion model on synthetic cultures: loss falls, queues fill."""

from __future__ import annotations

import copy

import pytest
import torch

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.queue import MoCoQueue
from culturesim_ray.training.step import StepConfig, moco_step
from synthetic_data import synthetic

HETERO = {"graph": "hetero",
          "relations": [["image", "artifact", "text"], ["text", "artifact", "image"]]}


@pytest.mark.parametrize("variant", [{}, HETERO], ids=["homo", "hetero"])
def test_moco_steps_lower_the_loss_and_fill_queues(variant):
    torch.manual_seed(0)
    graphs = synthetic(cross=bool(variant))
    model = CultureSim(CultureSimConfig({"text": 24, "image": 16}, ["music", "craft"],
                                        hidden=32, out=16, **variant))
    key_model = copy.deepcopy(model)
    queues = {h: MoCoQueue(16, 64) for h in ["general", "music", "craft"]}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    cfg = StepConfig(keep=0.6)
    hist = [moco_step(model, key_model, queues, graphs, 8, opt, cfg, gen)["loss_general"]
            for _ in range(40)]
    assert sum(hist[-5:]) / 5 < 0.7 * sum(hist[:5]) / 5
    assert queues["general"].filled().all() and queues["music"].filled().any()
    # the key encoder moved towards the query encoder but is not a copy
    p_q = next(model.parameters())
    p_k = next(key_model.parameters())
    assert not torch.equal(p_q, p_k)
    model.eval()
    out = model(graphs, 8)
    assert out["general"].shape == (8, 16) and out["gate"].shape == (8, 2)
    torch.testing.assert_close(out["music"].norm(dim=1), torch.ones(8))
