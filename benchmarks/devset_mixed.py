"""mixed-modal: one corpus of the demo and the three other dev sets together, so
cultures differ in which modalities they have and in what share: the demo's 12
cultures (texts, one flag image, tunes for three), countries-wiki's and
languages-wiki's texts, folk-music's tunes. A culture name in two sets is one
culture with both sets' items (Irish: articles and tunes; German: the demo's
items and Essen tunes), so some cultures have texts and tunes, some texts only,
some tunes only (Gottscheer, Lorrainian, Luxembourgish). Gold: the
geographic-cultural proximity (`report.gold.derive_gold`, countryinfo) of every
culture that stands for a country (the demo's, countries-wiki's, folk-music's,
and languages-wiki's where folk-music names the country); the others are in the
corpus without gold. What it tests: whether the model's culture map holds when
modality coverage is uneven, as in a corpus a user assembles from several
sources.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.devset_files import finish
from benchmarks.devset_folk import COUNTRIES as FOLK_COUNTRIES
from culturesim_ray.demo import build_demo_corpus
from culturesim_ray.report.gold import DEMO_COUNTRIES, derive_gold, write_gold
from culturesim_ray.schema import CORPUS_FIELDS, CORPUS_SCHEMA

PARTS = ("countries-wiki", "languages-wiki", "folk-music")


def build_mixed(out_dir: str | Path, build_part: Callable[..., dict[str, Any]],
                countries: Mapping[str, str], max_per_culture: int = 40,
                min_per_culture: int = 15) -> dict[str, Any]:
    """Write the parts under out_dir/parts/ (each by `build_part(name, dir, max, min)`,
    `devsets.build`), then corpus.parquet (with images/ and music/), gold.csv and
    devset.json; returns what `devsets.build` returns. countries: the article sets'
    culture -> country (`devsets.COUNTRIES`)."""
    out = Path(out_dir)
    parts = out / "parts"
    corpora = [build_demo_corpus(parts / "demo")]
    dropped: dict[str, int] = {}
    for name in PARTS:
        built = build_part(name, parts / name, max_per_culture, min_per_culture)
        corpora.append(Path(built["corpus"]))
        dropped.update(json.loads(Path(built["meta"]).read_text(encoding="utf-8"))["dropped"])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for corpus in corpora:
        for sub in ("images", "music"):
            if (corpus.parent / sub).is_dir():
                shutil.copytree(corpus.parent / sub, out / sub, dirs_exist_ok=True)
        for r in pq.read_table(corpus).to_pylist():
            if r["item_id"] in seen:
                raise RuntimeError(f"mixed-modal: item {r['item_id']!r} is in two parts")
            seen.add(r["item_id"])
            rows.append(r)
    corpus_path = out / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in CORPUS_FIELDS} for r in rows],
                                        schema=CORPUS_SCHEMA), corpus_path)
    countries = {**DEMO_COUNTRIES, **countries, **FOLK_COUNTRIES}
    cultures = sorted({r["culture"] for r in rows})
    keys = {c: countries[c] for c in cultures if c in countries}
    gold_rows = derive_gold(keys)
    gold = write_gold(gold_rows, out / "gold.csv")
    modalities = {c: sorted({r["modality"] for r in rows if r["culture"] == c}) for c in cultures}
    meta = {
        "name": "mixed-modal", "description": __doc__.split("\n\n")[0], "gold_kind": "similarity",
        "modality": "text",
        "counts": {"cultures": len(cultures), "items": len(rows), "pairs": len(gold_rows),
                   "cultures_with_gold": len(keys),
                   "by_modalities": {"+".join(m): sum(tuple(v) == m for v in modalities.values())
                                     for m in sorted({tuple(v) for v in modalities.values()})}},
        "max_per_culture": max_per_culture, "min_per_culture": min_per_culture,
        "parts": ["demo", *PARTS], "dropped": dropped, "gold_keys": keys,
        "files": {"corpus": corpus_path.name, "gold": gold.name},
    }
    return finish(out, meta, corpus_path, gold, cultures)
