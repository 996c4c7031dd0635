"""`culturesim add-theme`: the argparse definition and handler (cli.py calls
`add_theme_parser`; kept apart so cli.py stays one screenful per command)."""

from __future__ import annotations

import argparse


def add_theme_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("add-theme", help="train one new theme head on a finished run's frozen "
                       "backbone and export it (every other head stays bit-identical)")
    p.add_argument("run", help="a run directory (RUN/train inside) or a train directory")
    p.add_argument("--theme", required=True, help="the new theme's name")
    p.add_argument("--items", help="file of the theme's item ids (one per line, or the item_id "
                   "column of a CSV/TSV/XLSX/JSONL/Parquet table); default: the items tagged THEME in the corpus")
    p.add_argument("--steps", type=int, default=100, help="training steps of the new head")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu", action="store_true")
    p.set_defaults(func=cmd_add_theme)


def cmd_add_theme(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.add_theme import run_add_theme
    from culturesim_ray.progress import Stage, summary

    with Stage("add-theme", unit="head") as st:
        rec = run_add_theme(args.run, args.theme, args.items, args.steps, args.seed, args.gpu,
                            log=st.log)
    summary(f"head {rec['theme']!r} on {rec['items']} items, {rec['steps']} steps; "
            f"every head exported", st)
    return 0
