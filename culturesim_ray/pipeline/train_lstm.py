"""Ray Train for the melody LSTM (large corpora): TorchTrainer + DDP over N workers.

The sample is a folder of Parquet parts (column `tokens`; the embed job's
parsing tasks write it under the run, `write_sample` in tests): the train config
carries its path, never the melodies, and the driver reads only the parts'
footers. Each worker reads only the parts that hold its shard, a contiguous
range of the sample in part-name order (`shard_range`: a rank split, as the
fusion trainer's, so a resumed group trains on what it trained on). It encodes them
with the vocabulary, cuts them as the plain loop does (`training_sequences`), and
trains with the same pure `train_step`; DDP averages the gradients. Rank 0 reports
a checkpoint (weights, vocabulary, config, optimiser, epoch) every epoch, and a
restarted run resumes from the last one.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from culturesim_ray import io
from culturesim_ray.encoders.music import Vocabulary
from culturesim_ray.encoders.sequence import (
    MODEL_FILES,
    LSTMConfig,
    MelodyLSTM,
    pad_batch,
    save_model,
    train_step,
    training_sequences,
)


def _sample_parts(sample: str, s3: Any = None) -> tuple[Any, list[str], list[int]]:
    """The sample folder's parts in name order and their row counts (footers only)."""
    import pyarrow.parquet as pq

    fs, p = io.filesystem_for(sample, s3)
    files = sorted(f for f in fs.find(p) if f.endswith(".parquet")) if fs.exists(p) else []
    counts = []
    for f in files:
        with fs.open(f, "rb") as fh:
            counts.append(pq.ParquetFile(fh).metadata.num_rows)
    return fs, files, counts


def write_sample(seqs: Sequence[Sequence[str]], folder: str | Path) -> str:
    """Token sequences as a one-part sample folder (what `train_lstm_distributed`
    reads); those without a token left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    Path(folder).mkdir(parents=True, exist_ok=True)
    tokens = pa.array([list(t) for t in seqs if len(t) > 0], pa.list_(pa.string()))
    pq.write_table(pa.table({"tokens": tokens}), Path(folder) / "part-00000.parquet")
    return str(folder)


def sample_size(sample: str, s3: Any = None) -> int:
    """Melodies in the sample folder, from the parts' footers."""
    return sum(_sample_parts(sample, s3)[2])


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Worker `rank` of `world`'s melodies [lo, hi) of n: contiguous, sizes within 1."""
    return rank * n // world, (rank + 1) * n // world


def read_sample_tokens(sample: str, s3: Any = None, rank: int = 0, world: int = 1
                       ) -> list[list[str]]:
    """Worker `rank` of `world`'s melodies of the sample folder (`shard_range` over
    the parts laid end to end in name order), reading only the parts that hold
    them; the defaults give the whole sample in corpus order (the plain loop's)."""
    import pyarrow.parquet as pq

    fs, files, counts = _sample_parts(sample, s3)
    lo, hi = shard_range(sum(counts), rank, world)
    out: list[list[str]] = []
    at = 0
    for f, n in zip(files, counts, strict=True):
        a, b = max(lo, at) - at, min(hi, at + n) - at  # this part's rows in the shard
        if a < b:
            with fs.open(f, "rb") as fh:
                rows = pq.read_table(fh, columns=["tokens"]).column("tokens")
            out.extend(rows.slice(a, b - a).to_pylist())
        at += n
    return out


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
    tokens = read_sample_tokens(config["sample"], config["s3"], rank, world)
    shard = training_sequences([vocab.encode(t) for t in tokens])
    if not shard:  # never: at most as many workers as melodies, each with a token
        raise RuntimeError(f"LSTM worker {rank} of {world} got no melody to train on")
    per_worker = math.ceil(sample_size(config["sample"], config["s3"]) / world)
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


def train_lstm_distributed(sample: str, vocab: Vocabulary, cfg: LSTMConfig,
                           out_dir: str, num_workers: int = 2, epochs: int = 10,
                           batch_size: int = 16, lr: float = 3e-3, use_gpu: bool = False,
                           max_failures: int = 2, seed: int = 0, s3: Any = None
                           ) -> dict[str, Any]:
    """Fit with Ray Train on the sample folder `sample` (local, or S3 with `s3`'s
    settings; every melody in it has a token); the final model lands in `out_dir`
    (as `save_model` writes it). Never more workers than melodies."""
    from dataclasses import asdict

    from culturesim_ray.pipeline.trainer import fit_torch

    n = sample_size(sample, s3)
    if not n:
        raise ValueError(f"no melody to train the melody LSTM on in {sample}")
    out = Path(out_dir).absolute()
    config = {"sample": sample, "s3": s3, "vocab": vocab.itos[4:],
              "model": asdict(cfg), "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "seed": seed}
    checkpoint = fit_torch(train_loop_per_worker, config, "lstm", out, min(num_workers, n),
                           use_gpu, max_failures)
    # the folder also holds Ray Train's checkpoints (out/ray_train), so each file is
    # replaced whole (never torn), the weights last
    with checkpoint.as_directory() as d:
        for name in ("metrics.json", *MODEL_FILES):
            with io.atomic_open(str(out / name)) as fh:
                fh.write((Path(d) / name).read_bytes())
    return json.loads((out / "metrics.json").read_text())
