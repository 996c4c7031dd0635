"""Starting the similarity service: `culturesim serve` (a local Ray + Serve) and
`deploy_config` (what `serve run CONFIG.yaml` does, from Python)."""

from typing import Any

from ray import serve

from culturesim_ray.pipeline.serve import app_builder
from culturesim_ray.serving.api import AUTH_TOKEN_ENV

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_local(run_dir: str, host: str = "127.0.0.1", port: int = 8000,
              use_gpu: bool = False, blocking: bool = True, precision: str = "auto",
              auth_token_env: str = AUTH_TOKEN_ENV) -> str:
    """`culturesim serve`: start Ray (local) and Serve, deploy the app on the run's
    model; returns the base URL. With blocking, serve until interrupted. Binds
    loopback unless `host` says otherwise; when $`auth_token_env` is set (the
    replicas of a local Ray inherit this process's environment), /v1/* needs
    `Authorization: Bearer <token>`."""
    import time

    from culturesim_ray import io
    from culturesim_ray.pipeline.ray_env import init_ray

    io.require_local(run_dir, "serve: run directory", "replicas memory-map its serving state")

    init_ray()
    serve.start(http_options={"host": host, "port": port},
                logging_config={"enable_access_log": False})
    serve.run(app_builder({"run_dir": run_dir, "use_gpu": use_gpu, "precision": precision,
                           "auth_token_env": auth_token_env}),
              name="culturesim", route_prefix="/")
    url = f"http://{host}:{port}"
    auth = _served_auth(host, port)
    if auth != "bearer" and host not in LOOPBACK:
        print(f"warning: serving on {host} without a bearer token (auth: {auth}): anyone "
              f"who reaches port {port} can query it; set {auth_token_env} in the serving "
              f"processes' environment to require one")
    if blocking:
        print(f"auth: {'bearer token from $' + auth_token_env if auth == 'bearer' else auth}")
        print(f"serving {run_dir} at {url}  (OpenAPI page {url}/docs; Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


def _served_auth(host: str, port: int) -> str:
    """What the running Ingress says of its auth ("bearer", "none"), from /healthz:
    the replicas' environment, not this process's, decides (a joined cluster)."""
    import json
    import urllib.request

    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    target = f"[{target}]" if ":" in target else target
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
    try:
        with opener.open(f"http://{target}:{port}/healthz", timeout=30) as res:
            return str(json.load(res).get("auth", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def deploy_config(config: dict[str, Any], timeout_s: float = 300.0) -> None:
    """What `serve run CONFIG.yaml` does, from Python: validate the config
    against Serve's own schema, start Serve with its http_options, proxy
    location and logging, deploy its applications, and wait until each is
    RUNNING. Redeploying a config whose only change is user_config updates the
    running replicas in place (no restart): Serve keys the code version on the
    import path and runtime_env, as with `serve deploy`."""
    import time

    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(),
                         proxy_location=schema.proxy_location,
                         global_logging_config=schema.logging_config)
    client.deploy_apps(schema, _blocking=False)
    names = [app.name for app in schema.applications]
    deadline = time.time() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        failed = {n: apps[n].message for n, s in states.items() if s == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(f"Serve deploy failed: {failed}")
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.time() > deadline:
            raise TimeoutError(f"Serve apps not RUNNING after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)
