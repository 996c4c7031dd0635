"""`culturesim report`, `culturesim evaluate` and `culturesim fit-metric`: their
argparse definitions and handlers (cli.py calls `add_report_parsers` where they stand in the command list)."""

from __future__ import annotations

import argparse
from pathlib import Path

GOLD_KIND_HELP = ("distance: bigger gold score = less similar (negated before scoring); "
                  "default: distance when the score column is named 'distance' or a square "
                  "matrix has a zero diagonal, else similarity")


def add_report_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="PNG figures and an HTML report of a run")
    p.add_argument("run_dir", help="a run directory (or an all-pairs output directory)")
    p.add_argument("--out", help="default RUN_DIR/report")
    p.add_argument("--color-by", default="region", help="attribute column to colour maps by")
    p.add_argument("--attributes", help="table (CSV/TSV/XLSX/JSONL/Parquet): culture + attribute columns "
                                        "(default RUN_DIR/culture_attributes.csv)")
    p.add_argument("-k", type=int, default=3, help="neighbours per culture in network/tables")
    p.add_argument("--max-cultures", type=int, default=1000,
                   help="above this many cultures the report shows a selection: cultures that "
                        "stand for the map's regions and their k nearest neighbours")
    p.add_argument("--cultures", help="show these cultures and their k nearest neighbours: "
                                      "names separated by commas, or a text file of one "
                                      "name per line")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="agreement of the model, baselines and every "
                                        "similarity function with gold pairs")
    p.add_argument("run_dir", help="a run directory with embed/ (and train/)")
    p.add_argument("--gold", required=True,
                   help="table (CSV/TSV/XLSX/JSONL/Parquet) of culture_a, culture_b, score[, theme]; "
                        "'demo' = the shipped demo gold set")
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--out", help="default RUN_DIR/evaluation")
    p.add_argument("--modality", choices=["text", "image", "sequence"],
                   help="the items whose raw culture means are the baselines (default: the "
                        "modality that covers the most cultures, text on a tie)")
    p.add_argument("--strict", action="store_true",
                   help="gold pairs naming unknown cultures are an error, not skipped")
    p.add_argument("--gold-kind", choices=["similarity", "distance"], help=GOLD_KIND_HELP)
    p.add_argument("--metric", action="append", default=[], metavar="FILE",
                   help="a metric of `culturesim fit-metric` (fitted on another run's gold), "
                        "scored as one more row; repeatable")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("fit-metric", help="fit a per-dimension metric of the raw culture "
                                          "means on a run's gold, for `evaluate --metric` "
                                          "and `allpairs --metric`")
    p.add_argument("run_dir", help="a run directory with embed/")
    p.add_argument("--gold", required=True, help="as for evaluate ('demo' = the demo gold)")
    p.add_argument("--gold-kind", choices=["similarity", "distance"], help=GOLD_KIND_HELP)
    p.add_argument("--modality", default="text", choices=["text", "image", "sequence"],
                   help="the items whose culture means it weights (default text)")
    p.add_argument("--b", type=float, default=0.5,
                   help="weight of the metric beside the cosine: z(cos) + b z(metric)")
    p.add_argument("--out", required=True, help="the metric file (JSON) to write")
    p.set_defaults(func=cmd_fit_metric)


def culture_list(value: str) -> list[str]:
    """`--cultures`: a text file of one name per line (blank lines skipped), else names
    separated by commas."""
    from pathlib import Path

    path = Path(value)
    lines = (path.read_text(encoding="utf-8-sig").splitlines() if path.is_file()
             else value.split(","))
    names = [n.strip() for n in lines if n.strip()]
    if not names:
        raise ValueError(f"--cultures {value!r} names no culture")
    return names


def cmd_report(args: argparse.Namespace) -> int:
    from culturesim_ray.progress import Stage, summary
    from culturesim_ray.report.build import build_report

    with Stage("report", unit="figures") as st:
        res = build_report(args.run_dir, args.out, color_by=args.color_by,
                           attributes=args.attributes, k=args.k, log=st.log,
                           max_cultures=args.max_cultures,
                           cultures=culture_list(args.cultures) if args.cultures else None)
    for line in res["notes"]:  # which cultures the page shows: always said
        print(line)
    summary(f"report {res['html']}", st)
    return 0


def _gold_path(gold: str) -> str:
    if gold == "demo":
        from culturesim_ray.report.gold import demo_gold_path

        return str(demo_gold_path())
    return gold


def cmd_evaluate(args: argparse.Namespace) -> int:
    from culturesim_ray.progress import Stage, summary
    from culturesim_ray.report.evaluate import run_evaluation

    with Stage("evaluate", unit="methods") as st:
        res = run_evaluation(args.run_dir, _gold_path(args.gold), k=args.k, out=args.out,
                             modality=args.modality, strict=args.strict,
                             gold_kind=args.gold_kind, log=st.log, metrics=args.metric)
    for reason, n in res["skipped"].items():  # the answer, not progress: always shown
        print(f"evaluate: skipped {n} gold pair(s): {reason}")
    print(res["table"])
    for line in res["notes"]:
        print(line)
    summary(f"evaluation in {args.out or Path(args.run_dir) / 'evaluation'}", st)
    return 0


def cmd_fit_metric(args: argparse.Namespace) -> int:
    from culturesim_ray.report.metric_file import fit_metric

    fit_metric(args.run_dir, _gold_path(args.gold), args.out, gold_kind=args.gold_kind,
               modality=args.modality, b=args.b)
    return 0
