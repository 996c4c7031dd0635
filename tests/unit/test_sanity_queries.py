"""The sanity queries (benchmarks/sanity_queries.py) are a fair fixed test set: every demo
culture has several, and no query gives its answer away by keyword (its culture's
name, its country or the demo corpus's English tagging stems for it). Also the
scoring on hand-made answers. No Ray, no model."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.sanity import QUERIES, score, served_minus_raw  # noqa: E402
from culturesim_ray.demo import CULTURES  # noqa: E402


def en_regex(culture: str) -> re.Pattern:
    """As culturesim_ray.demo.text_rows compiles it."""
    return re.compile(rf"\b(?:{CULTURES[culture][1]['en']})", re.IGNORECASE | re.UNICODE)


def test_every_demo_culture_has_at_least_three_queries():
    counts = Counter(c for _, c in QUERIES)
    assert set(counts) <= set(CULTURES), set(counts) - set(CULTURES)
    assert {c: counts.get(c, 0) for c in CULTURES if counts.get(c, 0) < 3} == {}


def test_no_duplicate_queries():
    norm = Counter(" ".join(q.lower().split()) for q, _ in QUERIES)
    assert [q for q, n in norm.items() if n > 1] == []


@pytest.mark.parametrize("query,culture", QUERIES)
def test_query_is_no_keyword_test(query, culture):
    flag = CULTURES[culture][0]  # the country, as the flag file is named
    assert culture.lower() not in query.lower()
    assert flag.lower() not in query.lower()
    assert not en_regex(culture).search(query), f"{query!r} matches {culture}'s en stems"


@pytest.mark.parametrize("query,culture", QUERIES)
def test_query_names_no_other_demo_culture(query, culture):
    others = [c for c in CULTURES if c != culture and en_regex(c).search(query)]
    assert others == [], f"{query!r} ({culture}) matches the stems of {others}"


def test_score_counts_top1_and_top3_hits():
    queries = [("a", "X"), ("b", "X"), ("c", "Y")]
    answers = [[("X", 0.9), ("Y", 0.5)], [("Y", 0.8), ("Z", 0.7), ("X", 0.1)],
               [("X", 0.9), ("Z", 0.2), ("W", 0.1), ("Y", 0.0)]]
    s = score(answers, queries)
    assert (s["n"], s["top1_hits"], s["top3_hits"]) == (3, 1, 2)
    assert s["by_culture"]["X"] == {"n": 2, "top1_hits": 1, "top3_hits": 2,
                                    "top1": 0.5, "top3": 1.0}
    assert s["by_culture"]["Y"]["top3_hits"] == 0  # 4th place is no top-3 hit


def test_served_minus_raw_is_paired_over_the_same_queries():
    # served finds X first twice where raw has it 2nd; raw finds Y where served misses it
    queries = [{"expected": "X", "served": [("X", 1.0)], "raw": [("Z", 1.0), ("X", 0.5)]}] * 2 + \
        [{"expected": "Y", "served": [("Z", 1.0)] * 3, "raw": [("Y", 1.0)]}] + \
        [{"expected": "W", "served": [("W", 1.0)], "raw": [("W", 1.0)]}] * 7
    d = served_minus_raw(queries)
    assert d["top1"]["delta"] == pytest.approx((2 - 1) / 10)
    assert d["top3"]["delta"] == pytest.approx(-1 / 10)
    for v in d.values():
        assert v["delta_lo"] <= v["delta"] <= v["delta_hi"]
    assert d["top3"]["delta_hi"] == 0.0  # no query where served alone finds it in 3
