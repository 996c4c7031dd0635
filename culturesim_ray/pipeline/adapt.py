"""Ray glue of `culturesim adapt`: continued MLM pretraining of the MiniLM text
encoder on a corpus's texts (pure parts in `training/adapt.py`).

Ray Data reads the corpus files (one task per file, streamed in chunks; only
text rows with a non-empty `text`) and Ray Train splits the rows over the
workers; each worker cuts its texts into word-piece windows and runs
`mlm_step` with DDP. Rank 0 checkpoints (weights with the MLM head, optimiser,
step, loss history) every `checkpoint_every` steps; a failed worker, or a rerun
of the same command into the same DIR, resumes from the last checkpoint (the
masking of step s is seeded by (seed, rank, s); the order texts arrive in
after a resume is Ray Data's, not replayed).

    DIR/config.json, model.safetensors, tokenizer files   the adapted BertModel
    DIR/adapt.json                                        config, base, steps, losses
    DIR/checkpoints/                                      Ray Train run (resume)

`culturesim embed CORPUS --text-model DIR` embeds with it.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from culturesim_ray import io, tables
from culturesim_ray.config import S3Config
from culturesim_ray.pipeline.trainer import StepTeller
from culturesim_ray.schema import check_row
from culturesim_ray.training.adapt import (
    AdaptConfig,
    collate,
    mlm_model,
    mlm_step,
    optimizer,
    save_encoder,
    token_windows,
)

CHECKPOINTS = "checkpoints"


def _texts_of_file(row: dict[str, Any], s3: S3Config | None) -> Iterator[dict[str, str]]:
    """Ray Data flat_map: the texts of one corpus file's text rows that the embed job
    would embed (the contract's own check, `schema.check_row`)."""
    for chunk in tables.iter_corpus_file(row["file"], s3):
        for i, r in enumerate(chunk):
            clean = check_row(r, i)
            if isinstance(clean, dict) and clean["modality"] == "text":
                yield {"text": clean["text"]}


def _windows(shard: Any, tokenizer: Any, cfg: AdaptConfig, seed: int) -> Iterator[list[int]]:
    """This worker's windows, pass after pass over its shard (shuffled locally)."""
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_batches(batch_size=64, batch_format="numpy",
                                        local_shuffle_buffer_size=512,
                                        local_shuffle_seed=seed + epoch):
            for w in token_windows(tokenizer, batch["text"].tolist(), cfg.max_length):
                n += 1
                yield w
        if n == 0:
            raise ValueError("this worker's share of the corpus holds no text")
        epoch += 1


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    cfg = AdaptConfig(**config["adapt"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    tokenizer = AutoTokenizer.from_pretrained(config["base"], local_files_only=True)
    model = mlm_model(config["base"], seed=cfg.seed)
    device = ray.train.torch.get_device()
    opt_state, start, history = None, 0, []
    ckpt = ray.train.get_checkpoint()
    if ckpt:  # resume: weights + head, optimiser, position
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")
        model.load_state_dict(st["model"])
        opt_state, start, history = st["optimizer"], int(st["step"]) + 1, list(st["history"])
    model = ray.train.torch.prepare_model(model)
    opt = optimizer(model, cfg)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    rng = random.Random(cfg.seed * 1009 + rank)
    windows = _windows(ray.train.get_dataset_shard("train"), tokenizer, cfg, cfg.seed + rank)
    buffer: list[list[int]] = []
    teller = StepTeller(config.get("progress"), rank)  # the driver's progress bar
    for step in range(start, cfg.max_steps):
        while len(buffer) < 8 * cfg.batch_size:  # a small pool to sample batches from
            buffer.append(next(windows))
        rng.shuffle(buffer)
        batch = [buffer.pop() for _ in range(cfg.batch_size)]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank * 7919 + step)
        loss = mlm_step(model, opt, collate(batch, tokenizer, device), step, cfg,
                        tokenizer.mask_token_id, g)
        history.append(round(loss, 4))
        last = step == cfg.max_steps - 1
        checkpointed = not (step + 1) % cfg.checkpoint_every or last
        teller.tell(step + 1, wait=checkpointed)  # delivered by each checkpoint
        if not checkpointed:
            continue
        metrics = {"step": step, "loss": sum(history[-cfg.checkpoint_every:])
                   / len(history[-cfg.checkpoint_every:])}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                inner = model.module if hasattr(model, "module") else model
                torch.save({"model": inner.state_dict(), "optimizer": opt.state_dict(),
                            "step": step, "history": history}, Path(tmp) / "state.pt")
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def run_adapt(corpus: str, out: str, cfg: AdaptConfig | None = None,
              base_model: str | None = None, num_workers: int = 1, use_gpu: bool = False,
              s3: S3Config | None = None, address: str | None = None,
              log: Any = print) -> dict[str, Any]:
    """Adapt the text encoder at `base_model` (default: the packaged MiniLM) to the
    texts of `corpus`; the adapted encoder lands in `out`. Returns its adapt.json.

    A rerun into the same `out` with the same settings resumes from the last
    checkpoint; other settings are refused (remove `out` to start again)."""
    import ray
    from transformers import AutoTokenizer

    from culturesim_ray.encoders.text import minilm_path
    from culturesim_ray.pipeline.ray_env import init_ray, user_error
    from culturesim_ray.pipeline.trainer import fit_torch, step_progress

    io.require_local(out, "adapt --out", "the encoder is loaded from there and resumes there")
    cfg = cfg or AdaptConfig()
    base = str(Path(base_model).absolute()) if base_model else minilm_path()
    outp = Path(out).absolute()
    settings = {"adapt": cfg.to_dict(), "base": base, "corpus": corpus,
                "num_workers": num_workers}
    recorded = outp / "adapt_settings.json"
    if recorded.exists() and json.loads(recorded.read_text()) != settings:
        raise ValueError(f"{outp} holds an adaptation with other settings "
                         f"({recorded}); remove it or choose another --out")
    done = outp / "adapt.json"
    if recorded.exists() and done.exists():
        log(f"adapt: {outp} already holds this adaptation; nothing to do")
        return json.loads(done.read_text())
    started = time.time()
    files = tables.list_corpus_files(corpus, s3)
    outp.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(settings, indent=2) + "\n")
    init_ray(address)
    with user_error():
        texts = ray.data.from_items([{"file": f} for f in files]).flat_map(
            _texts_of_file, fn_kwargs={"s3": s3})
        log(f"adapt: {len(files)} corpus file(s), {cfg.max_steps} MLM steps x "
            f"{cfg.batch_size} windows x {num_workers} worker(s), mask rate {cfg.mask_rate}, "
            f"lr {cfg.lr}")
        with step_progress(cfg.max_steps) as counter:
            checkpoint = fit_torch(train_loop_per_worker,
                                   {"adapt": cfg.to_dict(), "base": base, "progress": counter},
                                   "adapt", outp / CHECKPOINTS, num_workers, use_gpu,
                                   max_failures=2, datasets={"train": texts}, keep=1)
    with checkpoint.as_directory() as d:
        st = torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")
    model = mlm_model(base, seed=cfg.seed)
    model.load_state_dict(st["model"])
    history = list(st["history"])
    k = max(1, min(20, len(history) // 4))
    meta = {"config": cfg.to_dict(), "base": base, "corpus": corpus, "files": len(files),
            "num_workers": num_workers, "steps": int(st["step"]) + 1,
            "loss_first": sum(history[:k]) / k, "loss_last": sum(history[-k:]) / k,
            "history": history, "seconds": round(time.time() - started, 1),
            "versions": io.versions()}
    save_encoder(model, AutoTokenizer.from_pretrained(base, local_files_only=True), base, outp,
                 meta)
    log(f"adapt: {meta['steps']} steps, MLM loss {meta['loss_first']:.3f} -> "
        f"{meta['loss_last']:.3f}; encoder -> {outp} (embed --text-model {outp})")
    return meta
