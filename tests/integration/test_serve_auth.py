"""The bearer token over real HTTP: the app of serve_configs/local.yaml deployed with
CULTURESIM_TOKEN set in its replicas' environment (the app's runtime_env), on
127.0.0.1. /v1/* answers a JSON 401 without the token or with a wrong one, 200 with
the right one; /healthz stays open."""

from __future__ import annotations

import pytest
import requests

from conftest import free_port, local_serve_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

TOKEN = "test-token-5b0e"


@pytest.fixture(scope="module")
def guarded(trained_run):
    """The app with a token: one replica per deployment, shut down afterwards."""
    from ray import serve

    from culturesim_ray.pipeline.serve_deploy import deploy_config

    port = free_port()
    config = local_serve_config(trained_run, port)
    app = config["applications"][0]
    assert app["args"]["auth_token_env"] == "CULTURESIM_TOKEN"  # the default name
    app["runtime_env"] = {"env_vars": {"CULTURESIM_TOKEN": TOKEN}}
    for dep in app["deployments"]:  # the smallest deploy: no autoscaling
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = 1
    deploy_config(config)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _denied(res: requests.Response) -> None:
    assert res.status_code == 401, res.text
    assert res.headers["WWW-Authenticate"] == "Bearer"
    assert res.json()["error"]["field"] == "authorization"


def test_v1_needs_the_bearer_token(guarded):
    # guards the Ingress auth middleware: without it every request below is a 200/4xx
    health = requests.get(f"{guarded}/healthz", timeout=60)
    assert health.status_code == 200 and health.json()["auth"] == "bearer"
    url = f"{guarded}/v1/cultures"
    _denied(requests.get(url, timeout=60))
    _denied(requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=60))
    _denied(requests.get(url, headers={"Authorization": TOKEN}, timeout=60))
    # checked before routing and validation: no 404 or 422 tells anything apart
    _denied(requests.get(f"{guarded}/v1/nothing", timeout=60))
    _denied(requests.post(f"{guarded}/v1/similar", json={"k": "many"}, timeout=60))
    _denied(requests.get(f"{guarded}/v1/cultures/Greek/neighbors", params={"k": 0}, timeout=60))
    ok = {"Authorization": f"Bearer {TOKEN}"}
    res = requests.get(url, headers=ok, timeout=60)
    assert res.status_code == 200, res.text
    assert res.json()["cultures"] == ["Greek", "Persian", "Turkish"]
    res = requests.post(f"{guarded}/v1/similar", json={"text": "Hafez and Shiraz", "k": 2},
                        headers=ok, timeout=60)
    assert res.status_code == 200, res.text
    assert len(res.json()["general"]) == 2
    res = requests.get(f"{guarded}/v1/cultures/Greek/neighbors", params={"k": 0}, headers=ok,
                       timeout=60)
    assert res.status_code == 422  # authenticated: the usual validation answers
