"""benchmarks/images.py on small files: both readings run and agree."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.images import camera_jpegs, run  # noqa: E402


def test_camera_jpegs_are_photo_sized_jpegs():
    files = camera_jpegs(500)
    assert len(files) == 14 and all(data[:2] == b"\xff\xd8" for _, data in files)


def test_both_readings_agree_and_are_timed():
    r = run(1000, repeats=1)
    assert r["files"] == 14 and r["decode_ms_full"] > 0 and r["decode_ms_draft"] > 0
    assert r["feature_cosine_min"] > 0.95 and 0 < r["input_max_abs_diff"] < 0.2
    assert r["other_files_cosine_median"] < r["feature_cosine_median"]
