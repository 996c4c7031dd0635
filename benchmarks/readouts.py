"""Read-outs: can any unsupervised culture read-out of the raw item embeddings beat
the cosine of the culture means by a margin on independent gold?

Issue 13 asks the model's culture map to beat max(raw cosine, TF-IDF) + 0.05
Spearman on every dev set. Before blaming (or tuning) the model, this benchmark
asks what the item vectors themselves allow: for the demo's texts and the two dev
sets of `benchmarks/devsets.py` (countries-wiki: geography gold; languages-wiki:
URIEL language distance), the texts are embedded once with the default encoder
(MiniLM, in process) and each read-out turns the same (n, d) item matrix into a
culture x culture similarity, scored by Spearman with the gold over the gold
pairs (the baseline, raw-mean cosine, in the same run; margin = read-out - raw):

- raw: cosine of the L2-normalised mean of each culture's normalised items;
- lang_centered: each language's mean item removed first (the en/fr/es
  summaries of an English encoder cluster by language);
- all_but_top_k: lang_centered, then the top k principal directions removed
  (Mu & Viswanath 2018, "all-but-the-top");
- per_language: the mean over languages of same-language culture-mean cosines;
- whitened: lang_centered items ZCA-whitened (shrinkage eps of the top eigenvalue);
- second_order: correlation of two cultures' similarity profiles to the others,
  and its rank sum with raw;
- theme_centered: each theme's mean item removed first (an item's first theme),
  so a culture mean no longer reflects which topics its items cover; and
  second_order of it;
- pca_k: cosine of the culture means projected on their top k principal axes;
- lr_confusion: cross-validated logistic-regression item -> culture posteriors,
  symmetrised log mean confusion, and its rank sum with raw;
- tfidf_words: TF-IDF (no LSA) of the texts, culture means, and its rank sum with raw.

    python benchmarks/readouts.py [--quick] [--json PATH] [--sets demo,countries-wiki]

--quick: 20 items per culture on the dev sets and 6 per language on the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from scipy.stats import rankdata, spearmanr  # noqa: E402

SETS = ("demo", "countries-wiki", "languages-wiki")
Readout = Callable[[np.ndarray, np.ndarray, np.ndarray, list[str], list[str], np.ndarray],
                   np.ndarray]


def _nz(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def culture_means(x: np.ndarray, culture: np.ndarray, cultures: list[str]) -> np.ndarray:
    """(C, d) L2-normalised means of each culture's rows of x (n, d)."""
    return np.stack([_nz(x[culture == c].mean(0)) for c in cultures])


def lang_center(x: np.ndarray, lang: np.ndarray) -> np.ndarray:
    """x with each language's mean row subtracted from that language's rows."""
    x = x.copy()
    for g in np.unique(lang):
        x[lang == g] -= x[lang == g].mean(0)
    return x


def theme_center(x: np.ndarray, theme: np.ndarray) -> np.ndarray:
    """x with each theme's mean row subtracted from that theme's rows (an item's
    theme: its first theme, "" for none): a culture's mean then no longer carries
    the mix of topics its items happen to cover, only how its items differ from
    other cultures' items on the same topic."""
    return lang_center(x, theme)


def all_but_top(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(0)
    vt = np.linalg.svd(xc, full_matrices=False)[2][:k]
    return xc - xc @ vt.T @ vt


def whiten(x: np.ndarray, eps: float) -> np.ndarray:
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(np.cov(xc.T))
    return xc @ v @ np.diag(1 / np.sqrt(np.maximum(w, 0) + eps * w.max())) @ v.T


def rank_sum(*mats: np.ndarray) -> np.ndarray:
    """Sum of the off-diagonal ranks of each symmetric matrix."""
    out = np.zeros_like(mats[0])
    iu = np.triu_indices(len(out), 1)
    for s in mats:
        r = np.zeros_like(s)
        r[iu] = rankdata(s[iu])
        out += r + r.T
    return out


def second_order(s: np.ndarray) -> np.ndarray:
    """Pearson correlation of rows a and b of s over the cultures other than a, b."""
    import torch

    from culturesim_ray.ops.readout import second_order as so

    return so(torch.from_numpy(np.asarray(s, np.float64))).numpy()


def _cos(x: np.ndarray, culture: np.ndarray, cultures: list[str]) -> np.ndarray:
    m = culture_means(_nz(x), culture, cultures)
    return m @ m.T


def _per_language(x: np.ndarray, culture: np.ndarray, lang: np.ndarray,
                  cultures: list[str]) -> np.ndarray:
    sims = []
    for g in np.unique(lang):
        m = np.stack([_nz(x[(culture == c) & (lang == g)].mean(0))
                      if ((culture == c) & (lang == g)).any() else np.zeros(x.shape[1])
                      for c in cultures])
        sims.append(m @ m.T)
    return np.mean(sims, axis=0)


def _pca(x: np.ndarray, culture: np.ndarray, cultures: list[str], k: int) -> np.ndarray:
    m = culture_means(x, culture, cultures)
    mc = m - m.mean(0)
    z = _nz(mc @ np.linalg.svd(mc, full_matrices=False)[2][:k].T)
    return z @ z.T


def _confusion(x: np.ndarray, culture: np.ndarray, cultures: list[str]) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    y = np.searchsorted(np.asarray(cultures), culture)
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5, method="predict_proba")
    k = np.stack([p[y == i].mean(0) for i in range(len(cultures))])
    return np.log(k + 1e-4) + np.log(k.T + 1e-4)


def _tfidf(texts: list[str], culture: np.ndarray, cultures: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    t = TfidfVectorizer(sublinear_tf=True, min_df=2).fit_transform(texts).toarray()
    return _cos(t, culture, cultures)


def readouts() -> dict[str, Readout]:
    """name -> f(x normalised (n, d), culture (n,), lang (n,), texts, cultures,
    theme (n,)) -> (C, C)."""
    raw: Readout = lambda x, c, g, t, cs, th: _cos(x, c, cs)  # noqa: E731
    out: dict[str, Readout] = {
        "raw": raw,
        "lang_centered": lambda x, c, g, t, cs, th: _cos(lang_center(x, g), c, cs),
        "per_language": lambda x, c, g, t, cs, th: _per_language(x, c, g, cs),
        "theme_centered": lambda x, c, g, t, cs, th: _cos(theme_center(x, th), c, cs),
        "second_order(theme_centered)": lambda x, c, g, t, cs, th: second_order(
            _cos(theme_center(x, th), c, cs)),
        "second_order": lambda x, c, g, t, cs, th: second_order(raw(x, c, g, t, cs, th)),
        "raw+second_order": lambda x, c, g, t, cs, th: rank_sum(raw(x, c, g, t, cs, th),
                                                            second_order(raw(x, c, g, t, cs, th))),
        "lr_confusion": lambda x, c, g, t, cs, th: _confusion(x, c, cs),
        "raw+lr_confusion": lambda x, c, g, t, cs, th: rank_sum(raw(x, c, g, t, cs, th),
                                                            _confusion(x, c, cs)),
        "tfidf_words": lambda x, c, g, t, cs, th: _tfidf(t, c, cs),
        "raw+tfidf_words": lambda x, c, g, t, cs, th: rank_sum(raw(x, c, g, t, cs, th),
                                                           _tfidf(t, c, cs)),
    }
    for k in (1, 3):
        out[f"all_but_top_{k}"] = lambda x, c, g, t, cs, th, k=k: _cos(
            all_but_top(lang_center(x, g), k), c, cs)
    for k in (2, 5):
        out[f"pca_{k}"] = lambda x, c, g, t, cs, th, k=k: _pca(x, c, cs, k)
    for eps in (0.01, 0.1):
        out[f"whitened_{eps}"] = lambda x, c, g, t, cs, th, e=eps: _cos(
            whiten(lang_center(x, g), e), c, cs)
    return out


def gold_spearman(s: np.ndarray, cultures: list[str], gold: list[tuple[str, str, float]]
                  ) -> float:
    """Spearman of s over the gold pairs (gold oriented so higher = more similar)."""
    ix = {c: i for i, c in enumerate(cultures)}
    pairs = [(ix[a], ix[b], g) for a, b, g in gold if a in ix and b in ix]
    return float(spearmanr([g for *_, g in pairs], [s[i, j] for i, j, _ in pairs])[0])


def load_set(name: str, out: Path, quick: bool) -> dict:
    """Texts, cultures, languages and oriented gold pairs of one set."""
    import csv

    import pyarrow.parquet as pq

    if name == "demo":
        from culturesim_ray.demo import text_rows
        from culturesim_ray.report.gold import demo_gold_path

        rows, gold, kind = text_rows(6 if quick else 20), str(demo_gold_path()), "similarity"
    else:
        import devsets

        b = devsets.build(name, out / name, max_per_culture=20 if quick else 60)
        rows, gold, kind = pq.read_table(b["corpus"]).to_pylist(), b["gold"], b["gold_kind"]
    sign = 1.0 if kind == "similarity" else -1.0
    with open(gold, newline="", encoding="utf-8") as fh:
        pairs = [(r["culture_a"], r["culture_b"], sign * float(r["score"]))
                 for r in csv.DictReader(fh)]
    return {"texts": [r["text"] for r in rows], "culture": np.array([r["culture"] for r in rows]),
            "lang": np.array([r.get("lang") or "" for r in rows]),
            "theme": np.array([(r.get("themes") or [""])[0] for r in rows]), "gold": pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    from culturesim_ray.encoders import build_encoder, registry

    encoder = build_encoder(registry.DEFAULTS["text"])
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            t0 = time.perf_counter()
            d = load_set(name, Path(tmp), args.quick)
            x = _nz(encoder.encode(d["texts"]).vectors.astype(np.float64))
            cultures = sorted(set(d["culture"].tolist()))
            table[name] = {r: gold_spearman(f(x, d["culture"], d["lang"], d["texts"], cultures,
                                              d["theme"]),
                                            cultures, d["gold"])
                           for r, f in readouts().items()}
            print(f"{name}: {len(x)} texts, {len(cultures)} cultures, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    names = list(table)
    print(f"{'read-out':<30}" + "".join(f"{n:>16}" for n in names) + f"{'min margin':>12}")
    for r in readouts():
        margin = min(table[n][r] - table[n]["raw"] for n in names)
        print(f"{r:<30}" + "".join(f"{table[n][r]:>16.3f}" for n in names) + f"{margin:>+12.3f}")
    best = max((r for r in readouts() if r != "raw"),
               key=lambda r: min(table[n][r] - table[n]["raw"] for n in names))
    result = {"sets": table, "best_readout": best,
              "best_min_margin": min(table[n][best] - table[n]["raw"] for n in names),
              "quick": args.quick}
    print(f"best read-out by its smallest margin over raw: {best} "
          f"({result['best_min_margin']:+.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
