"""Environment defaults: applied where unset, never over a user's value."""

from __future__ import annotations

from culturesim_ray.pipeline import ray_env


def test_defaults_apply_where_unset_and_yield_to_the_user(monkeypatch):
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    monkeypatch.setenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", "1")  # the user's choice
    env = ray_env.set_safe_env()
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert set(env) == set(ray_env.SAFE_ENV) | set(ray_env.SERVE_ENV)
