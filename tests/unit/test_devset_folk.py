"""benchmarks/devset_folk.py builds the folk-music dev set from the Essen tunes
music21 ships: the corpus keeps the corpus contract, every tune file parses as
the embed job reads it, the set shares no tune with the demo, cultures come
from the tunes' origins, and the gold covers every pair from the culture names
alone. Small max_per_culture; no Ray."""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import devset_folk, devsets  # noqa: E402
from conftest import checked_corpus  # noqa: E402
from culturesim_ray.demo import demo_tunes, essen_tunes  # noqa: E402
from culturesim_ray.encoders.music import parse_events  # noqa: E402
from culturesim_ray.report.gold import derive_gold  # noqa: E402
from culturesim_ray.tables import read_corpus_rows  # noqa: E402

K = 4  # max_per_culture


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return devsets.build(devsets.FOLK, tmp_path_factory.mktemp("folk"), max_per_culture=K)


def test_origins_name_one_culture_or_none():
    f = devset_folk.origin_culture
    assert f("Europa, Mitteleuropa, Deutschland, Schlesien") == "German"
    assert f("Europa, Mitteleuropa, Oesterreich, Tirol") == "Austrian"
    assert f("Suedosteuropa, Jugoslawien, Gottschee") == "Gottscheer"
    assert f("China, Shaanxi, Shanbei") == "Chinese"
    assert f("Mitteleuropa, Deutschland / Polen, Schlesien") is None  # a border region
    assert f("Europa, Mitteleuropa, Deutschland; Frankreich, Elsass") is None
    assert f("Amerika, Mittelamerika, Mexiko") is None  # a country the set lacks
    assert set(c for _, c in devset_folk.ORIGINS) == set(devset_folk.COUNTRIES)


def test_corpus_keeps_the_contract_and_every_tune_parses(built):
    rows = checked_corpus(built["corpus"])
    root = Path(built["corpus"]).parent
    assert all(r["modality"] == "sequence" and r["text"] is None for r in rows)
    per = {c: sum(r["culture"] == c for r in rows) for c in built["cultures"]}
    assert len(per) >= 10 and all(n == K for n in per.values()), per
    for r in rows:  # what the embed job's sequence encoder reads
        events = parse_events((root / r["uri"]).read_text(encoding="utf-8"))
        assert len(events) >= 4, r["item_id"]
    meta = json.loads(Path(built["meta"]).read_text(encoding="utf-8"))
    assert meta["modality"] == built["modality"] == "sequence"
    assert set(meta["dropped"]).isdisjoint(built["cultures"])
    assert all(meta["counts"]["candidates_per_culture"][c] < 15 for c in meta["dropped"])


def test_no_tune_of_the_demo_and_each_tune_from_its_culture(built):
    rows = read_corpus_rows(built["corpus"])
    demo = {t["item_id"] for _, t in demo_tunes()}
    assert demo and not demo & {r["item_id"] for r in rows}
    origin = {t["item_id"]: t["origin"] for t in essen_tunes()}
    for r in rows:
        assert devset_folk.origin_culture(origin[r["item_id"]]) == r["culture"], r["source"]
        assert origin[r["item_id"]] in r["source"]


def test_gold_covers_every_pair_from_the_culture_names(built):
    cultures = sorted(built["cultures"])
    with open(built["gold"], newline="", encoding="utf-8") as fh:
        gold = list(csv.DictReader(fh))
    assert [(g["culture_a"], g["culture_b"]) for g in gold] == \
        list(itertools.combinations(cultures, 2))
    scores = [float(g["score"]) for g in gold]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > len(scores) // 2
    again = derive_gold({c: devset_folk.COUNTRIES[c] for c in cultures})
    assert scores == [r["score"] for r in again]


def test_build_is_deterministic(built, tmp_path):
    again = devsets.build(devsets.FOLK, tmp_path, max_per_culture=K)
    assert pq.read_table(built["corpus"]).equals(pq.read_table(again["corpus"]))
    assert Path(built["gold"]).read_bytes() == Path(again["gold"]).read_bytes()
