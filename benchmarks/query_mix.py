"""Query mix: which (a, m) of `ops.query_score` ranks one-item queries best.

The service ranks a one-item query against every culture by

    score = (1 - a) * raw + a * w * nearest_m + l * learned

(`ops.query_score`: a = the nearest-items share, m = how many of a culture's
items nearest the query are averaged). This benchmark takes the runs of
`benchmarks/truth.py` and ranks, over the training items only, two kinds of
queries the runs never trained on:

- held-out items: every held-out item of each modality (a whole text, a tune,
  an image) as the query;
- titles: the page titles of the held-out text items ("Nowruz", "Afonso I of
  Portugal"): a few words naming a thing, as a user types them.

For every (a, m) of the grid (the learned weight and the shortlist stay at the
defaults) it reports top-1 / top-3 / MRR per set and kind, and, pooled over
the sets per kind, the difference to the default mix (`QueryMix()`) with a
paired 95% bootstrap interval over the queries; the raw culture means (no
model: nearest mean) are the baseline row of the same run. Every mix scores
the same queries with the same fused vectors: only the mix differs.

    python benchmarks/truth.py --out DIR                       # the runs, once
    python benchmarks/query_mix.py DIR [--sets demo,countries-wiki] [--quick] [--json PATH]

--quick: a in {0.25, 0.5, 0.75}, m in {1, 3}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from culturesim_ray.ops.query_score import QueryMix, mix_scores  # noqa: E402

GRID_A, GRID_M = (0.0, 0.25, 0.5, 0.75, 1.0), (1, 3, 5)
QUICK_A, QUICK_M = (0.25, 0.5, 0.75), (1, 3)
RAW = "raw means"


def mix_name(mix: QueryMix) -> str:
    name = f"a={mix.nearest:g} m={mix.m}"
    if mix.abtt != QueryMix().abtt:  # named where it is not the default's
        name += f" abtt {','.join(mix.abtt)}" if mix.abtt else " no abtt"
    own = [f"{mod} {mix_name(mix.for_modality(mod))}" for mod in sorted(mix.modalities)]
    return f"{name} ({'; '.join(own)})" if own else name


def grid(a_values: Iterable[float], m_values: Iterable[int]) -> list[QueryMix]:
    """The default mix first (with its per-modality settings), then the default with
    no dominant directions removed (`QueryMix.abtt` empty), then every (a, m) for
    every modality alike; with a = 0 the nearest items do not count, so a = 0 enters
    once (under the first m)."""
    default = QueryMix()
    uniform = replace(default, modalities={})
    mixes = {mix_name(default): default}
    plain = replace(default, abtt=())  # the default without removing dominant directions
    mixes[mix_name(plain)] = plain
    seen: set[tuple[float, int]] = set()
    for m in m_values:
        for a in a_values:
            key = (float(a), int(m) if a else 0)
            if key not in seen:
                seen.add(key)
                mix = replace(uniform, nearest=float(a), m=int(m))
                mixes.setdefault(mix_name(mix), mix)
    return list(mixes.values())


def truth_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n,) rank of each row's true column (0 = first); ties go against the truth
    (every equal score counts as ahead of it), so a constant score never wins."""
    s = np.asarray(scores, np.float64)
    own = s[np.arange(len(s)), truth]
    return (s > own[:, None]).sum(1) + ((s == own[:, None]).sum(1) - 1)


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"n": int(len(ranks)), "top1": float(np.mean(ranks < 1)),
            "top3": float(np.mean(ranks < 3)), "mrr": float(np.mean(1.0 / (ranks + 1)))}


def mix_ranks(fusion: Any, retriever: Any, modality: str, q: np.ndarray, truth: np.ndarray,
              mixes: list[QueryMix]) -> dict[str, np.ndarray]:
    """{mix name: (n,) ranks} of queries q (n, d) of `modality`, each mix scoring the
    same fused queries through `QueryRanker.score_parts` and `mix_scores`."""
    import torch

    from culturesim_ray.serving.retrieval import QueryRanker

    with torch.inference_mode():
        fused = fusion.fuse(modality, q)
    out: dict[str, np.ndarray] = {}
    parts: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
    for mix in mixes:
        ranker = QueryRanker(fusion, retriever, mix)
        own = ranker.mix_for(modality)  # the (a, m) this modality's queries get
        key = (own.m, own.shortlist, own.nearest > 0,  # a = 0 computes no nearest items
               own.debiased(modality))
        if key not in parts:
            parts[key] = ranker.score_parts(fused, modality, q, own)
        out[mix_name(mix)] = truth_ranks(mix_scores(*parts[key], ranker.raw_weight, own), truth)
    return out


def run_set(run: Path, mixes: list[QueryMix]) -> dict[str, dict[str, np.ndarray]]:
    """{query kind: {method: ranks}} of one truth run: held-out items per modality
    ("items:text", "items:sequence", ...) and "titles"."""
    import held_out

    tables, held, model, data, _ = held_out.load_held_out(run)
    fusion, retriever = held_out.model_query_path(model, data)
    kinds: dict[str, tuple[str, tuple[np.ndarray, np.ndarray] | None]] = {
        f"items:{m}": (m, held_out.held_out_items(tables, held, data, m))
        for m in sorted(data.graphs)}
    kinds["titles"] = ("text", held_out.title_queries(run, tables, held, data))
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind, (modality, queries) in kinds.items():
        if queries is None:
            continue
        q, t = queries
        out[kind] = {RAW: truth_ranks(held_out.raw_scores(data, modality, q), t),
                     **mix_ranks(fusion, retriever, modality, q, t, mixes)}
    return out


def summarise(ranks: dict[str, dict[str, dict[str, np.ndarray]]], default: str
              ) -> dict[str, Any]:
    """Per set and kind: each method's metrics; pooled per kind over the sets: each
    method's metrics and its top-1 / top-3 minus the default mix's, paired over
    the queries (95% bootstrap)."""
    from culturesim_ray.report.ranking import paired_rate_difference

    per_set = {s: {k: {m: rank_metrics(r) for m, r in by.items()} for k, by in kinds.items()}
               for s, kinds in ranks.items()}
    pooled: dict[str, Any] = {}
    for kind in sorted({k for kinds in ranks.values() for k in kinds}):
        sets = [s for s in ranks if kind in ranks[s]]
        methods = list(ranks[sets[0]][kind])
        cat = {m: np.concatenate([ranks[s][kind][m] for s in sets]) for m in methods}
        pooled[kind] = {"sets": sets, "methods": {}}
        for m, r in cat.items():
            row: dict[str, Any] = rank_metrics(r)
            if m != default:
                for k in (1, 3):
                    row[f"minus_default_top{k}"] = paired_rate_difference(
                        r < k, cat[default] < k)
            pooled[kind]["methods"][m] = row
    return {"per_set": per_set, "pooled": pooled}


def fmt_delta(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return f"{d['delta']:+.3f} [{d['delta_lo']:+.3f}, {d['delta_hi']:+.3f}]"


def print_table(res: dict[str, Any]) -> None:
    default = res["default"]
    for kind, block in res["pooled"].items():
        sets = block["sets"]
        print(f"\n{kind}: top-1 / top-3 / MRR per set; pooled over {', '.join(sets)} "
              f"with the difference to the default ({default}), paired 95% CI")
        head = ["method", *sets, "pooled", "top-1 - default", "top-3 - default"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for m, row in block["methods"].items():
            cells = [f"**{m}**" if m == default else m]
            for s in sets:
                r = res["per_set"][s][kind][m]
                cells.append(f"{r['top1']:.3f} / {r['top3']:.3f} / {r['mrr']:.3f} ({r['n']})")
            cells.append(f"{row['top1']:.3f} / {row['top3']:.3f} / {row['mrr']:.3f} ({row['n']})")
            cells += [fmt_delta(row.get("minus_default_top1")),
                      fmt_delta(row.get("minus_default_top3"))]
            print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", help="the --out directory of benchmarks/truth.py")
    ap.add_argument("--sets", help="comma-separated set names (default: every run found)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(args.runs)
    names = (args.sets.split(",") if args.sets else
             sorted(p.name for p in root.iterdir() if (p / "train" / "holdout.parquet").exists()))
    if not names:
        sys.exit(f"no truth runs (with train/holdout.parquet) under {root}")
    mixes = grid(*((QUICK_A, QUICK_M) if args.quick else (GRID_A, GRID_M)))
    ranks = {}
    for name in names:
        print(f"[{name}] ranking", flush=True)
        ranks[name] = run_set(root / name, mixes)
    res = {"runs": str(root), "default": mix_name(QueryMix()),
           "grid": [m.to_dict() for m in mixes], **summarise(ranks, mix_name(QueryMix()))}
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
