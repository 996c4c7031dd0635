"""Agreement with expert judgements (SPEC R2, S2). Pure: no ray.

Gold pairs (culture_a, culture_b, score[, theme]) are compared with the
similarity each method assigns to the same pairs:

- Spearman and Kendall (tau-b) rank correlation over all gold pairs;
- recall@k: for each culture, the share of its k highest-scored gold partners
  that are also among its k most similar partners by the method (candidates:
  the cultures it has gold pairs with), averaged over cultures;
- nDCG@k: for each culture, its partners ranked by the method, gain = gold
  score, DCG = sum_i gain_i / log2(i + 2) over the first k, divided by the
  ideal DCG; averaged over cultures with a positive ideal DCG.

Methods: the trained model's heads (cosine), the TF-IDF baseline (fitted on
the corpus texts, mean per culture, cosine), and the mean of raw embeddings
under every similarity function of SPEC S1 (the learned one scored by 5-fold
cross-validation over the gold pairs, so no pair is scored by a model that
saw it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GENERAL = "general"


# ---------------------------------------------------------------- gold input
@dataclass
class GoldSet:
    pairs: list[tuple[str, str, float, str]]  # (a, b, score, theme), a < b
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def by_theme(self) -> dict[str, list[tuple[str, str, float]]]:
        out: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
        for a, b, s, t in self.pairs:
            out[t].append((a, b, s))
        return dict(out)


class GoldError(ValueError):
    """A gold file that cannot be used; the message names the row and field."""


def read_gold_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV, JSONL or Parquet gold file."""
    path = str(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.endswith((".jsonl", ".json")):
        import json

        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise GoldError(f"{path}: line {n} is not JSON: {exc}") from exc
        return rows
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def validate_gold(rows: Sequence[dict[str, Any]], cultures: Sequence[str],
                  strict: bool = False, source: str = "gold") -> GoldSet:
    """Check every row; rows naming a culture the run does not have are skipped
    and counted (an error with `strict`). Missing fields, non-numeric or
    non-finite scores, self-pairs and duplicate pairs are errors naming the row."""
    known = set(cultures)
    seen: dict[tuple[str, str, str], int] = {}
    pairs, skipped = [], defaultdict(int)
    for i, row in enumerate(rows):
        where = f"{source}: row {i + 1}"
        for f in ("culture_a", "culture_b", "score"):
            if row.get(f) in (None, ""):
                raise GoldError(f"{where}: field {f!r} is missing or empty")
        a, b = str(row["culture_a"]).strip(), str(row["culture_b"]).strip()
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            raise GoldError(f"{where}: field 'score' is not a number: {row['score']!r}") from None
        if not math.isfinite(score):
            raise GoldError(f"{where}: field 'score' is not finite: {row['score']!r}")
        theme = str(row.get("theme") or GENERAL).strip() or GENERAL
        if a == b:
            raise GoldError(f"{where}: culture_a and culture_b are both {a!r}")
        unknown = [c for c in (a, b) if c not in known]
        if unknown:
            if strict:
                raise GoldError(f"{where}: unknown culture(s) {unknown} (the run has "
                                f"{len(known)} cultures)")
            skipped[f"unknown culture {unknown[0]!r}"] += 1
            continue
        a, b = sorted((a, b))
        key = (a, b, theme)
        if key in seen:
            raise GoldError(f"{where}: duplicate pair ({a}, {b}, theme {theme}) "
                            f"(first at row {seen[key]})")
        seen[key] = i + 1
        pairs.append((a, b, score, theme))
    if not pairs:
        raise GoldError(f"{source}: no usable gold pairs (skipped: {dict(skipped) or 'none'})")
    return GoldSet(pairs, dict(skipped))


# ---------------------------------------------------------------- metrics
def rank_correlations(gold: Sequence[float], pred: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b); NaN when either side is constant."""
    from scipy import stats

    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(g) < 2 or np.ptp(g) == 0 or np.ptp(p) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(g, p).statistic), float(stats.kendalltau(g, p).statistic)


def _partners(pairs: Sequence[tuple[str, str, float]],
              pred: dict[tuple[str, str], float]) -> dict[str, list[tuple[str, float, float]]]:
    out: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for a, b, g in pairs:
        p = pred[(a, b)]
        out[a].append((b, g, p))
        out[b].append((a, g, p))
    return out


def recall_at_k(pairs: Sequence[tuple[str, str, float]], pred: dict[tuple[str, str], float],
                k: int) -> float:
    vals = []
    for items in _partners(pairs, pred).values():
        kk = min(k, len(items))
        rel = {c for c, _, _ in sorted(items, key=lambda t: (-t[1], t[0]))[:kk]}
        got = {c for c, _, _ in sorted(items, key=lambda t: (-t[2], t[0]))[:kk]}
        vals.append(len(rel & got) / kk)
    return float(np.mean(vals))


def ndcg_at_k(pairs: Sequence[tuple[str, str, float]], pred: dict[tuple[str, str], float],
              k: int) -> float:
    vals = []
    for items in _partners(pairs, pred).values():
        gains = [g for _, g, _ in sorted(items, key=lambda t: (-t[2], t[0]))][:k]
        ideal = sorted((g for _, g, _ in items), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        if idcg > 0:
            vals.append(sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / idcg)
    return float(np.mean(vals)) if vals else float("nan")


def score_method(pairs: Sequence[tuple[str, str, float]], pred: dict[tuple[str, str], float],
                 k: int) -> dict[str, float]:
    rho, tau = rank_correlations([g for _, _, g in pairs], [pred[(a, b)] for a, b, _ in pairs])
    return {"spearman": rho, "kendall": tau, f"recall@{k}": recall_at_k(pairs, pred, k),
            f"ndcg@{k}": ndcg_at_k(pairs, pred, k), "pairs": len(pairs)}


# ---------------------------------------------------------------- methods
Vectors = tuple[list[str], np.ndarray]  # cultures, (C, d)


def matrix_scores(vectors: Vectors, sim: Callable[[Any, Any], Any],
                  pairs: Sequence[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    import torch

    cultures, x = vectors
    pos = {c: i for i, c in enumerate(cultures)}
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    m = sim(t, t).double().numpy()
    return {(a, b): float(m[pos[a], pos[b]]) for a, b, _ in pairs}


def learned_cv_scores(vectors: Vectors, pairs: Sequence[tuple[str, str, float]],
                      folds: int = 5, seed: int = 0) -> dict[tuple[str, str], float]:
    """Each pair scored by a LearnedSimilarity fitted on the other folds' gold pairs."""
    import torch

    from culturesim_ray.ops.learned import LearnedSimilarity

    cultures, x = vectors
    pos = {c: i for i, c in enumerate(cultures)}
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    order = np.random.default_rng(seed).permutation(len(pairs))
    lo, hi = min(s for *_, s in pairs), max(s for *_, s in pairs)
    out = {}
    for f in range(min(folds, len(pairs))):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        a = t[[pos[pairs[i][0]] for i in train]]
        b = t[[pos[pairs[i][1]] for i in train]]
        y = torch.tensor([(pairs[i][2] - lo) / ((hi - lo) or 1.0) for i in train])
        model = LearnedSimilarity(seed=seed).fit(a, b, y)
        ta = t[[pos[pairs[i][0]] for i in test]]
        tb = t[[pos[pairs[i][1]] for i in test]]
        for i, s in zip(test, model.pairwise(ta, tb).tolist(), strict=True):
            out[(pairs[i][0], pairs[i][1])] = float(s)
    return out


@dataclass
class Method:
    name: str
    kind: str  # "model", "baseline", "similarity"
    vectors: dict[str, Vectors]  # head -> vectors
    similarity: str = "cosine"


def evaluate(gold: GoldSet, methods: Sequence[Method], k: int = 3,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per (method, theme) with the metrics; themes a method has no
    vectors for are left out (the row says which pairs were scored)."""
    from culturesim_ray.ops import similarity as S

    rows = []
    for m in methods:
        if progress:
            progress(m.name)
        for theme, pairs in sorted(gold.by_theme().items()):
            vec = m.vectors.get(theme)
            if vec is None:
                continue
            have = set(vec[0])
            scored = [p for p in pairs if p[0] in have and p[1] in have]
            if len(scored) < 2:
                continue
            if m.similarity == "learned":
                pred = learned_cv_scores(vec, scored)
            else:
                pred = matrix_scores(vec, S.get(m.similarity), scored)
            rows.append({"method": m.name, "kind": m.kind, "similarity": m.similarity,
                         "theme": theme, **score_method(scored, pred, k)})
    return rows


def similarity_methods(vectors: dict[str, Vectors], label: str) -> list[Method]:
    from culturesim_ray.ops import similarity as S

    return [Method(f"{label} + {name}", "similarity", vectors, name) for name in S.NAMES]


def plot_evaluation(rows: Sequence[dict[str, Any]], path: str | Path, k: int,
                    theme: str = GENERAL) -> Path:
    """Horizontal bars: Spearman and nDCG@k per method for one theme, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["theme"] == theme]
    sel.sort(key=lambda r: (np.nan_to_num(r["spearman"], nan=-2.0)))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(sel) + 1.5))
    y = np.arange(len(sel))
    colors = {"model": "#c0392b", "baseline": "#7f8c8d", "similarity": "#2980b9"}
    ax.barh(y - 0.2, [np.nan_to_num(r["spearman"]) for r in sel], height=0.4,
            color=[colors[r["kind"]] for r in sel])
    ax.barh(y + 0.2, [np.nan_to_num(r[f"ndcg@{k}"]) for r in sel], height=0.4,
            color="#f1c40f")
    ax.set_yticks(y, [r["method"] for r in sel], fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("agreement with the gold pairs")
    ax.set_title(f"Which similarity agrees best with the experts? (theme: {theme})")
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[kind], label=f"Spearman ({kind})")
               for kind in ("model", "baseline", "similarity")
               if any(r["kind"] == kind for r in sel)]
    handles.append(Patch(color="#f1c40f", label=f"nDCG@{k}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: Sequence[dict[str, Any]], k: int) -> str:
    head = f"{'method':<40}{'theme':<12}{'pairs':>6}{'spearman':>10}{'kendall':>9}" \
           f"{f'recall@{k}':>11}{f'ndcg@{k}':>9}"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["theme"], -np.nan_to_num(r["spearman"], nan=-2))):
        lines.append(f"{r['method']:<39} {r['theme']:<12}{r['pairs']:>6}{r['spearman']:>10.3f}"
                     f"{r['kendall']:>9.3f}{r[f'recall@{k}']:>11.3f}{r[f'ndcg@{k}']:>9.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- a run
def _pooled(vectors: np.ndarray, cultures: Sequence[str],
            themes: Sequence[Sequence[str] | None] | None) -> dict[str, Vectors]:
    from culturesim_ray.ops.pooling import pool

    return pool(vectors, cultures, themes, "mean")


def run_methods(run_dir: str | Path, modality: str = "text", tfidf_dim: int = 256,
                log: Callable[[str], None] = print) -> list[Method]:
    """The trained model (RUN/train), the TF-IDF baseline and the raw-embedding
    methods (RUN/embed, `modality`) of a run directory."""
    from culturesim_ray import io, runs

    run = Path(run_dir)
    methods: list[Method] = []
    model_emb = run / "train" / "culture_embeddings.parquet"
    if model_emb.exists():
        methods.append(Method("trained model (heads, cosine)", "model",
                              runs.read_culture_embeddings(model_emb)))
    else:
        log(f"evaluate: no trained model at {model_emb}; model row left out")
    embed = str(run / "embed")
    tables = runs.read_embeddings(embed, modality)
    if modality not in tables:
        raise FileNotFoundError(f"{embed}: no {modality} embeddings to evaluate")
    t = tables[modality]
    col = t.column("vector").combine_chunks()
    x = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(col), -1)
    themes = t.column("themes").to_pylist() if "themes" in t.column_names else None
    raw = _pooled(x, t.column("culture").to_pylist(), themes)
    label = f"mean {runs.embed_manifest(embed)['encoders'][modality]['name']}"
    if modality == "text":
        corpus = runs.embed_manifest(embed).get("corpus")
        if corpus and io.exists(corpus):
            from culturesim_ray.encoders.tfidf import TfidfEncoder

            rows = [r for r in io.read_corpus_rows(corpus)
                    if r.get("modality") == "text" and r.get("text")]
            enc = TfidfEncoder.fit([r["text"] for r in rows], dim=tfidf_dim)
            vec = enc.encode([r["text"] for r in rows]).vectors
            methods.append(Method("TF-IDF (LSA) mean, cosine", "baseline", _pooled(
                vec, [r["culture"] for r in rows], [r.get("themes") for r in rows])))
        else:
            log(f"evaluate: corpus {corpus} not found; TF-IDF baseline left out")
    methods.append(Method(f"{label} (raw baseline), cosine", "baseline", raw, "cosine"))
    methods += [m for m in similarity_methods(raw, label) if m.similarity != "cosine"]
    return methods


def run_evaluation(run_dir: str | Path, gold_path: str | Path, k: int = 3,
                   out: str | Path | None = None, modality: str = "text",
                   strict: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every method of the run against the gold file; writes
    OUT/evaluation.csv, evaluation.json and evaluation.png (default RUN/evaluation)."""
    import csv
    import json

    methods = run_methods(run_dir, modality, log=log)
    cultures = sorted({c for m in methods for v in m.vectors.values() for c in v[0]})
    gold = validate_gold(read_gold_rows(gold_path), cultures, strict, str(gold_path))
    for reason, n in gold.skipped.items():
        log(f"evaluate: skipped {n} gold pair(s): {reason}")
    log(f"evaluate: {len(gold.pairs)} gold pairs, {len(methods)} methods, k={k}")
    done = [0]

    def progress(name: str) -> None:
        done[0] += 1
        log(f"evaluate [{done[0]}/{len(methods)}] {name}")

    rows = evaluate(gold, methods, k, progress)
    out = Path(out) if out else Path(run_dir) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "evaluation.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "evaluation.json").write_text(json.dumps(
        {"gold": str(gold_path), "k": k, "pairs": len(gold.pairs), "skipped": gold.skipped,
         "rows": rows}, indent=2, default=float))
    plot_evaluation(rows, out / "evaluation.png", k)
    table = format_table(rows, k)
    log(table)
    return {"rows": rows, "table": table, "out": str(out), "skipped": gold.skipped}
