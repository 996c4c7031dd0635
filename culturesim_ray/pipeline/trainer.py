"""One way to run a Ray Train fit: TorchTrainer with N workers, checkpoints under
`out/ray_train/<name>`, FailureConfig retries; returns the final checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def fit_torch(loop: Callable[[dict[str, Any]], None], config: dict[str, Any], name: str,
              out: Path, num_workers: int, use_gpu: bool, max_failures: int,
              start_retries: int = 2, cpus_per_worker: float | None = None,
              datasets: dict[str, Any] | None = None, keep: int | None = None) -> Any:
    """Run `loop` on `num_workers` Ray Train workers; the last reported checkpoint.

    Worker deaths are retried `max_failures` times from the last checkpoint. A worker
    group that cannot be placed (the cluster lacks the CPUs/GPUs) is retried
    `start_retries` times, each after Ray Train's start timeout
    (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default), then the run fails
    instead of waiting for resources forever (Ray Train's own default).

    cpus_per_worker: CPUs each worker reserves (Ray's default: 1). Ray caps a
    worker's torch/OpenMP threads at it, so one worker on a whole machine needs
    all its CPUs to run as fast as the same loop outside Ray.

    datasets: Ray Datasets split over the workers (`ray.train.get_dataset_shard`).
    keep: checkpoints kept on storage (default None: all).

    Raises RuntimeError naming the run's error when no checkpoint was reported."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker} if cpus_per_worker else None),
        run_config=RunConfig(name=name, storage_path=str(Path(out).absolute() / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep),
                             failure_config=FailureConfig(
                                 max_failures=max_failures,
                                 controller_failure_limit=start_retries)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name!r} finished without a checkpoint: {result.error}")
    return result.checkpoint
