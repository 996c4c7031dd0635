"""Long texts: does reading a text whole (MiniLM over consecutive 256-token windows)
place cultures better than reading its first 256 tokens?

A corpus of full articles, field notes or book chapters has texts far longer than
the 256 tokens MiniLM was trained on. Cut at 256, such a text is its opening
paragraph. The default encoder now reads up to `encoders.text.MAX_WINDOWS`
windows of a text and pools all their tokens. This benchmark builds long texts
from the dev sets of `benchmarks/devsets.py` (and the demo's texts): each
culture's items of one language joined, `--join` at a time, into one document
(the items are about that culture, so the whole document is), embeds them once
cut at 256 tokens (`max_windows=1`, the baseline) and once read whole (the
default), and scores each run's culture means (cosine) against the set's gold
by Spearman. The same documents, encoder and read-out on both sides; only
`max_windows` differs. As a reference it also embeds the items one by one (no
text past 256 tokens): what a culture mean is when nothing is cut.

Per set: documents, their median and largest token count, the share longer than
one window, Spearman of the truncated, the whole and the item-level means, and
the cosine of each document-level culture mean with the item-level one (how much
of the culture each reading keeps); the time to embed the documents, whole over
truncated (the price of reading the rest).

    python benchmarks/long_texts.py [--quick] [--join 5] [--sets ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from readouts import _nz, culture_means, gold_spearman, load_set  # noqa: E402

SETS = ("demo", "countries-wiki", "languages-wiki")


def join_documents(texts: list[str], culture: np.ndarray, lang: np.ndarray,
                   join: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each (culture, language)'s texts in corpus order, `join` at a time, as one
    document; returns the documents, their cultures, and the item -> document index."""
    docs, doc_culture, of_item = [], [], np.empty(len(texts), dtype=np.int64)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(culture.tolist(), lang.tolist(), strict=True)):
        groups.setdefault(key, []).append(i)
    for (c, _), idx in groups.items():
        for start in range(0, len(idx), join):
            part = idx[start:start + join]
            of_item[part] = len(docs)
            docs.append("\n\n".join(texts[i] for i in part))
            doc_culture.append(c)
    return docs, np.array(doc_culture), of_item


def _timed(encoder, docs: list[str]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    x = encoder.encode(docs).vectors.astype(np.float64)
    return _nz(x), time.perf_counter() - t0


def run_set(name: str, tmp: Path, quick: bool, join: int, whole, cut) -> dict:
    d = load_set(name, tmp, quick)
    docs, doc_culture, _ = join_documents(d["texts"], d["culture"], d["lang"], join)
    cultures = sorted(set(d["culture"].tolist()))
    n_tokens = np.array([len(ids) for ids in whole.tokenizer(
        docs, add_special_tokens=False, verbose=False)["input_ids"]]) + 2
    x_cut, t_cut = _timed(cut, docs)
    x_whole, t_whole = _timed(whole, docs)
    x_items, _ = _timed(whole, d["texts"])  # items fit one window: cut and whole agree
    means = {k: culture_means(x, c, cultures) for k, (x, c) in {
        "truncated": (x_cut, doc_culture), "whole": (x_whole, doc_culture),
        "items": (x_items, d["culture"])}.items()}
    spearman = {k: gold_spearman(m @ m.T, cultures, d["gold"]) for k, m in means.items()}
    keep = {k: float(np.mean(np.sum(means[k] * means["items"], axis=1)))
            for k in ("truncated", "whole")}
    return {"documents": len(docs), "items": len(d["texts"]), "cultures": len(cultures),
            "median_tokens": float(np.median(n_tokens)), "max_tokens": int(n_tokens.max()),
            "share_over_window": float(np.mean(n_tokens > whole.max_length)),
            "spearman": spearman, "whole_minus_truncated": spearman["whole"] -
            spearman["truncated"], "cosine_with_item_means": keep,
            "seconds": {"truncated": t_cut, "whole": t_whole},
            "time_ratio_whole_over_truncated": t_whole / t_cut}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="20 items per culture on the dev sets, 6 per language on the demo")
    ap.add_argument("--join", type=int, default=5, help="items per document (default 5)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    import torch

    from culturesim_ray.encoders.text import MiniLMEncoder

    torch.set_num_threads(1)  # both sides on one thread: the time ratio is per core
    whole, cut = MiniLMEncoder(), MiniLMEncoder(max_windows=1)
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            sets[name] = run_set(name, Path(tmp), args.quick, args.join, whole, cut)
            print(f"{name}: {time.strftime('%H:%M:%S')}", file=sys.stderr)
    head = (f"{'set':<16}{'docs':>6}{'tokens med/max':>16}{'>1 window':>10}"
            f"{'truncated':>11}{'whole':>8}{'items':>8}{'whole-trunc':>12}"
            f"{'cos trunc/whole':>17}{'time x':>8}")
    print(head)
    for name, r in sets.items():
        s, c = r["spearman"], r["cosine_with_item_means"]
        print(f"{name:<16}{r['documents']:>6}{r['median_tokens']:>9.0f}/{r['max_tokens']:<6}"
              f"{r['share_over_window']:>10.2f}{s['truncated']:>11.3f}{s['whole']:>8.3f}"
              f"{s['items']:>8.3f}{r['whole_minus_truncated']:>+12.3f}"
              f"{c['truncated']:>9.3f}/{c['whole']:.3f}"
              f"{r['time_ratio_whole_over_truncated']:>8.2f}")
    result = {"quick": args.quick, "join": args.join, "max_windows": whole.max_windows,
              "sets": sets}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
