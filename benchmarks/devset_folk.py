"""folk-music: a dev set of melodies only, built from the Essen folk-song
collection shipped with `music21` (`culturesim_ray.demo.essen_tunes`).

A tune's culture is the country of its origin (its ABC `O:` field: "Europa,
Mitteleuropa, Schweiz" -> Swiss); tunes of border regions ("Deutschland /
Polen", "...; Frankreich, Elsass") and of countries with fewer than
`min_per_culture` tunes are left out, and so are the demo's own tunes
(`demo.demo_tunes` at its default size), so the demo and this set share no item.
Each culture keeps at most `max_per_culture` tunes, a seeded sample over all
its source files. Gold: the demo's geographic-cultural proximity of the
countries (`report.gold.derive_gold`: shared border, UN subregion, capital
distance, from `countryinfo`), which the melodies never see; kind "similarity".

What the set measures, and what it does not: most Essen tunes were collected
from German-speaking communities, including those outside Germany (Lorraine,
Gottschee in Slovenia, Transylvania in Romania), and one source file can hold
several countries (the "ballad" files), so neighbouring cultures can share a
song tradition and a transcriber. The gold is geography, not musical
ancestry: a hard set, where what separates the cultures is melodic style.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.devset_files import finish
from culturesim_ray.demo import demo_tunes, essen_tunes, write_tune
from culturesim_ray.report.gold import derive_gold, write_gold
from culturesim_ray.schema import CORPUS_FIELDS, CORPUS_SCHEMA

# (word in the O: field, culture); the first match wins, so the specific come first
ORIGINS: tuple[tuple[str, str], ...] = (
    ("Gottschee", "Gottscheer"), ("Luxemburg", "Luxembourgish"),
    ("Lothringen", "Lorrainian"), ("Elsass", "Lorrainian"), ("Frankreich", "Lorrainian"),
    ("Schweiz", "Swiss"), ("Oesterreich", "Austrian"), ("Steiermark", "Austrian"),
    ("Tirol", "Austrian"), ("Niederlande", "Dutch"), ("Irland", "Irish"),
    ("UdSSR", "Russian"), ("Russland", "Russian"), ("Tschechoslowakei", "Czech"),
    ("Ungarn", "Hungarian"), ("Rumaenien", "Romanian"), ("Polen", "Polish"),
    ("Schweden", "Swedish"), ("Daenemark", "Danish"), ("China", "Chinese"),
    ("Deutschland", "German"),
)
# culture -> the country record (countryinfo) that stands for it
COUNTRIES: dict[str, str] = {
    "Gottscheer": "Slovenia", "Luxembourgish": "Luxembourg", "Lorrainian": "France",
    "Swiss": "Switzerland", "Austrian": "Austria", "Dutch": "Netherlands", "Irish": "Ireland",
    "Russian": "Russia", "Czech": "Czech Republic", "Hungarian": "Hungary",
    "Romanian": "Romania", "Polish": "Poland", "Swedish": "Sweden", "Danish": "Denmark",
    "Chinese": "China", "German": "Germany",
}
SOURCE = "Essen folk-song collection as shipped with music21 (essenFolksong/*.abc)"
GOLD_SOURCE = ("countryinfo 1.0.1 country records via culturesim_ray.report.gold.derive_gold "
               "(score = (shared_border + same_subregion + exp(-capital_km / 2000)) / 3)")


def origin_culture(origin: str) -> str | None:
    """The culture of an O: field; None for a border region or an unknown origin."""
    if "/" in origin or ";" in origin:
        return None
    return next((culture for word, culture in ORIGINS if word in origin), None)


def candidates() -> dict[str, list[dict[str, str]]]:
    """culture -> its Essen tunes (file order), the demo's tunes left out."""
    demo = {t["item_id"] for _, t in demo_tunes()}
    out: dict[str, list[dict[str, str]]] = {}
    for tune in essen_tunes():
        culture = origin_culture(tune["origin"])
        if culture is not None and tune["item_id"] not in demo:
            out.setdefault(culture, []).append(tune)
    return out


def build_folk(out_dir: str | Path, max_per_culture: int = 60,
               min_per_culture: int = 15) -> dict[str, Any]:
    """Write corpus.parquet, music/*.abc, gold.csv and devset.json under out_dir;
    returns what `devsets.build` returns."""
    if max_per_culture < 1:
        raise ValueError("max_per_culture must be >= 1")
    pool = candidates()
    out = Path(out_dir)
    (out / "music").mkdir(parents=True, exist_ok=True)
    kept, dropped, rows = [], {}, []
    for culture in sorted(COUNTRIES):
        cand = pool.get(culture, [])
        if len(cand) < min_per_culture:
            dropped[culture] = len(cand)
            continue
        kept.append(culture)
        for tune in random.Random(f"folk-music:{culture}").sample(
                cand, min(max_per_culture, len(cand))):
            rows.append(write_tune(out / "music", culture, tune))
    if len(kept) < 2:
        raise RuntimeError(f"folk-music: fewer than 2 cultures with >= {min_per_culture} tunes")
    corpus = out / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in CORPUS_FIELDS} for r in rows],
                                        schema=CORPUS_SCHEMA), corpus)
    gold_rows = derive_gold({c: COUNTRIES[c] for c in kept})
    gold = write_gold(gold_rows, out / "gold.csv")
    meta = {
        "name": "folk-music", "description": __doc__.split("\n\n")[0], "gold_kind": "similarity",
        "modality": "sequence",
        "counts": {"cultures": len(kept), "items": len(rows), "pairs": len(gold_rows),
                   "items_per_culture": {c: sum(r["culture"] == c for r in rows) for c in kept},
                   "candidates_per_culture": {c: len(pool.get(c, [])) for c in sorted(COUNTRIES)}},
        "max_per_culture": max_per_culture, "min_per_culture": min_per_culture,
        "dropped": dropped, "gold_keys": {c: COUNTRIES[c] for c in kept},
        "sources": {"corpus": SOURCE, "gold": GOLD_SOURCE},
        "files": {"corpus": corpus.name, "gold": gold.name},
    }
    return finish(out, meta, corpus, gold, kept)
