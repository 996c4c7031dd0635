"""cluster.yaml passes the Ray cluster launcher's own schema validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)  # what `ray up` does before validating
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_valid_for_the_launcher():
    config = validate(load())
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["gpu_worker"]["max_workers"] >= 1 and types["gpu_worker"]["min_workers"] == 0
    assert any("torch==2.13.0" in c for c in config["setup_commands"])
    assert any("[gpu]" in c for c in config["setup_commands"])
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())


def test_the_validation_can_fail():
    bad = load()
    bad["available_node_types"]["gpu_worker"]["max_workerz"] = 3
    with pytest.raises(Exception, match="max_workerz"):
        validate(bad)


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_serve_configs_are_valid_for_serve(name):
    """Both Serve configs pass Serve's own schema; their import path resolves to
    the app builder; every deployment the app builds is configured."""
    from ray.serve.schema import ServeDeploySchema

    from culturesim_ray.pipeline import serve as serve_glue

    config = yaml.safe_load((ROOT / "serve_configs" / name).read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    module, attr = app.import_path.split(":")
    assert module == serve_glue.__name__ and callable(getattr(serve_glue, attr))
    names = {d.name for d in app.deployments}
    assert names == {"Encoder", "Fusion", "Rerank", "Ingress"}
    for d in app.deployments:
        auto = d.autoscaling_config
        assert auto["min_replicas"] <= auto["max_replicas"] and auto["target_ongoing_requests"]
    if name == "cluster.yaml":
        enc = next(d for d in app.deployments if d.name == "Encoder")
        assert enc.ray_actor_options.num_gpus >= 1 and app.args["use_gpu"]
