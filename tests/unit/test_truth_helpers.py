"""The pure helpers of benchmarks/truth.py: page titles from `source`, hit rates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.truth import hit_rates, source_title  # noqa: E402


@pytest.mark.parametrize("source,title", [
    ("wikipedia:en:Nile", "Nile"),
    ("wikipedia:fr:Canton (Chine)", "Canton (Chine)"),
    ("wikipedia:en:Star Trek: The Next Generation", "Star Trek: The Next Generation"),
    ("wikipedia:en:  ", None),
    ("essen:deut0001", None),
    ("", None),
    (None, None),
    (":en:Nile", None),
])
def test_source_title(source, title):
    assert source_title(source) == title


def test_hit_rates_count_the_truth_among_the_first_k():
    pos = np.array([[0, 1, 2, 3, 4], [1, 2, 0, 3, 4], [4, 3, 2, 1, 0], [1, 2, 3, 4, 5]])
    truth = np.array([0, 0, 0, 0])
    assert hit_rates(pos, truth, "m") == {"m_top1": 0.25, "m_top3": 0.5, "m_top5": 0.75}
