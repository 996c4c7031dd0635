"""`culturesim train`: the argparse definition and handler (cli.py calls
`add_train_parser`; kept apart so cli.py stays under 400 lines)."""

from __future__ import annotations

import argparse
from typing import Any

from culturesim_ray.config import load_yaml
from culturesim_ray.progress import Stage, summary


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="staged MoCo training of the fusion model on Ray Train")
    p.add_argument("embed_dir", help="an embed run directory")
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="YAML file with TrainConfig fields (flags override it); "
                                     "see jobs/configs/train.yaml")
    p.add_argument("--workers", type=int, help="Ray Train workers (default 2)")
    p.add_argument("--cpus-per-worker", type=float,
                   help="CPUs each worker reserves (default 1; torch uses that many threads)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--stage-epochs", type=int, nargs=3, metavar="N",
                   help="epochs of stages 1, 2, 3 (default 4 3 3)")
    p.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default 10)")
    p.add_argument("--hidden", type=int, help="hidden size (default 128)")
    p.add_argument("--out-dim", type=int, help="projection size (default 64)")
    p.add_argument("--queue-size", type=int, help="MoCo queue length (default 256)")
    p.add_argument("--batch-cultures", type=int,
                   help="culture slots per worker and step (default 64)")
    p.add_argument("--items-per-culture", type=int,
                   help="seed items per culture in a batch (default 32)")
    p.add_argument("--fanouts", type=int, nargs="+", metavar="F",
                   help="neighbours sampled per node and hop (default 10 5; -1 = all)")
    p.add_argument("--graph", choices=["homo", "hetero"],
                   help="homo (default): one GNN per modality; hetero: one graph with a node "
                        "type per modality and cross-modal edges (artifact_id, --relations)")
    p.add_argument("--relations", help="relations table (CSV/TSV/XLSX/JSONL/Parquet: src_item, dst_item"
                                       "[, relation]); bad rows go to relations_quarantine.jsonl")
    p.add_argument("--raw-weight", type=float,
                   help="weight of the raw culture means in the general embedding "
                        "(default 0.9; 0: learned only)")
    p.add_argument("--map-learned", type=float, help="culture vs culture (evaluate, allpairs): "
                   "the learned part's share of its trained weight, with --map-learned-share 0 "
                   "(default 0.1; 1: as trained)")
    p.add_argument("--map-learned-share", type=float, help="culture vs culture (evaluate, "
                   "allpairs): the learned part weighted so that its spread over culture "
                   "pairs is this share of the raw means' (default 0.05; 0: --map-learned)")
    p.add_argument("--map-whiten", type=float, help="culture vs culture (evaluate, allpairs): "
                   "raw means read in their within-culture-whitened geometry, shrunk towards "
                   "the plain cosine by this factor (default 30; 0: the plain cosine)")
    p.add_argument("--holdout", type=float,
                   help="share of each culture's items never trained on (default 0.2; ids in "
                        "OUT/holdout.parquet)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.train import run_train
    from culturesim_ray.training.config import merge_train_config

    flags: dict[str, Any] = {
        "num_workers": args.workers, "use_gpu": args.gpu or None,
        "steps_per_epoch": args.steps_per_epoch, "hidden": args.hidden, "out_dim": args.out_dim,
        "queue_size": args.queue_size, "graph": args.graph, "raw_weight": args.raw_weight,
        "map_learned": args.map_learned, "map_whiten": args.map_whiten,
        "map_learned_share": args.map_learned_share,
        "holdout": args.holdout,
        "batch_cultures": args.batch_cultures,
        "items_per_culture": args.items_per_culture, "fanouts": args.fanouts}
    if args.stage_epochs is not None:
        if len(args.stage_epochs) != 3 or any(e < 1 for e in args.stage_epochs):
            raise ValueError("--stage-epochs takes three positive numbers (stages 1, 2, 3)")
        flags["stages"] = [(i + 1, e) for i, e in enumerate(args.stage_epochs)]
    if args.cpus_per_worker is not None:
        flags["cpus_per_worker"] = args.cpus_per_worker
    if args.relations is not None:
        flags["relations"] = args.relations
    cfg = merge_train_config(load_yaml(args.config) if args.config else None, flags)
    with Stage("train", unit="steps") as st:
        m = run_train(args.embed_dir, args.out, cfg, log=st.log)
    summary(f"{m['counts']['steps']} steps over {m['counts']['cultures']} cultures "
             f"-> {args.out}", st)
    for note in m.get("notes", []):  # what the user should know about this corpus
        print(f"train: note: {note}")
    return 0
