"""Starting or joining Ray the way this project needs it.

Environment defaults (set only where the user has not set them): listeners on
127.0.0.1 for a local instance, no usage stats, offline model hubs, and Ray
Serve's throughput-optimised data plane without direct ingress (SERVE_ENV).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SAFE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# Ray Serve's documented throughput mode: replicas call each other over gRPC
# instead of Ray actor calls (the proxy -> Ingress hop stays one), user code and
# the router run on the replica's own event loop, replica logs go to files only
# (RAY_SERVE_LOG_TO_STDERR=1 brings them back). Direct ingress stays off: clients
# keep one HTTP proxy port (http_options), which load-balances the Ingress
# replicas. Read when Serve's processes start, so it must be set before Ray
# starts (init_ray does; cluster.yaml exports it before `ray start`). (Serve
# freezes each replica's GC after its constructor and first reconfigure in
# either mode: RAY_SERVE_FREEZE_GC_ON_STARTUP, on by default.)
# What it gains: benchmarks/RESULTS.md (serve).
SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def set_safe_env() -> dict[str, str]:
    """Apply the defaults where unset; returns the values now in effect."""
    for k, v in {**SAFE_ENV, **SERVE_ENV}.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in (*SAFE_ENV, *SERVE_ENV)}


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int | None = None, **kwargs: Any) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS (as under `ray job submit`),
    else start a private local instance. A no-op when Ray is already initialised."""
    env = set_safe_env()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             object_store_memory=object_store_memory or 512 * 1024**2,
             runtime_env=runtime_env, **kwargs)


def _user_cause(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The innermost exception of `kinds` raised by user code inside a Ray task
    (Ray wraps it in RayTaskError / Ray Data's UserCodeException)."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    found = None
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds) and not isinstance(e, RayTaskError):
            found = e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return found


@contextmanager
def user_error() -> Iterator[None]:
    """Re-raise a bad corpus file, a --strict failure or a storage error raised
    inside a Ray Data stage as itself, with its own message (naming the file and
    line, or the uri), instead of Ray's wrapper and a worker traceback."""
    from culturesim_ray.io import CorpusFormatError
    from culturesim_ray.schema import StrictModeError

    try:
        yield
    except (CorpusFormatError, StrictModeError):
        raise
    except Exception as exc:
        cause = _user_cause(exc, (CorpusFormatError, StrictModeError, OSError))
        if cause is None:
            raise
        try:
            again = type(cause)(*cause.args)
        except Exception:  # an exception class with an unusual constructor
            raise exc from None
        raise again from exc
