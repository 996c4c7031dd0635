"""Odd corpora, end to end: the project's own commands with default settings on
variants of the demo corpus that a user's corpus may resemble, and whether each
step finishes.

Variants (built from RUN/corpus of `make demo`):
- imbalanced: texts only, 60 down to 1 per culture, every 7th item without themes;
- notext: the images and tunes alone (12 cultures with one image, 3 with tunes);
- names: culture names with accents, commas, slashes, quotes and non-Latin
  scripts, and a gold file that uses them;
- nothemes: texts without the `themes` and `lang` columns;
- many: the demo texts dealt into 100 cultures (more than a batch's 64);
- squaregold: the demo texts with a gold file written as a square matrix (every
  pair in both orders, the diagonal) plus a culture the corpus lacks;
- xlsx: the whole demo corpus as an Excel workbook, headers and modalities in title
  case (`Item_ID`, `Text`), uris with Windows separators (`images\\greece.png`), themes
  as `a; b` cells;
- excelcsv: the whole demo corpus as pandas' `to_csv` writes it, then saved with `;`
  separators and a byte-order mark (a spreadsheet where the comma is the decimal
  mark): themes as Python lists (`['food']`), years with gaps as `1505.0`.
Both spreadsheet variants come with the gold as a `;` CSV with `Culture_A`-style
headers and lower-case culture names.

Each runs `culturesim embed`, `train`, `evaluate --gold` and `allpairs` on the
train run, and the table says each step's exit status and seconds; with
--sanity, the demo's obvious queries (`benchmarks/sanity.py`, in process) on the
variants whose cultures are the demo's: served vs raw culture means. Not a
speed benchmark: times are for orientation only.

    python benchmarks/odd_corpora.py --out DIR [--demo runs/demo] [--only imbalanced,notext]
                                     [--sanity] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "culturesim_ray" / "data" / "gold" / "demo_gold.csv"
NAMES = {"Chinese": "Zhōngguó, 中国", "Egyptian": "Égypte/Misr", "French": "Côte \"d'Azur\"",
         "German": "Deutsch land", "Greek": "Ελλάδα", "Indian": "Bhārat (India)",
         "Italian": "Italia; Roma", "Japanese": "日本", "Persian": "ایران", "Russian": "Россия",
         "Spanish": "España", "Turkish": "Türkiye"}
SIZES = {"Chinese": 60, "Spanish": 60, "German": 40, "Russian": 30, "Indian": 20, "Egyptian": 12,
         "Persian": 8, "Turkish": 5, "Greek": 4, "French": 3, "Italian": 2, "Japanese": 1}
VARIANTS = ("imbalanced", "notext", "names", "nothemes", "many", "squaregold", "xlsx",
            "excelcsv")
DEMO_CULTURES = ("imbalanced", "notext", "nothemes", "squaregold", "xlsx", "excelcsv")
SPREADSHEET = {"xlsx": "corpus.xlsx", "excelcsv": "corpus.csv"}  # variant -> corpus file


def variant(name: str, corpus: pd.DataFrame, gold: pd.DataFrame
            ) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(corpus rows, gold rows, whether the corpus's image/music files are needed)."""
    text = corpus[corpus.modality == "text"].copy()
    if name == "imbalanced":
        rows = pd.concat([g.head(SIZES[c]) for c, g in text.groupby("culture")])
        rows["themes"] = [[] if i % 7 == 0 else t for i, t in enumerate(rows.themes)]
        return rows, gold, False
    if name == "notext":
        return corpus[corpus.modality != "text"].copy(), gold, True
    if name == "names":
        rows = corpus.copy()
        rows["culture"] = rows.culture.map(NAMES)
        g = gold.copy()
        g["culture_a"], g["culture_b"] = g.culture_a.map(NAMES), g.culture_b.map(NAMES)
        return rows, g, True
    if name == "nothemes":
        return text.drop(columns=["themes", "lang"]), gold, False
    if name == "many":
        text["culture"] = [f"K{(i * 37) % 100:03d}" for i in range(len(text))]
        g = pd.DataFrame([(f"K{a:03d}", f"K{b:03d}", float(abs(a - b)))
                          for a in range(100) for b in range(a + 1, 100) if (a + b) % 5 == 0],
                         columns=["culture_a", "culture_b", "score"])
        return text, g, False
    if name == "squaregold":
        names = sorted(set(gold.culture_a) | set(gold.culture_b))
        score = {frozenset((a, b)): s for a, b, s in gold.itertuples(index=False)}
        square = [(a, b, 1.0 if a == b else score[frozenset((a, b))]) for a in names for b in names]
        square.append(("Atlantis", "Greek", 0.5))
        return text, pd.DataFrame(square, columns=list(gold.columns)), False
    if name in SPREADSHEET:
        rows = corpus.copy()
        themes = [list(t) if t is not None else [] for t in rows.themes]
        if name == "xlsx":
            rows["themes"] = ["; ".join(t) for t in themes]
            rows["modality"] = rows.modality.str.title()
            rows["uri"] = rows.uri.str.replace("/", "\\", regex=False)
            rows = rows.rename(columns={c: c.title() for c in rows.columns})
        else:
            rows["themes"] = themes  # to_csv writes a list as Python's repr
            rows["era_start"] = [1500 + i if i % 5 == 0 else None for i in range(len(rows))]
            rows["era_start"] = rows.era_start.astype(float)  # gaps: pandas writes 1505.0
        g = gold.copy()
        g["culture_a"], g["culture_b"] = g.culture_a.str.lower(), g.culture_b.str.lower()
        return rows, g.rename(columns={"culture_a": "Culture_A", "culture_b": "Culture_B",
                                       "score": "Score"}), True
    raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")


def build(out: Path, demo_corpus: Path, name: str) -> Path:
    corpus = pd.read_parquet(demo_corpus / "corpus.parquet")
    gold = pd.read_csv(GOLD)[["culture_a", "culture_b", "score"]]
    rows, g, assets = variant(name, corpus, gold)
    d = out / name
    (d / "corpus").mkdir(parents=True, exist_ok=True)
    if assets:
        for sub in ("images", "music"):
            if (demo_corpus / sub).exists() and not (d / "corpus" / sub).exists():
                shutil.copytree(demo_corpus / sub, d / "corpus" / sub)
    if name == "xlsx":
        rows.reset_index(drop=True).to_excel(d / "corpus" / SPREADSHEET[name], index=False)
    elif name == "excelcsv":
        text = rows.reset_index(drop=True).to_csv(index=False, sep=";")
        (d / "corpus" / SPREADSHEET[name]).write_text(text, encoding="utf-8-sig")
    else:
        rows.reset_index(drop=True).to_parquet(d / "corpus" / "corpus.parquet")
    g.to_csv(d / "gold.csv", index=False, sep=";" if name in SPREADSHEET else ",")
    return d


def run_steps(d: Path) -> list[dict]:
    exe = str(Path(sys.executable).with_name("culturesim"))
    steps = [("embed", [exe, "embed", str(d / "corpus"), "--out", str(d / "embed"), "--overwrite"]),
             ("train", [exe, "train", str(d / "embed"), "--out", str(d / "train")]),
             ("evaluate", [exe, "evaluate", str(d), "--gold", str(d / "gold.csv")]),
             ("allpairs", [exe, "allpairs", str(d / "train"), "--out", str(d / "allpairs-model"),
                           "--overwrite"])]
    done = []
    for step, cmd in steps:
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        (d / f"{step}.log").write_text(res.stdout + res.stderr)
        tail = (res.stdout.strip() or res.stderr.strip()).splitlines()  # the summary line
        done.append({"step": step, "rc": res.returncode, "s": round(time.perf_counter() - t, 1),
                     "last_line": tail[-1] if tail else ""})
        if res.returncode:
            break
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--demo", default="runs/demo", help="a `make demo` run (its corpus/)")
    ap.add_argument("--only", help=f"comma-separated variants (default all: {', '.join(VARIANTS)})")
    ap.add_argument("--sanity", action="store_true",
                    help="the sanity queries, in process, on the variants with demo cultures")
    ap.add_argument("--json")
    args = ap.parse_args()
    demo_corpus = Path(args.demo) / "corpus"
    if not (demo_corpus / "corpus.parquet").exists():
        sys.exit(f"{demo_corpus}/corpus.parquet not found: run `make demo` first")
    names = args.only.split(",") if args.only else list(VARIANTS)
    out = Path(args.out)
    result: dict = {}
    for name in names:
        d = build(out, demo_corpus, name)
        result[name] = {"steps": run_steps(d)}
        for s in result[name]["steps"]:
            print(f"{name:<11} {s['step']:<9} rc={s['rc']} {s['s']:>6.1f} s  {s['last_line'][:90]}",
                  flush=True)
        ok = all(s["rc"] == 0 for s in result[name]["steps"]) and len(result[name]["steps"]) == 4
        has_text = name != "notext"
        if args.sanity and ok and name in DEMO_CULTURES and has_text:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from sanity import run_sanity

            res = run_sanity(str(d), via="inprocess")
            result[name]["sanity"] = {**res["methods"], "served_minus_raw": res["served_minus_raw"]}
            m = res["methods"]
            print(f"{name:<11} sanity    served {m['served']['top1']:.3f} / {m['served']['top3']:.3f}"
                  f", raw means {m['raw']['top1']:.3f} / {m['raw']['top3']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    bad = [n for n, r in result.items() if any(s["rc"] for s in r["steps"])]
    print(f"\n{len(result) - len(bad)} of {len(result)} variants finished every step"
          + (f"; failed: {', '.join(bad)}" if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
