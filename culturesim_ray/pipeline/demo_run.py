"""`culturesim demo`: the demo corpus through every job (embed, all-pairs, train,
all-pairs over the model, evaluation against the demo gold, the report)."""

from __future__ import annotations

from pathlib import Path

from culturesim_ray.config import AllPairsConfig, EmbedConfig


def run_demo(out: Path, cfg: EmbedConfig, per_culture: int, address: str | None = None) -> int:
    """Run the demo into `out`; 0 when the embed run is balanced, else 1."""
    from culturesim_ray.demo import build_demo_corpus
    from culturesim_ray.pipeline.embed import run_embed

    corpus = build_demo_corpus(out / "corpus", per_culture_per_lang=per_culture)
    print(f"demo corpus: {corpus}")
    from culturesim_ray.layout import RunLayout
    from culturesim_ray.pipeline.allpairs import run_allpairs
    from culturesim_ray.pipeline.train import run_train

    run = RunLayout(str(out))
    report = run_embed(str(corpus), run.embed.root, cfg, address=address)
    run_allpairs(run.embed.root, run.allpairs.root, AllPairsConfig(k=5))
    run_train(run.embed.root, run.train.root, num_workers=2,
              stages=((1, 2), (2, 2), (3, 2)), steps_per_epoch=5)
    run_allpairs(run.train.culture_embeddings, run.allpairs_model.root, AllPairsConfig(k=5))
    import csv

    from culturesim_ray.report.build import build_report
    from culturesim_ray.report.evaluate import run_evaluation
    from culturesim_ray.report.gold import culture_attributes, demo_gold_path

    with (out / "culture_attributes.csv").open("w", newline="", encoding="utf-8") as fh:
        rows = culture_attributes()
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run_evaluation(str(out), str(demo_gold_path()), k=3)
    report_out = build_report(str(out), color_by="region")
    print("\ndemo finished. outputs:")
    print(f"  corpus       {corpus}")
    print(f"  embeddings   {run.embed.embeddings()}  ({report.embedded} items)")
    print(f"  quarantine   {run.embed.quarantine}  ({report.quarantined} rows)")
    print(f"  manifest     {run.embed.manifest}")
    print(f"  all-pairs    {run.allpairs.pairs}  (top-5 per culture and theme)")
    print(f"  matrices     {run.allpairs.matrices}")
    print(f"  model        {run.train.model}  (staged MoCo fusion model)")
    print(f"  model pairs  {run.allpairs_model.pairs}  (the model's heads)")
    print(f"  evaluation   {out / 'evaluation' / 'evaluation.csv'}  (vs the demo gold set)")
    print(f"  report       {report_out['html']}")
    print(f"  serve it     culturesim serve {out}")
    print_top(Path(run.allpairs.pairs))
    return 0 if report.balanced else 1


def print_top(path: Path) -> None:
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    general = [r for r in rows if r["theme"] == "general" and r["rank"] <= 3]
    print("\nnearest cultures (general, cosine over mean MiniLM text vectors):")
    by_a: dict[str, list[str]] = {}
    for r in general:
        by_a.setdefault(r["culture_a"], []).append(f"{r['culture_b']} {r['score']:.3f}")
    for a in sorted(by_a):
        print(f"  {a:<10} {', '.join(by_a[a])}")
