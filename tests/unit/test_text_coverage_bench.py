"""benchmarks/text_coverage.py's helpers: CLDR names line up across languages, and
top-1 counts a localised name as found only when its own English name is nearest."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.text_coverage import territory_names, top1  # noqa: E402


def test_names_are_aligned_by_territory_across_languages():
    english, local = territory_names(["de", "ru"])
    assert len(english) == len(local["de"]) == len(local["ru"]) > 200
    i = english.index("Germany")
    assert local["de"][i] == "Deutschland" and local["ru"][i] == "Германия"


def test_top1_counts_only_a_names_own_counterpart():
    english, local = ["a", "b", "c"], ["x", "y", "z"]
    table = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1],
             "x": [0.9, 0.1, 0], "y": [0.8, 0.2, 0], "z": [0, 0.1, 0.9]}

    def encode(texts):
        v = np.array([table[t] for t in texts], dtype=float)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    assert top1(encode, english, local) == 2 / 3  # y's nearest is a, not b
