"""Transfer: does a text metric fitted on one set's gold help on another set?

Every unsupervised read-out of the raw text vectors stays within a few hundredths
of the cosine of the culture means; the learned similarity beats it only when
fitted on the same set's gold. This benchmark asks whether a metric fitted on
one set's gold carries over to other cultures and another kind of gold, which
is what a metric shipped with the tool would have to do.

Per culture, the mean of its L2-normalised text vectors, normalised (the raw
baseline's vector). The metric is a weight per dimension, fitted on the training
set's gold pairs: w = X'(r - mean r), X the pairs' products x_a * x_b per
dimension (centred), r the gold's ranks (similarity-oriented), i.e. ridge
regression in the limit of a large penalty (each dimension weighted by how its
product follows the gold; nothing to tune). A test set's pairs are scored by

    z(raw cosine) + b * z(x_a' diag(w) x_b)         (z: standardised over its pairs)

for b in {0.25, 0.5, 1} against the raw cosine alone (the baseline, the same
pairs and vectors). Per (fitted on, scored on): Spearman with the test gold, the
difference to raw with its paired 95% bootstrap interval over cultures
(`report.stats.bootstrap_difference`), and a control: the same fit with the
training gold's cultures permuted (--perms draws), whose scores say what a
metric of the same form but unrelated to the gold does (mean and 5th / 95th
percentiles). Fits are only scored on sets with which they share no culture;
last, per set, the fits of all the sets it shares no culture with, pooled (each
scaled to unit length, summed): what a metric fitted on the other dev sets does.

    python benchmarks/truth.py --out DIR                      # the runs, once
    python benchmarks/transfer.py DIR [--quick] [--json PATH] [--perms 50]

--quick: b = 0.5 only, 10 permutations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from culturesim_ray.ops.metric import (  # noqa: E402
    blend,
    fit_dimension_weights,
    named_pair_products,
)
from culturesim_ray.report.stats import (  # noqa: E402
    bootstrap_difference,
    orient,
    rank_correlations,
)

TEXT_SETS = ("demo", "countries-wiki", "languages-wiki", "mixed-modal")


def culture_means(embed_dir: str) -> tuple[list[str], np.ndarray]:
    """Cultures (sorted) and the normalised means of their L2-normalised text vectors."""
    from culturesim_ray.runs import read_embeddings

    t = read_embeddings(embed_dir, "text")["text"]
    culture = np.array(t.column("culture").to_pylist())
    v = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    names = sorted(set(culture.tolist()))
    m = np.stack([v[culture == c].mean(0) for c in names])
    return names, m / np.linalg.norm(m, axis=1, keepdims=True)


def gold_pairs(run: Path, name: str, cultures: list[str]) -> list[tuple[str, str, float]]:
    """The set's gold pairs among `cultures`, oriented "higher = more similar"."""
    from culturesim_ray.report.gold_file import read_gold_rows

    if name == "demo":
        from culturesim_ray.report.gold import demo_gold_path

        path, kind = demo_gold_path(), "similarity"
    else:
        path = run / "corpus" / "gold.csv"
        kind = json.loads((run / "corpus" / "devset.json").read_text())["gold_kind"]
    known = set(cultures)
    rows = [(r["culture_a"], r["culture_b"], float(r["score"])) for r in read_gold_rows(path)
            if r["culture_a"] in known and r["culture_b"] in known and r["score"] is not None]
    return orient(rows, kind)


def permuted_gold(pairs: list[tuple[str, str, float]], rng: np.random.Generator
                  ) -> np.ndarray:
    """The same gold with its cultures relabelled by a random permutation (a pair
    missing after relabelling gets the mean score)."""
    names = sorted({c for p in pairs for c in p[:2]})
    perm = dict(zip(names, rng.permutation(names), strict=True))
    lut = {frozenset(p[:2]): p[2] for p in pairs}
    mean = float(np.mean([p[2] for p in pairs]))
    return np.array([lut.get(frozenset((perm[a], perm[b])), mean) for a, b, _ in pairs])


def _scored(w: np.ndarray, ws: list[np.ndarray], te: dict[str, Any],
            bs: tuple[float, ...]) -> dict[str, Any]:
    """Spearman of the blends with fit w (and the permuted fits ws) on set te."""
    tg = np.array([p[2] for p in te["pairs"]])
    raw = te["x"].sum(1)
    row: dict[str, Any] = {"pairs": len(te["pairs"]), "raw": rank_correlations(tg, raw)[0],
                           "b": {}}
    for b in bs:
        pred = blend(te["x"], w, b)
        ctrl = [rank_correlations(tg, blend(te["x"], cw, b))[0] for cw in ws]
        row["b"][str(b)] = {
            "spearman": rank_correlations(tg, pred)[0],
            **bootstrap_difference(te["pairs"], pred, raw),
            "perm_mean": float(np.mean(ctrl)) if ctrl else None,
            "perm_p05": float(np.percentile(ctrl, 5)) if ctrl else None,
            "perm_p95": float(np.percentile(ctrl, 95)) if ctrl else None}
    return row


def transfer(sets: dict[str, dict[str, Any]], bs: tuple[float, ...], perms: int,
             seed: int = 0) -> list[dict[str, Any]]:
    """Each set's fit scored on every set it shares no culture with; then, per set,
    the fits of all such other sets pooled (each fit scaled to unit length and
    summed: what a metric fitted on every dev set but the one scored would do)."""
    fits: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    for name, tr in sets.items():
        rng = np.random.default_rng(seed)
        w = fit_dimension_weights(tr["x"], np.array([p[2] for p in tr["pairs"]]))
        fits[name] = (w, [fit_dimension_weights(tr["x"], permuted_gold(tr["pairs"], rng))
                          for _ in range(perms)])

    def apart(a: str, b: str) -> bool:
        return a != b and not set(sets[a]["names"]) & set(sets[b]["names"])

    rows = [{"fitted_on": train, "scored_on": test, **_scored(*fits[train], te, bs)}
            for train in sets for test, te in sets.items() if apart(train, test)]
    for test, te in sets.items():
        others = [s for s in sets if apart(s, test)]
        if len(others) < 2:
            continue
        unit = [(fits[s][0] / np.linalg.norm(fits[s][0]),
                 [cw / np.linalg.norm(cw) for cw in fits[s][1]]) for s in others]
        w = np.sum([u for u, _ in unit], axis=0)
        ws = [np.sum(ps, axis=0) for ps in zip(*[p for _, p in unit], strict=True)]
        rows.append({"fitted_on": " + ".join(others), "scored_on": test,
                     **_scored(w, ws, te, bs)})
    return rows


def table(rows: list[dict[str, Any]], bs: tuple[float, ...]) -> str:
    head = "| fitted on -> scored on | raw | " + " | ".join(
        f"b = {b:g} [paired 95% CI of - raw] (permuted: mean [p5, p95])" for b in bs) + " |"
    out = [head, "|---|---|" + "---|" * len(bs)]
    for r in rows:
        cells = []
        for b in bs:
            c = r["b"][str(b)]
            perm = (f" ({c['perm_mean']:.3f} [{c['perm_p05']:.3f}, {c['perm_p95']:.3f}])"
                    if c["perm_mean"] is not None else "")
            cells.append(f"{c['spearman']:.3f}, {c['delta']:+.3f} [{c['delta_lo']:+.3f}, "
                         f"{c['delta_hi']:+.3f}]{perm}")
        out.append(f"| {r['fitted_on']} -> {r['scored_on']} ({r['pairs']} pairs) | "
                   f"{r['raw']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def load_sets(truth_dir: str | Path, names: list[str],
              log: Any = lambda m: print(m, file=sys.stderr)) -> dict[str, dict[str, Any]]:
    """Per set of `names` with a text run under truth_dir: its cultures, gold pairs
    and the pairs' products."""
    sets: dict[str, dict[str, Any]] = {}
    for name in names:
        run = Path(truth_dir) / name
        if not (run / "embed").exists():
            log(f"[{name}] no run under {run}: skipped")
            continue
        try:
            cultures, m = culture_means(str(run / "embed"))
        except KeyError:  # no text items (folk-music)
            log(f"[{name}] no text items: skipped")
            continue
        pairs = gold_pairs(run, name, cultures)
        sets[name] = {"names": cultures, "pairs": pairs, "x": named_pair_products(cultures, m, pairs)}
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("truth_dir", help="the --out folder of benchmarks/truth.py")
    ap.add_argument("--sets", default=",".join(TEXT_SETS))
    ap.add_argument("--perms", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    bs = (0.5,) if args.quick else (0.25, 0.5, 1.0)
    perms = 10 if args.quick else args.perms
    rows = transfer(load_sets(args.truth_dir, args.sets.split(",")), bs, perms)
    print(table(rows, bs))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "bs": bs, "perms": perms},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
