"""Ray Train for the fusion model (SPEC T1-T3): staged, data-parallel MoCo training.

`run_train(embed_dir, out, cfg)` builds the item graphs from an embed run, puts
one read-only `training.batch.ItemStore` of the training items (vectors, the
item graph as a CSR, culture means) in the object store (zero-copy for every
worker on a node), and runs a TorchTrainer whose workers call the one loop
`training.loop.train`: each worker seeds its mini-batches from its own shard
of the items, so W workers see W times the items per step. Checkpoints every
epoch (model, momentum encoder, queues, optimiser, position with the
early-stopping state, the TrainConfig) and resumes from the last one after a
failure (FailureConfig). The finished model's culture embeddings (general +
one per theme) are exported as `culture_embeddings.parquet` (culture, head,
vector), the all-pairs job's culture-level input.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from culturesim_ray import io
from culturesim_ray.layout import TrainLayout
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.training.config import TrainConfig, merge_train_config
from culturesim_ray.training.data import TrainingData
from culturesim_ray.training.loop import Position, make_queues, queue_sum, train
from culturesim_ray.training.stages import param_groups

DEFAULT_STAGES = TrainConfig().stages


def model_config(cfg: TrainConfig, in_dims: dict[str, int], themes: list[str],
                 relations: list[list[str]]) -> CultureSimConfig:
    """The model's config from a TrainConfig's model section and the data's shape."""
    ms = cfg.model
    return CultureSimConfig(in_dims, themes, hidden=ms.hidden, out=ms.out, layers=ms.layers,
                            conv=ms.conv, fusion=ms.fusion, heads=ms.heads, dropout=ms.dropout,
                            graph=ms.graph, relations=relations if ms.graph == "hetero" else [],
                            raw_weight=ms.raw_weight)


def set_centers(model: CultureSim, means: dict[str, torch.Tensor]) -> None:
    """Each branch centres its input on its modality's mean item vector."""
    with torch.no_grad():
        for m, mu in means.items():
            if m in model.branches:
                model.branches[m].center.copy_(mu.to(model.branches[m].center))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    from culturesim_ray import dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    mcfg = CultureSimConfig(**config["model"])
    store, val = ray.get(config["store"]), ray.get(config["val"])
    device = torch.device("cpu")
    if cfg.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    model = CultureSim(mcfg)
    set_centers(model, store.item_means())
    model.to(device)
    key_model = copy.deepcopy(model)
    queues = make_queues(model, cfg.queue_size, device)
    opt = torch.optim.AdamW(param_groups(model, cfg.stages[0][0], cfg.stages_cfg))
    pos = Position()
    ckpt = ray.train.get_checkpoint()
    if ckpt:  # resume: everything that shapes the next step
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / "state.pt", weights_only=True, map_location=device)
        model.load_state_dict(st["model"])
        key_model.load_state_dict(st["key_model"])
        for h, q in queues.items():
            q.load_state_dict(st["queues"][h])
        opt.load_state_dict(st["optimizer"])
        pos = Position.from_dict(json.loads(st["position"]))
        pos.resumes.append({"step": pos.step, "queue_sum": queue_sum(queues)})
    # one step runs a forward per head and view before its backward, which torch DDP
    # cannot track; gradients are averaged over workers by hand in moco_step instead
    dist.broadcast_parameters(model)
    dist.broadcast_parameters(key_model)

    def on_epoch(position: Position, metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save({"model": model.state_dict(), "key_model": key_model.state_dict(),
                            "queues": {h: q.state_dict() for h, q in queues.items()},
                            "optimizer": opt.state_dict(),
                            "position": json.dumps(position.to_dict()),
                            "train_config": json.dumps(cfg.to_dict())},
                           Path(tmp) / "state.pt")
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    train(model, key_model, queues, opt, store, cfg, pos, val, rank, world, device, on_epoch)


def export_culture_embeddings(model: CultureSim, data: TrainingData) -> pa.Table:
    """culture, head, vector for the general head and every theme head (eval mode, all
    items), assembled from Arrow arrays."""
    model.eval()
    with torch.no_grad():
        out = model(data.graphs, len(data.cultures))
    idx = out["cultures"].cpu().numpy()
    names = pa.array(data.cultures, pa.string()).take(pa.array(idx))
    parts = []
    for head in ["general", *model.cfg.themes]:
        v = out[head].detach().cpu().numpy().astype(np.float32)
        offsets = pa.array(np.arange(len(v) + 1, dtype=np.int32) * v.shape[1])
        vec = pa.ListArray.from_arrays(offsets, pa.array(v.reshape(-1), pa.float32()))
        parts.append(pa.table({"culture": names,
                               "head": pa.array([head] * len(idx), pa.string()),
                               "vector": vec}))
    return pa.concat_tables(parts)


def _val_split(tables: dict[str, pa.Table], cfg: TrainConfig
               ) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """(training tables, validation tables): val_fraction of each culture's remaining
    items (`split_holdout` with another seed), at most val_max_items in all."""
    from culturesim_ray.training.data import split_holdout

    if cfg.val_fraction <= 0:
        return tables, {}
    train_t, val_t = split_holdout(tables, cfg.val_fraction, cfg.holdout_seed + 1)
    total = sum(t.num_rows for t in val_t.values())
    if total > cfg.val_max_items:  # keep a fixed share of each modality's rows
        keep = cfg.val_max_items / total
        val_t = {m: t.slice(0, int(t.num_rows * keep)) for m, t in val_t.items()}
        # rows cut from validation go back to training
        from culturesim_ray.training.data import drop_items

        ids = {i for t in val_t.values() for i in t.column("item_id").to_pylist()}
        train_t = drop_items(tables, ids)
    return train_t, {m: t for m, t in val_t.items() if t.num_rows}


def _check_gpus(cfg: TrainConfig) -> None:
    """--gpu on a cluster without enough GPUs fails at once, not after a placement wait."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    if cfg.use_gpu and have < cfg.num_workers:
        raise ValueError(f"--gpu: {cfg.num_workers} training worker(s) need one GPU each, but "
                         f"the Ray cluster has {have:g} GPU(s); drop --gpu or add GPU nodes")


def run_train(embed_dir: str, out: str, cfg: TrainConfig | None = None, log: Any = print,
              **overrides: Any) -> dict[str, Any]:
    """Train the fusion model on an embed run's items, less a held-out split.

    cfg: a TrainConfig (default: its defaults); overrides: any of its fields or the
    flat aliases of `training.config.ALIASES` (num_workers=2, hidden=32, stages=...),
    merged by `merge_train_config`, the same function the CLI uses.

    holdout: the share of each culture's items (per modality) the model never trains
    on (`training.data.holdout_mask`: chosen by a keyed hash of the item id, so the
    same split on every rerun); their ids go to OUT/holdout.parquet for retrieval
    benchmarks. val_fraction of the rest is held out for early stopping, in a graph
    of its own. The exported culture embeddings are the trained model applied to
    every item (inference, not training), so the culture map covers the corpus."""
    import ray

    from culturesim_ray.pipeline.embed import read_embeddings
    from culturesim_ray.pipeline.ray_env import init_ray
    from culturesim_ray.pipeline.trainer import fit_torch
    from culturesim_ray.training.batch import store_from_graphs
    from culturesim_ray.training.data import build_training_data, held_out_ids, split_holdout
    from culturesim_ray.training.loop import validation_batch

    cfg = merge_train_config(cfg.to_dict() if cfg else None, overrides)
    started = time.time()
    relations = cfg.relations
    if relations and not io.is_s3(relations):  # serving rebuilds the graphs from the manifest
        relations = str(Path(relations).absolute())
    k = cfg.batch.k
    tables = read_embeddings(embed_dir)
    train_tables, held = split_holdout(tables, cfg.holdout, cfg.holdout_seed)
    fit_tables, val_tables = _val_split(train_tables, cfg)
    full = build_training_data(tables, k=k, relations_path=relations)
    data = build_training_data(fit_tables, k=k, relations_path=relations, themes=full.themes)
    if full.cultures != data.cultures:  # holdout_mask keeps an item of every culture
        raise RuntimeError("the held-out split removed a culture")
    mcfg = model_config(cfg, data.in_dims, data.themes, data.relations)
    log(f"train: {len(data.cultures)} cultures, modalities {sorted(data.graphs)}, "
        f"themes {data.themes}, {cfg.model.graph} graph, {cfg.num_workers} workers, "
        f"batches of {cfg.batch.batch_cultures} cultures x {cfg.batch.items_per_culture} "
        f"items, fan-outs {list(cfg.batch.fanouts)}")
    if cfg.model.graph == "hetero":
        log(f"train: cross-modal edge types {[tuple(r) for r in data.relations] or 'none'}")
    if full.quarantined_relations:
        qpath = Path(TrainLayout(out).relations_quarantine)
        qpath.parent.mkdir(parents=True, exist_ok=True)
        qpath.write_text("".join(json.dumps(q, default=str) + "\n"
                                 for q in full.quarantined_relations))
        log(f"train: {len(full.quarantined_relations)} relations rows quarantined -> {qpath}")
    store = store_from_graphs(data.graphs, data.cultures, data.themes)
    heads = ["general", *data.themes]
    val = None
    if val_tables:
        vdata = build_training_data(val_tables, k=k, themes=full.themes)
        pos = {c: i for i, c in enumerate(full.cultures)}
        remap = torch.tensor([pos[c] for c in vdata.cultures], dtype=torch.long)
        for g in vdata.graphs.values():
            g.culture = remap[g.culture]
        val = validation_batch(store_from_graphs(vdata.graphs, full.cultures, full.themes),
                               cfg, heads)
    init_ray()
    _check_gpus(cfg)
    outp = Path(out).absolute()
    layout = TrainLayout(str(outp))
    config = {"train": cfg.to_dict(), "model": asdict(mcfg), "store": ray.put(store),
              "val": ray.put(val)}
    checkpoint = fit_torch(train_loop_per_worker, config, "culturesim", outp, cfg.num_workers,
                           cfg.use_gpu, cfg.max_failures, cpus_per_worker=cfg.cpus_per_worker)
    with checkpoint.as_directory() as d:
        st = torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")
    model = CultureSim(mcfg)
    model.load_state_dict(st["model"])
    torch.save(st["model"], layout.model)
    Path(layout.model_config).write_text(json.dumps(asdict(mcfg)))
    table = export_culture_embeddings(model, full)
    held_table = held_out_ids(held)
    io.write_table(held_table, layout.holdout)
    io.write_table(table, layout.culture_embeddings)
    position = json.loads(st["position"])
    manifest = io.manifest("train", {**cfg.to_dict(), "relations": relations,
                                     "model_config": asdict(mcfg)},
                           {"cultures": len(data.cultures), "steps": position["step"],
                            "train_items": store.num_items,
                            "validation_items": sum(t.num_rows for t in val_tables.values()),
                            "held_out_items": held_table.num_rows,
                            "relations_quarantined": len(full.quarantined_relations)}, started,
                           history=position["history"], resumes=position["resumes"])
    io.write_json(manifest, layout.manifest)
    log(f"train: {position['step']} steps; culture embeddings -> {layout.culture_embeddings}")
    return manifest
