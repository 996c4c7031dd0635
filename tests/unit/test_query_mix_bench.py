"""The pure helpers of benchmarks/query_mix.py: ranks of the truth, the mix grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.query_mix import grid, mix_name, rank_metrics, truth_ranks  # noqa: E402
from culturesim_ray.ops.query_score import QueryMix  # noqa: E402


def test_truth_ranks_match_a_loop_and_count_ties_against_the_truth():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(40, 7)).round(1)  # rounding makes ties
    t = rng.integers(0, 7, size=40)
    want = [sum(1 for j in range(7) if j != t[i] and s[i, j] >= s[i, t[i]]) for i in range(40)]
    assert truth_ranks(s, t).tolist() == want
    assert truth_ranks(np.ones((2, 4)), np.array([0, 3])).tolist() == [3, 3]


def test_rank_metrics():
    r = rank_metrics(np.array([0, 1, 2, 5]))
    assert r["n"] == 4 and r["top1"] == 0.25 and r["top3"] == 0.75
    assert np.isclose(r["mrr"], (1 + 1 / 2 + 1 / 3 + 1 / 6) / 4)


def test_grid_starts_with_the_default_and_has_a_zero_once():
    mixes = grid((0.0, 0.5, 1.0), (1, 3))
    names = [mix_name(m) for m in mixes]
    assert mixes[0] == QueryMix()
    assert names[0] == "a=0.5 m=1 (sequence a=1 m=3)"  # the default's own setting for tunes
    assert len(names) == len(set(names))
    assert sum(m.nearest == 0.0 for m in mixes) == 1
    assert {"a=1 m=1", "a=1 m=3", "a=0.5 m=3", "a=0.5 m=1"} <= set(names)
    # then the default without removing the dominant directions
    assert names[1] == "a=0.5 m=1 no abtt (sequence a=1 m=3 no abtt)" and mixes[1].abtt == ()
    assert all(m.modalities == {} for m in mixes[2:])  # the grid: every modality alike
    assert all(m.learned == QueryMix().learned and m.shortlist == QueryMix().shortlist
               for m in mixes)
