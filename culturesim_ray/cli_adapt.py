"""`culturesim adapt`: the argparse definition and handler (cli.py calls
`add_adapt_parser`; kept apart so cli.py stays under 400 lines)."""

from __future__ import annotations

import argparse

from culturesim_ray.progress import Stage, summary


def add_adapt_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="continued masked-LM pretraining of the MiniLM text "
                       "encoder on a corpus's texts (Ray Train); embed with --text-model DIR")
    p.add_argument("corpus", help="Parquet/JSONL/CSV/TSV/XLSX file or directory, local or s3://")
    p.add_argument("--out", required=True, help="directory of the adapted encoder (a rerun resumes)")
    p.add_argument("--max-steps", type=int, default=200, help="optimiser steps per worker")
    p.add_argument("--mask-rate", type=float, default=0.15, help="share of tokens masked")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step and worker")
    p.add_argument("--max-length", type=int, default=128, help="tokens per window")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--address", help="Ray address (else RAY_ADDRESS, else a local instance)")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    from culturesim_ray.pipeline.adapt import run_adapt
    from culturesim_ray.training.adapt import AdaptConfig

    cfg = AdaptConfig(max_steps=args.max_steps, mask_rate=args.mask_rate, lr=args.lr,
                      batch_size=args.batch_size, max_length=args.max_length)
    with Stage("adapt", unit="steps") as st:
        meta = run_adapt(args.corpus, args.out, cfg, num_workers=args.workers,
                         use_gpu=args.gpu, address=args.address, log=st.log)
    summary(f"{meta['steps']} MLM steps, loss {meta['loss_first']:.3f} -> "
             f"{meta['loss_last']:.3f} -> {args.out}", st)
    return 0
