"""Truth: does the trained model's culture map agree with independent gold better
than the simple read-outs, and does the service answer obvious queries?

For the demo corpus and each dev set of `benchmarks/devsets.py` (countries-wiki:
geography gold from countryinfo; languages-wiki: URIEL language distance;
folk-music: melodies only, geography gold; mixed-modal: the demo and the three
sets in one corpus, uneven modalities, geography gold), the project's own
commands run with default settings, as a user would:

    culturesim embed CORPUS --out RUN/embed
    culturesim train RUN/embed --out RUN/train          (holds out 20% of the items)
    culturesim evaluate RUN --gold GOLD --gold-kind K [--modality sequence]
                                                        (bootstrap CIs, Mantel p)

and one table compares, per set, Spearman with the gold (95% bootstrap interval
over cultures): the raw culture means (cosine), TF-IDF, the best S1 similarity
on the raw means, every set-level read-out on the raw items (`ops.setsim`), the
learned similarity and the per-dimension metric of `culturesim fit-metric`
(leave-cultures-out CV: fitted on gold, so not defaults),
and the trained model's general head (its default read-out: `culturesim
evaluate`'s model row, the run's culture map: the modality cosine with the learned
part at `map_learned`), with
margin = model - max(raw cosine, TF-IDF), and model - raw cosine with its paired
95% interval (`stats.bootstrap_difference`: the same culture resamples score
both, so the interval says whether a margin can be read). Also per set: held-out item ->
culture retrieval (top-1/3/5) of the items `culturesim train` never trained
on, through the model's query path (as the service answers) against the raw
nearest culture mean, both over the training items only, with model - raw and
its paired 95% interval over the items; the same for short queries, the page
titles of the held-out text items (the sanity suite's kind of query, hundreds of
them, written by no one on this team); and the theme gate on the held-out items
(their likeliest theme against the majority theme).

On the demo run the sanity suite (`benchmarks/sanity.py`: obvious text
queries, 5 per demo culture) is answered through the real service over HTTP and
by the raw culture means. Last, `benchmarks/transfer.py` on the runs: a text
metric fitted on one set's gold (and on all the others, pooled), scored on the
sets that share no culture with it (not the model: an opt-in evaluation row).

    python benchmarks/truth.py [--quick] [--json PATH] [--out DIR] [--sets demo,countries-wiki]

--quick: fewer items per culture (demo 10 per language, dev sets 30; else 60,
mixed-modal 40), same
training defaults. The full run (five sets, the sanity suite) takes about 25 min on 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from held_out import held_out_gate, held_out_retrieval, held_out_titles  # noqa: E402

SETS = ("demo", "countries-wiki", "languages-wiki", "folk-music", "mixed-modal")
CLI = [str(Path(sys.executable).parent / "culturesim")]


def sh(args: list[str], log: Path) -> None:
    """Run one project command; its output goes to `log`; a failure names the command."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    with log.open("w") as fh:
        rc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, env=env,
                            timeout=3600).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(args[1:3])} failed (rc {rc}); log {log}:\n" + "\n".join(tail))


def build_set(name: str, out: Path, quick: bool) -> dict[str, Any]:
    if name == "demo":
        from culturesim_ray.demo import build_demo_corpus
        from culturesim_ray.report.gold import demo_gold_path

        corpus = build_demo_corpus(out / "corpus", per_culture_per_lang=10 if quick else 20,
                                   tunes_per_culture=10 if quick else 20)
        return {"corpus": str(corpus), "gold": str(demo_gold_path()), "gold_kind": "similarity",
                "modality": "text"}
    import devsets

    per = 30 if quick else 40 if name == "mixed-modal" else 60  # mixed: 4 corpora in one
    return devsets.build(name, out / "corpus", max_per_culture=per)


def pick(rows: list[dict[str, Any]], theme: str = "general") -> dict[str, Any]:
    """The table's read-outs from evaluation.json rows (general theme)."""
    rows = [r for r in rows if r["theme"] == theme]

    def cell(r: dict[str, Any]) -> dict[str, Any]:
        vs_raw = ({"minus_raw": r["delta_spearman"], "minus_raw_lo": r["delta_lo"],
                   "minus_raw_hi": r["delta_hi"]} if "delta_spearman" in r else {})
        return {"method": r["method"], "spearman": r["spearman"], "lo": r["spearman_lo"],
                "hi": r["spearman_hi"], "mantel_p": r["mantel_p"], **vs_raw}

    out: dict[str, Any] = {}
    model = [r for r in rows if r["kind"] == "model"]
    raw = [r for r in rows if r["kind"] == "baseline" and "raw baseline" in r["method"]]
    tfidf = [r for r in rows if r["kind"] == "baseline" and r["method"].startswith("TF-IDF")]
    s1 = [r for r in rows if r["kind"] == "similarity" and not r.get("cv")]  # not fitted on gold
    learned = [r for r in rows if r.get("cv") == "cultures" and r["similarity"] == "learned"]
    metric = [r for r in rows
              if r.get("cv") == "cultures" and r["similarity"] == "dimension_metric"]
    if model:
        out["model"] = cell(model[0])
    if raw:
        out["raw_cosine"] = cell(raw[0])
    if tfidf:
        out["tfidf"] = cell(tfidf[0])
    if s1:
        out["best_s1"] = cell(max(s1 + raw, key=lambda r: r["spearman"]))
    if learned:
        out["learned_lco"] = cell(learned[0])
    if metric:
        out["metric_lco"] = cell(metric[0])
    for r in rows:
        if r["kind"] in ("set", "readout"):
            out[r["similarity"]] = cell(r)
    if "model" in out:
        base = max(out.get("raw_cosine", {}).get("spearman", -1.0),
                   out.get("tfidf", {}).get("spearman", -1.0))
        out["margin"] = out["model"]["spearman"] - base
        if "delta_spearman" in model[0]:  # paired: the same culture resamples score both
            out["model_minus_raw"] = {"delta": model[0]["delta_spearman"],
                                      "lo": model[0]["delta_lo"], "hi": model[0]["delta_hi"]}
    return out


def run_set(name: str, root: Path, quick: bool, log: Any) -> dict[str, Any]:
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    spec = build_set(name, run, quick)
    log(f"[{name}] corpus {spec['corpus']}")
    sh(CLI + ["embed", spec["corpus"], "--out", str(run / "embed")], run / "embed.log")
    log(f"[{name}] embedded ({time.time() - t0:.0f} s)")
    sh(CLI + ["train", str(run / "embed"), "--out", str(run / "train")], run / "train.log")
    log(f"[{name}] trained ({time.time() - t0:.0f} s)")
    modality = spec.get("modality", "text")  # the modality the raw baseline reads
    sh(CLI + ["evaluate", str(run), "--gold", spec["gold"], "--gold-kind", spec["gold_kind"],
              "--modality", modality], run / "evaluate.log")
    rows = json.loads((run / "evaluation" / "evaluation.json").read_text())["rows"]
    res = {"gold_kind": spec["gold_kind"], "modality": modality, "readouts": pick(rows),
           "retrieval": held_out_retrieval(run, modality), "titles": held_out_titles(run),
           "gate": held_out_gate(run),
           "seconds": time.time() - t0}
    log(f"[{name}] evaluated ({res['seconds']:.0f} s)")
    return res


def fmt(c: dict[str, Any] | None) -> str:
    if not c:
        return f"{'-':>22}"
    return f"{c['spearman']:>7.3f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def fmt_delta(d: dict[str, float] | None) -> str:
    if not d:
        return f"{'-':>22}"
    return f"{d['delta']:>+7.3f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def fmt_rate_delta(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return f"{d['delta']:+.3f} [{d['delta_lo']:+.3f}, {d['delta_hi']:+.3f}]"


def print_table(res: dict[str, Any]) -> None:
    sets = list(res["sets"])
    names = ["raw_cosine", "tfidf", "best_s1"] + \
        sorted({k for s in sets for k in res["sets"][s]["readouts"]
                if k.startswith(("set:", "readout:"))}) + \
        ["learned_lco", "metric_lco", "model"]
    print("\nSpearman with the gold [95% bootstrap CI over cultures]")
    print(f"{'read-out':<28}" + "".join(f"{s:>24}" for s in sets))
    for n in names:
        print(f"{n:<28}" + "".join(f"{fmt(res['sets'][s]['readouts'].get(n)):>24}" for s in sets))
    print(f"{'margin (model - max raw/tfidf)':<28}" +
          "".join(f"{res['sets'][s]['readouts'].get('margin', float('nan')):>24.3f}" for s in sets))
    print(f"{'model - raw [paired 95% CI]':<28}" + "".join(
        f"{fmt_delta(res['sets'][s]['readouts'].get('model_minus_raw')):>24}" for s in sets))
    print(f"{'best S1 is':<28}" + "".join(
        f"{res['sets'][s]['readouts'].get('best_s1', {}).get('method', '-')[-22:]:>24}"
        for s in sets))
    for key, title in (("retrieval", "held-out item -> culture (items training never saw; "
                                     "the set's modality)"),
                       ("titles", "short queries: held-out text items' page titles -> culture")):
        print(f"\n{title}")
        print(f"{'set':<18}{'items':>6}{'model top1':>12}{'raw top1':>10}{'model top3':>12}"
              f"{'raw top3':>10}{'model top5':>12}{'raw top5':>10}"
              f"{'top1 model-raw [paired CI]':>30}{'top3 model-raw [paired CI]':>30}")
        for s in sets:
            r = res["sets"][s].get(key)
            if r and "model_top1" in r:
                print(f"{s:<18}{r['items']:>6}" + "".join(
                    f"{r[f'{m}_top{k}']:>{12 if m == 'model' else 10}.3f}"
                    for k in (1, 3, 5) for m in ("model", "raw")) + "".join(
                    f"{fmt_rate_delta(r.get(f'model_minus_raw_top{k}')):>30}" for k in (1, 3)))
    print("\nheld-out item -> its theme (the gate's likeliest theme; every modality)")
    print(f"{'set':<18}{'themes':>7}{'items':>6}{'gate':>8}{'majority':>10}")
    for s in sets:
        g = res["sets"][s].get("gate")
        if g:
            print(f"{s:<18}{g['themes']:>7}{g['items']:>6}{g['accuracy']:>8.3f}"
                  f"{g['majority']:>10.3f}")
    if res.get("transfer"):
        print("\na text metric fitted on other sets' gold, scored on sets that share no "
              "culture with it (benchmarks/transfer.py; not the model: an opt-in row of "
              "`evaluate --metric`), b = 0.5")
        print(f"{'fitted on -> scored on':52s}{'raw':>7s}{'blend':>8s}   blend - raw [paired CI]")
        for r in res["transfer"]:
            c = r["b"]["0.5"]
            print(f"{r['fitted_on'] + ' -> ' + r['scored_on']:52s}{r['raw']:7.3f}"
                  f"{c['spearman']:8.3f}   {c['delta']:+.3f} [{c['delta_lo']:+.3f}, "
                  f"{c['delta_hi']:+.3f}]")
    if res.get("sanity"):
        m = res["sanity"]["methods"]
        print(f"\nsanity queries through the service ({m['served']['n']} queries, demo run)")
        print(f"{'method':<24}{'top-1':>8}{'top-3':>8}")
        for k, label in (("served", "served model (HTTP)"), ("raw", "raw culture means")):
            print(f"{label:<24}{m[k]['top1']:>8.3f}{m[k]['top3']:>8.3f}")
        for k, d in res["sanity"].get("served_minus_raw", {}).items():
            print(f"served - raw, {k}: {fmt_rate_delta(d)} (paired 95% CI over the queries)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--out", help="where the runs go (default: a temporary directory)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--via", default="http", choices=["http", "inprocess"],
                    help="how the sanity suite reaches the service")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="csr-truth-"))
    res: dict[str, Any] = {"quick": args.quick, "sets": {}, "out": str(root)}
    for name in args.sets.split(","):
        res["sets"][name] = run_set(name, root, args.quick, lambda m: print(m, flush=True))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, allow_nan=False))
    if "demo" in res["sets"]:
        import sanity

        res["sanity"] = sanity.run_sanity(str(root / "demo"), via=args.via)
    import transfer

    res["transfer"] = transfer.transfer(transfer.load_sets(root, list(res["sets"]), log=print),
                                        (0.5,), perms=20)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
