"""`culturesim demo`: the demo corpus through every job (embed, all-pairs, train,
all-pairs over the model, evaluation against the demo gold, the report), one
progress bar per stage, then where everything went, each culture's nearest
neighbours by the trained model's culture map, and that map's agreement with the
demo gold beside the raw culture means' (the evaluation's figures)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from culturesim_ray.config import AllPairsConfig, EmbedConfig
from culturesim_ray.progress import Stage

# The demo trains as `culturesim train` does by default (its stages and steps), so
# the model it shows and serves is the one a user's own run gets; --quick is a
# smoke test of every stage
QUICK_TRAIN = {"stages": ((1, 1), (2, 1), (3, 1)), "steps_per_epoch": 2}
QUICK_PER_CULTURE = 4


def run_demo(out: Path, cfg: EmbedConfig, per_culture: int, address: str | None = None,
             quick: bool = False) -> int:
    """Run the demo into `out`; 0 when the embed run is balanced, else 1."""
    from culturesim_ray.demo import build_demo_corpus
    from culturesim_ray.layout import RunLayout
    from culturesim_ray.pipeline.allpairs import run_allpairs
    from culturesim_ray.pipeline.embed import run_embed
    from culturesim_ray.pipeline.train import run_train
    from culturesim_ray.report.build import build_report
    from culturesim_ray.report.evaluate import run_evaluation
    from culturesim_ray.report.gold import culture_attributes, demo_gold_path

    started = time.time()
    run = RunLayout(str(out))
    with Stage("corpus", unit="files") as st:
        corpus = build_demo_corpus(out / "corpus", per_culture_per_lang=min(
            per_culture, QUICK_PER_CULTURE) if quick else per_culture)
        st.log(f"demo corpus: {corpus}")
    with Stage("embed", unit="rows") as st:
        report = run_embed(str(corpus), run.embed.root, cfg, address=address, log=st.log)
    with Stage("all-pairs", unit="blocks") as st:
        run_allpairs(run.embed.root, run.allpairs.root, AllPairsConfig(k=5), log=st.log)
    with Stage("train", unit="steps") as st:
        run_train(run.embed.root, run.train.root, log=st.log,
                  **(QUICK_TRAIN if quick else {}))
    with Stage("all-pairs model", unit="blocks") as st:
        run_allpairs(run.train.culture_embeddings, run.allpairs_model.root,  # a new model:
                     AllPairsConfig(k=5), log=st.log, overwrite=True)  # never its old blocks
    with (out / "culture_attributes.csv").open("w", newline="", encoding="utf-8") as fh:
        rows = culture_attributes()
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with Stage("evaluate", unit="methods") as st:
        run_evaluation(str(out), str(demo_gold_path()), k=3, log=st.log,
                       **({"n_boot": 100, "n_perm": 99} if quick else {}))
    with Stage("report", unit="figures") as st:
        report_out = build_report(str(out), color_by="region", log=st.log)
    print(f"\ndemo finished in {time.time() - started:.0f} s. outputs:")
    print(f"  corpus       {corpus}")
    print(f"  embeddings   {run.embed.embeddings()}  ({report.embedded} items)")
    print(f"  quarantine   {run.embed.quarantine}  ({report.quarantined} rows)")
    print(f"  all-pairs    {run.allpairs.pairs}  (top-5 per culture and theme)")
    print(f"  model        {run.train.model}  (staged MoCo fusion model)")
    print(f"  model pairs  {run.allpairs_model.pairs}  (the model's heads)")
    print(f"  evaluation   {out / 'evaluation' / 'evaluation.csv'}  (vs the demo gold set)")
    print(f"  report       {report_out['html']}")
    print(f"  serve it     culturesim serve {out}")
    print_top(Path(run.allpairs_model.pairs))
    print_agreement(out / "evaluation" / "evaluation.csv")
    return 0 if report.balanced else 1


def top_lines(path: Path, k: int = 3) -> tuple[str, list[str]]:
    """(the similarity named in the pairs, one line per culture: its k nearest by
    the general head) of an all-pairs output's pairs.parquet."""
    import pyarrow.parquet as pq

    # only the general head's first k ranks leave Arrow (C * k rows, not every pair)
    general = pq.read_table(path, filters=[("theme", "=", "general"),
                                           ("rank", "<=", k)]).to_pylist()
    by_a: dict[str, list[str]] = {}
    for r in general:
        by_a.setdefault(r["culture_a"], []).append(f"{r['culture_b']} {r['score']:.3f}")
    sims = sorted({r["similarity"] for r in general})
    return ", ".join(sims), [f"  {a:<10} {', '.join(by_a[a])}" for a in sorted(by_a)]


def print_top(path: Path) -> None:
    """Each culture's 3 nearest by the trained model's culture map (general head)."""
    sim, lines = top_lines(path)
    print(f"\nnearest cultures (the trained model's culture map, general head; {sim}):")
    print("\n".join(lines))


def agreement_line(path: Path) -> str | None:
    """The model's and the raw baseline's Spearman with the demo gold (general head,
    95% bootstrap intervals) from evaluation.csv; None when either row is missing."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["theme"] == "general"]
    model = next((r for r in rows if r["kind"] == "model"), None)
    raw = next((r for r in rows if r["vs"] and r["method"] == r["vs"]), None)
    if model is None or raw is None:
        return None

    def rho(r: dict[str, str]) -> str:
        return (f"{float(r['spearman']):.3f} [{float(r['spearman_lo']):.2f}, "
                f"{float(r['spearman_hi']):.2f}]")

    return (f"agreement with the demo gold (Spearman [95% CI over cultures]): model "
            f"{rho(model)}, raw culture means {rho(raw)}")


def print_agreement(path: Path) -> None:
    line = agreement_line(path) if path.exists() else None
    if line:
        print(line)
