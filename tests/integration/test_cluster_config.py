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
