"""Ray Train for the melody LSTM (large corpora): TorchTrainer + DDP over N workers.

Each worker trains on its shard of the token sequences (sequence i goes to
worker i mod N) with the same pure `train_step` as the plain loop; DDP
averages the gradients. Rank 0 reports a checkpoint (weights, vocabulary,
config, optimiser, epoch) every epoch, and a restarted run resumes from the
last one.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from culturesim_ray.encoders.music import Vocabulary
from culturesim_ray.encoders.sequence import (
    LSTMConfig,
    MelodyLSTM,
    pad_batch,
    save_model,
    train_step,
)
from culturesim_ray.io import atomic_open


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = LSTMConfig(**config["model"])
    vocab = Vocabulary(config["vocab"])
    torch.manual_seed(config["seed"])
    model = MelodyLSTM(cfg)
    device = ray.train.torch.get_device()  # cuda:<local rank> with use_gpu, else cpu
    opt_state, start, history, resumes = None, 0, [], []
    ckpt = ray.train.get_checkpoint()
    if ckpt:  # resume after a failure: weights, optimiser, epoch, loss history
        with ckpt.as_directory() as d:
            model.load_state_dict(torch.load(Path(d) / "lstm.pt", weights_only=True,
                                             map_location="cpu"))
            extra = torch.load(Path(d) / "train_state.pt", weights_only=True,
                               map_location=device)
            opt_state, start = extra["optimizer"], int(extra["epoch"]) + 1
            prior = json.loads((Path(d) / "metrics.json").read_text())
            history, resumes = prior["history"], [*prior.get("resumes", []), start]
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    seqs = config["sequences"]
    shard = seqs[rank::world] or seqs[:1]
    per_worker = math.ceil(len(seqs) / world)
    steps = max(1, math.ceil(per_worker / config["batch_size"]))
    for epoch in range(start, config["epochs"]):
        # an epoch's order depends on the epoch, not on where the run (re)started
        g = torch.Generator().manual_seed(config["seed"] + 7919 * epoch + rank)
        order = torch.randperm(len(shard), generator=g).tolist()
        total = 0.0
        for s in range(steps):  # every worker takes the same number of steps (DDP)
            idx = [order[(s * config["batch_size"] + j) % len(order)]
                   for j in range(config["batch_size"])]
            # batches built on the model's device (NCCL needs CUDA tensors with GPUs)
            total += train_step(model, opt, pad_batch([shard[i] for i in idx], device))
        history.append(total / steps)
        metrics = {"epoch": epoch, "loss": total / steps, "history": list(history),
                   "resumes": list(resumes)}  # the epochs a restarted group began at
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                inner = model.module if hasattr(model, "module") else model
                save_model(inner, vocab, tmp)
                torch.save({"optimizer": opt.state_dict(), "epoch": epoch}, Path(tmp) / "train_state.pt")
                (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def train_lstm_distributed(sequences: list[list[int]], vocab: Vocabulary, cfg: LSTMConfig,
                           out_dir: str, num_workers: int = 2, epochs: int = 10,
                           batch_size: int = 16, lr: float = 3e-3, use_gpu: bool = False,
                           max_failures: int = 2, seed: int = 0) -> dict[str, Any]:
    """Fit with Ray Train; the final model lands in `out_dir` (as `save_model` writes it)."""
    from dataclasses import asdict

    from culturesim_ray.pipeline.trainer import fit_torch

    out = Path(out_dir).absolute()
    config = {"sequences": [list(s) for s in sequences], "vocab": vocab.itos[4:],
              "model": asdict(cfg), "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "seed": seed}
    checkpoint = fit_torch(train_loop_per_worker, config, "lstm", out, num_workers, use_gpu,
                           max_failures)
    # the folder also holds Ray Train's checkpoints (out/ray_train), so each file is
    # replaced whole (never torn), the weights last
    with checkpoint.as_directory() as d:
        for name in ("vocab.json", "config.json", "metrics.json", "lstm.pt"):
            with atomic_open(str(out / name)) as fh:
                fh.write((Path(d) / name).read_bytes())
    return json.loads((out / "metrics.json").read_text())
