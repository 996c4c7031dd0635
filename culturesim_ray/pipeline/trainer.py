"""One way to run a Ray Train fit: TorchTrainer with N workers, checkpoints under
`out/ray_train/<name>`, FailureConfig retries; returns the final checkpoint. And
the fit's step count on the driver's progress bar (`step_progress`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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


class StepCounter:
    """A Ray actor: the last step a training worker told it (the driver reads it)."""

    def __init__(self) -> None:
        self.step = 0

    def set(self, step: int) -> None:
        self.step = int(step)

    def get(self) -> int:
        return self.step


class StepTeller:
    """A training worker's side of `step_progress`: tells the counter its steps
    (rank 0 only; counter None: tells nothing), at most once every `every` seconds
    between checkpoints, so a fast step (a GPU's) does not pay an actor call each
    time. A counter that cannot be reached is dropped: the driver's bar stops, the
    training goes on."""

    def __init__(self, counter: Any, rank: int, every: float = 0.25) -> None:
        self.counter = counter if rank == 0 else None
        self.every = every
        self.last = -math.inf  # time.monotonic() of the last call sent

    def tell(self, step: int, wait: bool = False) -> None:
        """Tell `step` (steps done); wait: until the counter has it (at a checkpoint,
        never skipped)."""
        if self.counter is None:
            return
        now = time.monotonic()
        if not wait and now - self.last < self.every:
            return
        self.last = now
        import ray

        try:
            ref = self.counter.set.remote(step)
            if wait:
                ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 - the bar is not worth a failed step
            self.counter = None


@contextmanager
def step_progress(total: int, interval: float = 0.5) -> Iterator[Any]:
    """Yield a `StepCounter` actor for the rank-0 worker to tell its steps to;
    meanwhile a driver thread moves the running stage's bar (`progress.advance`,
    total steps `total`) to the counter every `interval` s, and once more at the
    end. The bar goes back when a resumed worker restarts from an earlier step."""
    import ray

    from culturesim_ray import progress

    counter = ray.remote(num_cpus=0)(StepCounter).remote()
    shown, stop = [0], threading.Event()

    def show() -> bool:  # False once the counter cannot be read: the bar stops there
        try:
            step = ray.get(counter.get.remote())
        except Exception as e:  # noqa: BLE001 - a bar that stops never fails the fit
            progress.write_log(f"progress bar stopped: the step counter: {e!r}")
            return False
        progress.advance(step - shown[0], total)
        shown[0] = step
        return True

    def poll() -> None:
        while not stop.wait(interval) and show():
            pass

    progress.advance(0, total)
    thread = threading.Thread(target=poll, name="train-progress", daemon=True)
    thread.start()
    try:
        yield counter
        stop.set()
        thread.join()
        show()
    finally:
        stop.set()
        thread.join()
        with suppress(Exception):  # Ray gone with the fit: the fit's error is the one to see
            ray.kill(counter)
