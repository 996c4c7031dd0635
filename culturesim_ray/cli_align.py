"""`culturesim align`: the argparse definition and handler (cli.py calls
`add_align_parser`), and `run_align`, the whole job in one plain process: it is
CPU-seconds of training once the features are computed (the frozen encoders'
forward passes are most of its time: ~1,900 packaged images, a few minutes on
a 2-core machine).

    culturesim align --out runs/align                  # the packaged Twemoji pairs
    culturesim align --out runs/align --pairs P.csv    # uri,caption rows of your own
    culturesim embed CORPUS --out DIR --image-align runs/align
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from culturesim_ray import tables


def add_align_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="train a projection of image features into the text "
                       "encoder's space (contrastive, CLIP-like); embed with --image-align DIR")
    p.add_argument("--out", required=True, help="directory for align.pt + align.json")
    p.add_argument("--pairs", help="table (CSV/TSV/XLSX/JSONL/Parquet) of uri,caption (default: the packaged "
                   "Twemoji images with their Unicode names, plus the project's flags)")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--batch", type=int, default=256, help="pairs per step")
    p.add_argument("--hidden", type=int, default=0, help="0: a linear map; >0: two layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu", action="store_true", help="encode the pairs on a GPU when present")
    p.set_defaults(func=cmd_align)


PAIR_FIELDS = frozenset({"uri", "caption"})


def read_pairs(path: str) -> list[tuple[str, str]]:
    """(uri, caption) rows of a table with columns uri, caption, read as the corpus
    reader reads tables (Parquet, JSONL, or CSV/TSV with any of its delimiters); a
    relative local uri is taken from the file's folder. Rows with an empty uri or
    caption are a ValueError naming the first."""
    rows = tables.read_corpus_rows(path, fields=PAIR_FIELDS)
    columns = {c for r in rows for c in r}
    missing = {"uri", "caption"} - columns
    if missing:
        raise ValueError(f"{path}: pairs need the columns uri, caption (missing "
                         f"{', '.join(sorted(missing))})")
    out = []
    for row in rows:
        uri, cap = row.get("uri"), row.get("caption")
        if not uri or cap is None or not str(cap).strip():
            raise ValueError(f"{row['_source_row']}: empty uri or caption")
        out.append((str(uri), str(cap).strip()))
    if len(out) < 2:
        raise ValueError(f"{path}: {len(out)} pair(s); an alignment needs at least 2")
    return out


def run_align(out: str, pairs_path: str | None = None, cfg: Any = None, use_gpu: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Encode the pairs with the frozen encoders, fit the projection, write it to
    `out`; returns the metadata written into align.json."""
    from culturesim_ray import io
    from culturesim_ray.encoders import pick_device, registry
    from culturesim_ray.encoders.align import AlignConfig, save_alignment, train_alignment
    from culturesim_ray.encoders.align_data import (
        PACKAGED,
        packaged_pairs,
        pair_features,
    )

    io.require_local(out, "align --out", "`embed --image-align` loads the projection from there")
    cfg = cfg or AlignConfig()
    pairs = read_pairs(pairs_path) if pairs_path else packaged_pairs()
    log(f"{len(pairs)} image-caption pairs from {pairs_path or PACKAGED}")
    device = pick_device(use_gpu)
    started = time.time()
    image = registry.build_encoder(cfg.image_encoder, device=device)
    text = registry.build_encoder(cfg.text_encoder, device=device)
    feats, texts, kept = pair_features(pairs, image, text, log=log)
    encoded = time.time() - started
    model, losses = train_alignment(feats, texts, cfg)
    meta = {"pairs": len(kept), "source": pairs_path or PACKAGED,
            "loss_first": losses[0], "loss_last": losses[-1],
            "temperature": float(1.0 / model.logit_scale.exp().clamp(max=100.0)),
            "encode_seconds": round(encoded, 1),
            "train_seconds": round(time.time() - started - encoded, 1)}
    save_alignment(model, out, meta)
    return meta


def cmd_align(args: argparse.Namespace) -> int:
    from culturesim_ray.encoders.align import AlignConfig
    from culturesim_ray.progress import Stage

    cfg = AlignConfig(steps=args.steps, lr=args.lr, batch=args.batch, hidden=args.hidden,
                      seed=args.seed)
    with Stage("align", unit="pairs") as st:
        meta = run_align(args.out, args.pairs, cfg, args.gpu, log=st.log)
    print(f"align: {meta['pairs']} pairs, loss {meta['loss_first']:.3f} -> "
          f"{meta['loss_last']:.3f}, temperature {meta['temperature']:.3f} -> {args.out}")
    return 0
