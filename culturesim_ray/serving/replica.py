"""What every serving replica does around its predictor (pure: no ray import)."""

from __future__ import annotations

from typing import Any


def set_threads(n: int) -> None:
    """Ray caps a replica's torch/OpenMP threads at its num_cpus (1 for a fraction);
    n > 0 sets the intra-op threads explicitly (latency on an idle CPU; on a small
    machine 2 threads per replica oversubscribe it: p99 in seconds)."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def apply_batch_config(cfg: dict[str, Any], defaults: dict[str, Any], *methods: Any) -> None:
    """max_batch_size / batch_wait_timeout_s of a user_config onto @serve.batch methods."""
    size = int(cfg.get("max_batch_size", defaults["max_batch_size"]))
    wait = float(cfg.get("batch_wait_timeout_s", defaults["batch_wait_timeout_s"]))
    for m in methods:
        m.set_max_batch_size(size)
        m.set_batch_wait_timeout_s(wait)
