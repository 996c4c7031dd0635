"""Starting the similarity service: `culturesim serve` (a local Ray + Serve) and
`deploy_config` (what `serve run CONFIG.yaml` does, from Python)."""

from typing import Any

from ray import serve

from culturesim_ray.pipeline.serve import app_builder


def run_local(run_dir: str, host: str = "127.0.0.1", port: int = 8000,
              use_gpu: bool = False, blocking: bool = True, precision: str = "auto") -> str:
    """`culturesim serve`: start Ray (local) and Serve, deploy the app on the run's
    model; returns the base URL. With blocking, serve until interrupted."""
    import time

    from culturesim_ray.pipeline.ray_env import init_ray

    init_ray()
    serve.start(http_options={"host": host, "port": port},
                logging_config={"enable_access_log": False})
    serve.run(app_builder({"run_dir": run_dir, "use_gpu": use_gpu, "precision": precision}),
              name="culturesim", route_prefix="/")
    url = f"http://{host}:{port}"
    if blocking:
        print(f"serving {run_dir} at {url}  (OpenAPI page {url}/docs; Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


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
