"""Ray Train for the fusion model (SPEC T1-T3): staged, data-parallel MoCo training.

`run_train(embed_dir, out, cfg)` runs the item graph stage (`pipeline/graph.py`,
Ray tasks with FAISS) on an embed run, cuts it into the training store
(`training.store`, a Ray task: splits, CSR graphs, culture means) that every
worker memory-maps (nothing of size N passes through the driver or is copied
per worker), and runs a TorchTrainer whose workers call the one loop
`training.loop.train`: each worker seeds its mini-batches from its own shard
of the items, so W workers see W times the items per step. Checkpoints every
epoch (model, momentum encoder, queues, optimiser, position with the
early-stopping state, the TrainConfig) and resumes from the last one after a
failure (FailureConfig). The finished model's culture embeddings (general +
one per theme) are exported as `culture_embeddings.parquet` (culture, head,
vector), the all-pairs job's culture-level input, and the serving state
(`serving.artifacts`) by a Ray task over the whole corpus.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from culturesim_ray import io
from culturesim_ray.layout import GraphLayout, TrainLayout
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.names import alike_note
from culturesim_ray.ops.query_score import imbalance_note
from culturesim_ray.pipeline.trainer import StepTeller
from culturesim_ray.runs import embed_notes, write_map_whitening
from culturesim_ray.training.batch import ItemStore
from culturesim_ray.training.config import TrainConfig, merge_train_config
from culturesim_ray.training.loop import Position, init_training, queue_sum, train

DEFAULT_STAGES = TrainConfig().stages


def model_config(cfg: TrainConfig, in_dims: dict[str, int], themes: list[str],
                 relations: list[list[str]]) -> CultureSimConfig:
    """The model's config from a TrainConfig's model section and the data's shape."""
    ms = cfg.model
    return CultureSimConfig(in_dims, themes, hidden=ms.hidden, out=ms.out, layers=ms.layers,
                            conv=ms.conv, fusion=ms.fusion, heads=ms.heads, dropout=ms.dropout,
                            graph=ms.graph, relations=relations if ms.graph == "hetero" else [],
                            raw_weight=ms.raw_weight, map_learned=ms.map_learned,
                            map_learned_share=ms.map_learned_share,
                            map_whiten=ms.map_whiten, theme_raw=ms.theme_raw)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    from culturesim_ray import dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    mcfg = CultureSimConfig(**config["model"])
    from culturesim_ray.training.loop import validation_batch
    from culturesim_ray.training.store import open_store

    store = open_store(config["store"], "train")  # memory maps, shared by the node's workers
    val_store = open_store(config["store"], "val")
    val = (validation_batch(val_store, cfg, ["general", *store.theme_names])
           if len(val_store.seedable) else None)
    device = torch.device("cpu")
    if cfg.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    model, key_model, queues, opt = init_training(store, mcfg, cfg, device)
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
        teller.tell(position.step, wait=True)

    teller = StepTeller(config.get("progress"), rank)  # the driver's progress bar
    train(model, key_model, queues, opt, store, cfg, pos, val, rank, world, device, on_epoch,
          lambda step, *_: teller.tell(step + 1))


def _check_gpus(cfg: TrainConfig) -> None:
    """--gpu on a cluster without enough GPUs fails at once, not after a placement wait."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    if cfg.use_gpu and have < cfg.num_workers:
        raise ValueError(f"--gpu: {cfg.num_workers} training worker(s) need one GPU each, but "
                         f"the Ray cluster has {have:g} GPU(s); drop --gpu or add GPU nodes")


def _store_task(graph_root: str, store_root: str, holdout_path: str,
                cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Ray task body: the training store from the graph (`training.store`) and the
    held-out ids file; returns the store's small description."""
    from culturesim_ray.training.store import write_store

    cfg = TrainConfig.from_dict(cfg_dict)
    meta = write_store(graph_root, store_root, cfg.holdout, cfg.holdout_seed, cfg.val_fraction,
                       cfg.val_max_items, cfg.model.graph == "hetero")
    io.write_table(meta.pop("held"), holdout_path)
    return meta


def _item_ids(store_root: str) -> dict[str, Any]:
    """Per modality, the item ids in the store's (the graph's) row order."""
    meta = io.read_json(os.path.join(store_root, "store.json"))
    layout = GraphLayout(meta["graph_root"])
    return {m: io.read_table(layout.items(m), columns=["item_id"]).column("item_id")
            for m in meta["modalities"]}


def export_corpus(model: CultureSim, store: ItemStore, layout: TrainLayout,
                  query_mix: dict[str, Any] | None = None,
                  item_ids: dict[str, Any] | None = None,
                  indexes: dict[str, str] | None = None) -> pa.Table:
    """The trained model over every item of `store` (its `full` graph), streamed from
    its memory maps (`training.export`: every layer's states to files, a block of
    items at a time; removed at the end): writes culture_embeddings.parquet and the
    serving state with `query_mix`, `item_ids` and the graph stage's `indexes`
    (`serving.artifacts.write_states`); returns the culture table."""
    import shutil

    from culturesim_ray.serving.artifacts import write_states
    from culturesim_ray.training.export import (
        culture_sums,
        culture_table,
        heads_from_sums,
        map_whitening,
        write_layer_states,
    )

    states = write_layer_states(model, store, layout.export_states)
    whiten = model.cfg.map_whiten > 0 and model.cfg.raw_weight > 0
    sums = culture_sums(model, store, states, scatter=whiten)
    table = culture_table(heads_from_sums(model, sums), store.cultures, model.cfg.themes)
    io.write_table(table, layout.culture_embeddings)
    if whiten:
        write_map_whitening(map_whitening(sums, model.cfg.map_whiten), layout.map_whitening)
    del sums
    write_states({m: s[:-1] for m, s in states.items()}, store.x, store.culture,
                 layout.serving, layout.model, cultures=store.cultures, query_mix=query_mix,
                 item_ids=item_ids, indexes=indexes)
    del states
    shutil.rmtree(layout.export_states)
    return table


def _graph_indexes(store_root: str) -> dict[str, str]:
    """Per modality, the graph stage's index file over the store's rows (where the
    graph stage wrote one: runs from before it did have none)."""
    meta = io.read_json(os.path.join(store_root, "store.json"))
    layout = GraphLayout(meta["graph_root"])
    return {m: layout.index(m) for m in meta["modalities"] if os.path.exists(layout.index(m))}


def _export_task(store_root: str, train_root: str,
                 query_mix: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ray task body: `export_corpus` over the run's store with the query mix
    (`TrainConfig.query`; None: the one the run's serving state has); then the theme
    gate fitted on the store's training items as queries (`serving.gate`), written
    into the model's weights. Returns the row count and the gate's report."""
    from culturesim_ray.runs import load_fusion_model
    from culturesim_ray.serving.artifacts import load_serving_state, record_gate
    from culturesim_ray.serving.gate import fit_run_gate, set_gate
    from culturesim_ray.serving.predictor import FusionPredictor
    from culturesim_ray.training.store import open_store

    layout = TrainLayout(train_root)
    model = load_fusion_model(train_root)
    if query_mix is None:  # a re-export (add-theme) keeps the run's mix
        old = os.path.join(layout.serving, "manifest.json")
        query_mix = io.read_json(old).get("query_mix") if os.path.exists(old) else None
    table = export_corpus(model, open_store(store_root, "full"), layout, query_mix,
                          _item_ids(store_root), _graph_indexes(store_root))
    predictor = FusionPredictor(model, None, state=load_serving_state(layout.serving,
                                                                      layout.model))
    fitted = fit_run_gate(predictor, open_store(store_root, "train"),
                          open_store(store_root, "val").seedable)
    report = None
    if fitted is not None:
        gate, report = fitted
        set_gate(model, gate)
        tmp = layout.model + ".tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, layout.model)
        record_gate(layout.serving, layout.model, report)
    return {"rows": table.num_rows, "gate": report}


def run_train(embed_dir: str, out: str, cfg: TrainConfig | None = None, log: Any = print,
              **overrides: Any) -> dict[str, Any]:
    """Train the fusion model on an embed run's items, less a held-out split.

    cfg: a TrainConfig (default: its defaults); overrides: any of its fields or the
    flat aliases of `training.config.ALIASES` (num_workers=2, hidden=32, stages=...),
    merged by `merge_train_config`, the same function the CLI uses.

    holdout: the share of each culture's items (per modality) the model never trains
    on (`training.data.holdout_mask`: chosen by a keyed hash of the item id, so the
    same split on every rerun); their ids go to OUT/holdout.parquet for retrieval
    benchmarks. val_fraction of the rest is held out for early stopping (seeds never
    trained on; their neighbours anything not held out). The exported culture embeddings are the trained model applied to
    every item (inference, not training), so the culture map covers the corpus."""
    import ray

    from culturesim_ray.graph.build import GraphConfig
    from culturesim_ray.pipeline.graph import run_graph
    from culturesim_ray.pipeline.ray_env import init_ray
    from culturesim_ray.pipeline.trainer import fit_torch, step_progress

    io.require_local(out, "train --out", "the graph and serving state are memory-mapped, "
                     "the checkpoints resume from it")
    cfg = merge_train_config(cfg.to_dict() if cfg else None, overrides)
    started = time.time()
    relations = cfg.relations
    if relations and not io.is_s3(relations):  # serving rebuilds the graphs from the manifest
        relations = str(Path(relations).absolute())
    outp = Path(out).absolute()
    layout = TrainLayout(str(outp))
    outp.mkdir(parents=True, exist_ok=True)
    init_ray()
    _check_gpus(cfg)
    # the item graph stage (Ray tasks), then the store the workers memory-map
    graph = run_graph(embed_dir, layout.graph.root, GraphConfig(k=cfg.batch.k),
                      relations=relations, log=log)
    store_root = layout.store
    meta = ray.get(ray.remote(num_cpus=1)(_store_task).remote(
        layout.graph.root, store_root, layout.holdout, cfg.to_dict()))
    if Path(layout.graph.relations_quarantine).exists():
        Path(layout.relations_quarantine).write_text(
            Path(layout.graph.relations_quarantine).read_text())
    quarantined = graph["counts"].get("relations_quarantined", 0)
    if quarantined:
        log(f"train: {quarantined} relations rows quarantined -> {layout.relations_quarantine}")
    if len(meta["cultures"]) < 2:
        raise ValueError(f"{embed_dir}: items of {len(meta['cultures'])} culture(s) "
                         f"{list(meta['cultures'])}; the model learns what tells cultures apart, "
                         "so training needs items of at least 2")
    mcfg = model_config(cfg, meta["in_dims"], meta["themes"], meta["relations"])
    log(f"train: {len(meta['cultures'])} cultures, modalities {meta['modalities']}, "
        f"themes {meta['themes']}, {cfg.model.graph} graph, {cfg.num_workers} workers, "
        f"batches of {cfg.batch.batch_cultures} cultures x {cfg.batch.items_per_culture} "
        f"items, fan-outs {list(cfg.batch.fanouts)}; items: {meta['counts']}")
    notes = [*embed_notes(embed_dir),
             *[n for n in [imbalance_note(meta["culture_items"], cfg.query),
                           alike_note(meta["cultures"])] if n]]
    for note in notes:
        log(f"train: note: {note}")
    if cfg.model.graph == "hetero":
        log(f"train: cross-modal edge types {[tuple(r) for r in meta['relations']] or 'none'}")
    with step_progress(sum(e for _, e in cfg.stages) * cfg.steps_per_epoch) as counter:
        config = {"train": cfg.to_dict(), "model": asdict(mcfg), "store": store_root,
                  "progress": counter}
        checkpoint = fit_torch(train_loop_per_worker, config, "culturesim", outp,
                               cfg.num_workers, cfg.use_gpu, cfg.max_failures,
                               cpus_per_worker=cfg.cpus_per_worker)
    with checkpoint.as_directory() as d:
        st = torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")
    torch.save(st["model"], layout.model)
    Path(layout.model_config).write_text(json.dumps(asdict(mcfg)))
    exported = ray.get(ray.remote(num_cpus=1)(_export_task).remote(store_root, str(outp),
                                                                    cfg.query.to_dict()))
    position = json.loads(st["position"])
    embed_input = embed_dir if io.is_s3(embed_dir) else str(Path(embed_dir).absolute())
    manifest = io.manifest("train", {**cfg.to_dict(), "relations": relations,
                                     "model_config": asdict(mcfg)},
                           {"cultures": len(meta["cultures"]), "steps": position["step"],
                            "train_items": meta["counts"]["train"],
                            "validation_items": meta["counts"]["val"],
                            "held_out_items": meta["counts"]["held"],
                            "relations_quarantined": quarantined,
                            "culture_items": meta["culture_items"]}, started,
                           history=position["history"], resumes=position["resumes"],
                           graph={"recall_at_k": {m: v.get("recall_at_k") for m, v in
                                                  graph.get("modalities", {}).items()}},
                           gate=exported["gate"], notes=notes, input=embed_input)
    io.write_json(manifest, layout.manifest)
    log(f"train: {position['step']} steps; culture embeddings -> {layout.culture_embeddings}")
    return manifest
