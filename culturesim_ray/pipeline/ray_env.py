"""Starting or joining Ray the way this project needs it.

Environment defaults (set only where the user has not set them): listeners on
127.0.0.1 for a local instance, no usage stats, offline model hubs.
"""

from __future__ import annotations

import os
from typing import Any

SAFE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_safe_env() -> None:
    for k, v in SAFE_ENV.items():
        os.environ.setdefault(k, v)


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int | None = None, **kwargs: Any) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS (as under `ray job submit`),
    else start a private local instance. A no-op when Ray is already initialised."""
    set_safe_env()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {k: os.environ[k] for k in SAFE_ENV}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             object_store_memory=object_store_memory or 512 * 1024**2,
             runtime_env=runtime_env, **kwargs)
