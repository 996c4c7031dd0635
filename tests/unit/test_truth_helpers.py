"""The pure helpers of benchmarks/truth.py and benchmarks/held_out.py: page titles from `source`, hit rates,
the table's read-outs picked from evaluation rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.held_out import hit_rates, source_title  # noqa: E402
from benchmarks.truth import pick  # noqa: E402


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


def test_pick_keeps_what_was_fitted_on_gold_out_of_the_best_s1():
    def row(method, kind, similarity, spearman, cv=""):
        return {"method": method, "kind": kind, "similarity": similarity, "cv": cv,
                "theme": "general", "spearman": spearman, "spearman_lo": spearman - 0.1,
                "spearman_hi": spearman + 0.1, "mantel_p": 0.001}

    rows = [row("mean x (raw baseline), cosine", "baseline", "cosine", 0.40),
            row("TF-IDF (LSA) means", "baseline", "cosine", 0.20),
            row("mean x + euclidean", "similarity", "euclidean", 0.45),
            row("mean x + learned (leave-cultures-out CV)", "similarity", "learned", 0.60,
                "cultures"),
            row("mean x + learned (pair-level CV)", "similarity", "learned", 0.90, "pairs"),
            row("mean x + dimension_metric (leave-cultures-out CV)", "similarity",
                "dimension_metric", 0.55, "cultures"),
            row("mean x + dimension_metric (pair-level CV)", "similarity", "dimension_metric",
                0.80, "pairs"),
            row("trained model", "model", "cosine", 0.42)]
    out = pick(rows)
    assert out["best_s1"]["method"] == "mean x + euclidean"
    assert out["learned_lco"]["spearman"] == 0.60 and out["metric_lco"]["spearman"] == 0.55
    assert out["margin"] == pytest.approx(0.02)
