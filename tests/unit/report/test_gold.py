"""The gold helpers: great-circle distance, and the shipped demo gold set re-derived
from its source package."""

from __future__ import annotations

import pytest

from culturesim_ray.report.gold import build_demo_gold, demo_gold_path, derive_gold, haversine_km


def test_haversine_known_distance():
    # Paris - London ~ 344 km
    assert haversine_km((48.8566, 2.3522), (51.5074, -0.1278)) == pytest.approx(344, abs=3)


def test_demo_gold_is_rederived_exactly_from_countryinfo(tmp_path):
    rebuilt = build_demo_gold(tmp_path / "gold.csv").read_text()
    assert rebuilt == demo_gold_path().read_text()
    rows = {(r["culture_a"], r["culture_b"]): r for r in derive_gold()}
    assert len(rows) == 66
    assert rows[("French", "German")]["shared_border"] == 1
    assert rows[("French", "German")]["same_subregion"] == 1
    assert rows[("Japanese", "Spanish")]["score"] < 0.01
    assert all(0 <= r["score"] <= 1 for r in rows.values())
