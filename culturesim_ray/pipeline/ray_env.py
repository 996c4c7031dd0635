"""Starting or joining Ray the way this project needs it.

Environment defaults (set only where the user has not set them): listeners on
127.0.0.1 for a local instance, no usage stats, offline model hubs, and Ray
Serve's throughput-optimised data plane without direct ingress (SERVE_ENV).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


# A private local instance (no address): Ray 2.60 turns token authentication on
# by default, writes a token to ~/.ray and warns about it. The instance listens
# on 127.0.0.1 only and lives as long as this process, so it gets a fresh token
# of its own through the environment (its raylet and workers inherit it): auth
# stays on, nothing is written, nothing is printed. Actor constructor arguments
# up to 1 MiB travel inline with the task (Ray Data's actor pools pass the
# encoder's state that way): arguments in the object store cannot be rebuilt
# when a restarted actor needs them, and Ray warns about exactly that.
LOCAL_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_max_direct_call_object_size": str(1 << 20),
}

_output: dict[str, Any] = {"quiet": False, "native": False}


def configure_output(verbose: bool, native_stderr: bool = False) -> None:
    """What a command prints. Quiet (not verbose): Ray's loggers write to its session
    log directory only, workers' output stays in their log files, Ray Data draws no
    progress of its own (the command's stage bars do). Verbose: Ray as usual.

    native_stderr (the console command, not a call in a test): what native code
    writes to file descriptor 2 (Ray's C++ core: one line per Ray Data actor
    created with its arguments in the object store, which actor pools always do)
    goes to the log file too; Python's sys.stderr keeps the terminal."""
    from culturesim_ray import progress

    progress.set_verbose(verbose)
    _output["quiet"] = not verbose
    _output["native"] = native_stderr and not verbose
    if not verbose:  # Python warnings (a library's UserWarning) to the log file as well
        import warnings

        def _to_log(message: Any, category: Any, filename: str, lineno: int,
                    file: Any = None, line: Any = None) -> None:
            progress.write_log(warnings.formatwarning(message, category, filename, lineno,
                                                      line).rstrip())

        warnings.showwarning = _to_log
    if _output["native"]:
        _redirect_fd2()


def _redirect_fd2() -> None:
    """Point file descriptor 2 at the log file; sys.stderr at the terminal it had."""
    from culturesim_ray import progress

    sys.stderr.flush()
    if "terminal_fd" not in _output:
        _output["terminal_fd"] = os.dup(2)
        sys.stderr = os.fdopen(_output["terminal_fd"], "w", buffering=1,
                               encoding=sys.stderr.encoding, errors="backslashreplace")
    path = progress.log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _local_env() -> None:
    """LOCAL_ENV where unset, before the local instance starts. Ray reads its config
    once per process: when ray is already imported it is read again."""
    if "RAY_AUTH_MODE" in os.environ or "RAY_AUTH_TOKEN" in os.environ:
        env = {k: v for k, v in LOCAL_ENV.items() if not k.startswith("RAY_AUTH")}
    else:
        import secrets

        env = {**LOCAL_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    changed = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(changed)
    if changed and "ray._raylet" in sys.modules:
        from ray._private.authentication import authentication_token_setup as auth

        if "RAY_AUTH_TOKEN" in changed:
            auth._enable_token_auth()
        auth.AuthenticationTokenLoader.instance().reset_cache()


def mute_ray_console() -> None:
    """Ray's console log handlers (the `ray` loggers' stream handlers) write
    nothing; their file handlers and our log file keep everything."""
    import logging

    for name in ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]:
        logger = logging.getLogger(name)
        if not isinstance(logger, logging.Logger):
            continue
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.CRITICAL + 1)
        if name in ("ray", "ray.data", "ray.train", "ray.serve") and not any(
                isinstance(h, _ToLogFile) for h in logger.handlers):
            logger.addHandler(_ToLogFile(logging.INFO))


class _ToLogFile(logging.Handler):
    """Ray's log records into this process's log file (`progress.log_path()`)."""

    def emit(self, record: logging.LogRecord) -> None:
        from culturesim_ray import progress

        progress.write_log(f"{record.name} {record.levelname}: {record.getMessage()}")


def _initialised() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int | None = None, **kwargs: Any) -> None:
    """Join the cluster named by `address` or RAY_ADDRESS (as under `ray job submit`),
    else start a private local instance. A no-op when Ray is already initialised."""
    env = set_safe_env()
    quiet = _output["quiet"]
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and not _initialised():
        _local_env()
    import ray

    if quiet:
        import ray.data  # noqa: F401  (configures Ray Data's loggers, muted next)

        mute_ray_console()
        ray.data.DataContext.get_current().enable_progress_bars = False
    if not ray.is_initialized():
        runtime_env = {"env_vars": env}
        kwargs.setdefault("log_to_driver", not quiet)
        if address:
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=object_store_memory or 512 * 1024**2,
                     runtime_env=runtime_env, **kwargs)
    if quiet:
        from culturesim_ray import progress

        node = ray._private.worker._global_node
        if node is not None:
            progress.set_log_path(Path(node.get_session_dir_path()) / "logs" / "culturesim.log")
            if _output["native"]:
                _redirect_fd2()
        mute_ray_console()


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
    from culturesim_ray.schema import StrictModeError
    from culturesim_ray.tables import CorpusFormatError

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
