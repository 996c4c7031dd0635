"""Ray Train for the fusion model (SPEC T1-T3): staged, data-parallel MoCo training.

`run_train(embed_dir, out)` builds the item graphs from an embed run, runs a
TorchTrainer whose workers call the pure `moco_step` through the stages
(param-group freezing, warm-up + cosine per stage, early stopping in stage
3), checkpoints every epoch (model, momentum encoder, queues, optimiser,
stage, epoch, step, loss history) and resumes from the last checkpoint after
a failure (FailureConfig). The finished model's culture embeddings (general +
one per theme) are exported as `culture_embeddings.parquet` (culture, head,
vector), the all-pairs job's culture-level input.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from culturesim_ray import io
from culturesim_ray.layout import TrainLayout
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.models.queue import MoCoQueue
from culturesim_ray.training.data import TrainingData
from culturesim_ray.training.stages import EarlyStopping, StageConfig, param_groups
from culturesim_ray.training.step import (
    StepConfig,
    moco_step,
    reference_similarities,
    validation_loss,
)

DEFAULT_STAGES = ((1, 4), (2, 3), (3, 3))  # (stage, epochs)


def _set_lrs(opt: torch.optim.Optimizer, groups: list[dict], factor: float) -> None:
    for g, spec in zip(opt.param_groups, groups, strict=True):
        g["lr"] = spec["lr"] * factor
        g["weight_decay"] = spec["weight_decay"]


def _queue_sum(queues: dict[str, MoCoQueue]) -> float:
    """A fingerprint of the queues' state (keys, cultures, pointers), for resume checks."""
    return float(sum(q.keys.double().sum() + q.cultures.sum() + q.ptr for q in queues.values()))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    data: TrainingData = config["data"]
    mcfg = CultureSimConfig(**config["model"])
    scfg, stcfg = StepConfig(**config["step"]), StageConfig(**config["stages_cfg"])
    torch.manual_seed(config["seed"])
    model = CultureSim(mcfg)
    model.set_centers(data.graphs)
    key_model = copy.deepcopy(model)
    heads = ["general", *mcfg.themes]
    queues = {h: MoCoQueue(mcfg.head_dim(h), config["queue_size"]) for h in heads}
    plan = [tuple(s) for s in config["stages"]]
    opt = torch.optim.AdamW(param_groups(model, plan[0][0], stcfg))
    pos: dict[str, Any] = {"stage_idx": 0, "epoch": 0, "step": 0, "history": [], "resumes": []}
    ckpt = ray.train.get_checkpoint()
    if ckpt:  # resume: everything that shapes the next step
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / "state.pt", weights_only=True)
        model.load_state_dict(st["model"])
        key_model.load_state_dict(st["key_model"])
        for h in heads:
            queues[h].load_state_dict(st["queues"][h])
        opt.load_state_dict(st["optimizer"])
        pos = json.loads(st["position"])
        pos["resumes"].append({"step": pos["step"], "queue_sum": _queue_sum(queues)})
    # one step runs a forward per head and view before its backward, which torch DDP
    # cannot track; gradients are averaged over workers by hand in moco_step instead
    from culturesim_ray import dist

    dist.broadcast_parameters(model)
    dist.broadcast_parameters(key_model)
    ddp = model
    gen = torch.Generator().manual_seed(config["seed"] * 1000 + rank + pos["step"])
    n = len(data.cultures)
    refs = reference_similarities(data.graphs, n, mcfg.themes)  # constant: once per run
    stopper = EarlyStopping(patience=config["patience"])
    for stage_idx in range(pos["stage_idx"], len(plan)):
        stage, epochs = plan[stage_idx]
        start = pos["epoch"] if stage_idx == pos["stage_idx"] else 0
        total_steps = epochs * config["steps_per_epoch"]
        for epoch in range(start, epochs):
            groups = param_groups(model, stage, stcfg, stage_epoch=epoch)
            losses = []
            for s in range(config["steps_per_epoch"]):
                i = epoch * config["steps_per_epoch"] + s
                warm = stcfg.warmup_steps
                factor = (i + 1) / warm if i < warm else \
                    0.5 * (1 + math.cos(math.pi * min(1.0, (i - warm) / max(1, total_steps - warm))))
                _set_lrs(opt, groups, factor)
                losses.append(moco_step(ddp, key_model, queues, data.graphs, n, opt, scfg, gen,
                                        references=refs)["loss"])
                pos["step"] += 1
            val = validation_loss(ddp, key_model, queues, data.graphs, n, scfg, references=refs)
            pos["history"].append({"stage": stage, "epoch": epoch, "step": pos["step"],
                                   "loss": sum(losses) / len(losses), "val_loss": val,
                                   "queue_sum": _queue_sum(queues)})
            last_epoch = epoch == epochs - 1
            stop = stage == 3 and stopper.step(val)
            pos.update(stage_idx=stage_idx + (1 if last_epoch or stop else 0),
                       epoch=0 if last_epoch or stop else epoch + 1)
            metrics = {**pos["history"][-1], "step": pos["step"]}
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    torch.save({"model": model.state_dict(), "key_model": key_model.state_dict(),
                                "queues": {h: q.state_dict() for h, q in queues.items()},
                                "optimizer": opt.state_dict(), "position": json.dumps(pos)},
                               Path(tmp) / "state.pt")
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)
            if stop:
                break


def export_culture_embeddings(model: CultureSim, data: TrainingData) -> pa.Table:
    """culture, head, vector for the general head and every theme head (eval mode, all items)."""
    model.eval()
    with torch.no_grad():
        out = model(data.graphs, len(data.cultures))
    rows = []
    for head in ["general", *model.cfg.themes]:
        for i, c in enumerate(out["cultures"].tolist()):
            rows.append({"culture": data.cultures[c], "head": head,
                         "vector": out[head][i].tolist()})
    return pa.Table.from_pylist(rows)


def run_train(embed_dir: str, out: str, num_workers: int = 2, use_gpu: bool = False,
              stages: tuple[tuple[int, int], ...] = DEFAULT_STAGES, steps_per_epoch: int = 10,
              hidden: int = 128, out_dim: int = 64, queue_size: int = 256, seed: int = 0,
              max_failures: int = 2, cpus_per_worker: float | None = None,
              graph: str = "homo", relations: str | None = None,
              holdout: float = 0.2, holdout_seed: int = 0, raw_weight: float = 0.9,
              log: Any = print) -> dict[str, Any]:
    """Train the fusion model on an embed run's items, less a held-out split.

    holdout: the share of each culture's items (per modality) the model never trains
    on (`training.data.holdout_mask`: chosen by a keyed hash of the item id, so the
    same split on every rerun); their ids go to OUT/holdout.parquet for retrieval
    benchmarks. The exported culture embeddings are the trained model applied to
    every item (inference, not training), so the culture map covers the corpus.

    raw_weight: the raw residual's weight in the general embedding
    (`models.culturesim`); 0.9 won on the dev sets of benchmarks/truth.py (see
    benchmarks/RESULTS.md): the learned part alone fell well below the raw culture
    means on text-only corpora."""
    from culturesim_ray.pipeline.embed import read_embeddings
    from culturesim_ray.pipeline.ray_env import init_ray
    from culturesim_ray.pipeline.trainer import fit_torch
    from culturesim_ray.training.data import build_training_data

    started = time.time()
    if relations and not io.is_s3(relations):  # serving rebuilds the graphs from the manifest
        relations = str(Path(relations).absolute())
    from culturesim_ray.training.data import held_out_ids, split_holdout

    tables = read_embeddings(embed_dir)
    train_tables, held = split_holdout(tables, holdout, holdout_seed)
    full = build_training_data(tables, relations_path=relations)
    data = build_training_data(train_tables, relations_path=relations, themes=full.themes) \
        if holdout > 0 else full
    mcfg = CultureSimConfig(data.in_dims, data.themes, hidden=hidden, out=out_dim, graph=graph,
                            relations=data.relations if graph == "hetero" else [],
                            raw_weight=raw_weight)
    log(f"train: {len(data.cultures)} cultures, modalities {sorted(data.graphs)}, "
        f"themes {data.themes}, {graph} graph, {num_workers} workers")
    if graph == "hetero":
        log(f"train: cross-modal edge types {[tuple(r) for r in data.relations] or 'none'}")
    if full.quarantined_relations:
        qpath = Path(TrainLayout(out).relations_quarantine)
        qpath.parent.mkdir(parents=True, exist_ok=True)
        qpath.write_text("".join(json.dumps(q, default=str) + "\n"
                                 for q in full.quarantined_relations))
        log(f"train: {len(full.quarantined_relations)} relations rows quarantined -> {qpath}")
    init_ray()
    outp = Path(out).absolute()
    layout = TrainLayout(str(outp))
    config = {"data": data, "model": asdict(mcfg), "step": asdict(StepConfig()),
              "stages_cfg": asdict(StageConfig()), "stages": [list(s) for s in stages],
              "steps_per_epoch": steps_per_epoch, "queue_size": queue_size, "seed": seed,
              "patience": 2}
    checkpoint = fit_torch(train_loop_per_worker, config, "culturesim", outp, num_workers,
                           use_gpu, max_failures, cpus_per_worker=cpus_per_worker)
    with checkpoint.as_directory() as d:
        st = torch.load(Path(d) / "state.pt", weights_only=True)
    model = CultureSim(mcfg)
    model.load_state_dict(st["model"])
    torch.save(st["model"], layout.model)
    Path(layout.model_config).write_text(json.dumps(asdict(mcfg)))
    if full.cultures != data.cultures:  # holdout_mask keeps an item of every culture
        raise RuntimeError("the held-out split removed a culture")
    table = export_culture_embeddings(model, full)
    held_table = held_out_ids(held)
    io.write_table(held_table, layout.holdout)
    io.write_table(table, layout.culture_embeddings)
    position = json.loads(st["position"])
    manifest = io.manifest("train", {"num_workers": num_workers, "stages": stages,
                                     "steps_per_epoch": steps_per_epoch, "model": asdict(mcfg),
                                     "relations": relations, "holdout": holdout,
                                     "holdout_seed": holdout_seed},
                           {"cultures": len(data.cultures), "steps": position["step"],
                            "held_out_items": held_table.num_rows,
                            "relations_quarantined": len(full.quarantined_relations)}, started,
                           history=position["history"], resumes=position["resumes"])
    io.write_json(manifest, layout.manifest)
    log(f"train: {position['step']} steps; culture embeddings -> {layout.culture_embeddings}")
    return manifest
