"""Does the embed job's vocabulary note (`encoders/coverage.py`) flag the languages
MiniLM cannot read, and only those?

Texts: the names of the 263 territories CLDR names in every language below (`babel`,
a dev dependency), in English and in each language. Per language: the share of its
names the coverage rule calls poorly covered for MiniLM, and cross-lingual
retrieval top-1: each localised name's nearest English name by cosine is the same
territory (chance 1/263). The same loop scores MiniLM, multilingual e5 (the
reference: it reads about 100 languages) and muse (its 16 languages only).
"Flagged" languages are those where the rule marks at least NOTE_SHARE of the names,
the share from which the embed job prints its note.

    python benchmarks/text_coverage.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from culturesim_ray.encoders import build_encoder  # noqa: E402
from culturesim_ray.encoders.coverage import NOTE_SHARE, main_script  # noqa: E402
from culturesim_ray.encoders.text import minilm_coverage  # noqa: E402

LANGS = ("fr", "es", "de", "pl", "tr", "vi", "sw",  # Latin script
         "ru", "el", "ar", "fa", "he", "hi", "zh", "ja", "ko", "th", "ka", "am")
QUICK = ("fr", "de", "ru", "ar", "zh", "th")
MUSE = {"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"}

Encode = Callable[[Sequence[str]], np.ndarray]


def territory_names(langs: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The English names and, per language, the names of the territories (two-letter
    codes) that CLDR names in English and in every language of `langs`."""
    from babel import Locale

    tables = {lang: Locale.parse(lang).territories for lang in ("en", *langs)}
    codes = sorted(c for c in tables["en"] if len(c) == 2 and c.isalpha()
                   and all(c in t for t in tables.values()))
    return [tables["en"][c] for c in codes], {lang: [tables[lang][c] for c in codes]
                                              for lang in langs}


def top1(encode: Encode, english: Sequence[str], local: Sequence[str]) -> float:
    """Share of localised names whose nearest English name (cosine) is their own."""
    e, x = encode(english), encode(local)
    return float(np.mean((x @ e.T).argmax(1) == np.arange(len(local))))


def encoder(name: str) -> Encode:
    enc = build_encoder(name)
    return lambda texts: enc.encode(list(texts)).vectors


def run(langs: Sequence[str]) -> dict:
    english, local = territory_names(langs)
    encoders = {name: encoder(name) for name in ("minilm", "e5", "muse")}
    rows = []
    for lang in langs:
        t0 = time.perf_counter()
        names = local[lang]
        row = {"lang": lang, "script": main_script(" ".join(names)),
               "poorly_covered": float(np.mean(minilm_coverage(names)))}
        for name, enc in encoders.items():
            if name == "muse" and lang not in MUSE:
                continue
            row[f"{name}_top1"] = top1(enc, english, names)
        row["flagged"] = row["poorly_covered"] >= NOTE_SHARE
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{lang}: {row}", flush=True)

    def mean(key: str, flagged: bool) -> float:
        vals = [r[key] for r in rows if r["flagged"] == flagged and key in r]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {f"{'flagged' if f else 'passed'}": {
        "languages": [r["lang"] for r in rows if r["flagged"] == f],
        "minilm_top1": mean("minilm_top1", f), "e5_top1": mean("e5_top1", f),
        "minilm_over_e5": mean("minilm_top1", f) / mean("e5_top1", f)} for f in (True, False)}
    return {"territories": len(english), "chance": 1 / len(english), "rows": rows, **summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"languages {', '.join(QUICK)} only")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    res = run(QUICK if args.quick else LANGS)
    print(f"\n{res['territories']} territory names per language; chance top-1 "
          f"{res['chance']:.3f}\n")
    print("| language | script | poorly covered (rule) | MiniLM top-1 | e5 top-1 | muse top-1 |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        muse = f"{r['muse_top1']:.3f}" if "muse_top1" in r else "-"
        print(f"| {r['lang']} | {r['script']} | {r['poorly_covered']:.2f} | "
              f"{r['minilm_top1']:.3f} | {r['e5_top1']:.3f} | {muse} |")
    for key in ("flagged", "passed"):
        s = res[key]
        print(f"\n{key} ({', '.join(s['languages'])}): MiniLM top-1 {s['minilm_top1']:.3f}, "
              f"e5 {s['e5_top1']:.3f}, MiniLM / e5 {s['minilm_over_e5']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
