"""The flags of `culturesim embed` (and `demo`) and `culturesim allpairs`, shared
with the jobs/ entry points; the README's tables are generated from them
(`culturesim_ray.cli_docs`)."""

from __future__ import annotations

import argparse

from culturesim_ray.encoders import registry


def add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with EmbedConfig fields (flags override it)")
    p.add_argument("--text-encoder", choices=[registry.AUTO, *registry.names("text")],
                   help="auto (default): minilm, or e5 when a fifth or more of a sample of "
                        "the texts is cut by minilm's English vocabulary into characters")
    p.add_argument("--image-encoder", choices=registry.names("image"))
    p.add_argument("--actors", type=int, help="encoder actors in the pool (default 2)")
    p.add_argument("--batch-size", type=int, help="rows per batch (default 64)")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="1 on GPU workers (default 0)")
    p.add_argument("--blocks", type=int, help="input blocks (default 4 per actor)")
    p.add_argument("--max-length", type=int, help="tokens per window of transformer text "
                   "encoders (default 256)")
    p.add_argument("--max-windows", type=int, help="windows MiniLM reads of a longer text, "
                   "pooled (default 16; 1 = cut at --max-length)")
    p.add_argument("--text-model", metavar="DIR", help="adapted MiniLM weights (culturesim adapt)")
    p.add_argument("--image-align", metavar="DIR", help="image -> text alignment (culturesim "
                   "align): image vectors in the text encoder's space")
    p.add_argument("--strict", action="store_true", help="any bad row is an error")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    p.add_argument("--uri-root", action="append", metavar="PATH_OR_S3_PREFIX",
                   help="another place image/sequence uris may point into besides the corpus "
                        "folder (repeatable; adds to the config's uri_roots); uris elsewhere "
                        "are quarantined")
    p.add_argument("--address", help="Ray address (else RAY_ADDRESS, else a local instance)")
    p.add_argument("--overwrite", action="store_true", help="replace vectors that an earlier "
                   "run into --out wrote with other settings (else such a rerun is refused)")


def add_allpairs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with AllPairsConfig fields (flags override it)")
    p.add_argument("--similarity", help="cosine (default), dot, euclidean, l1, ndd, "
                   "log_scaled, hybrid, poincare, per_dim, mahalanobis; set-level (item-level "
                   "input only): mmd, energy, sliced_wasserstein, confusion, centered_cosine")
    p.add_argument("--set-option", nargs="*", metavar="NAME=VALUE",
                   help="options of a set-level similarity, e.g. sigma=0.5 n_proj=64")
    p.add_argument("--set-block", type=int, help="items per tile in set-level similarities "
                   "(default 2048)")
    p.add_argument("-k", type=int, help="neighbours per culture (default 10, lowered to N-1 "
                   "when there are fewer cultures)")
    p.add_argument("--block-rows", type=int, help="rows per Ray task (default 1024)")
    p.add_argument("--pooling", choices=["mean", "median"])
    p.add_argument("--modality", choices=["text", "image", "sequence"])
    p.add_argument("--dense-limit", type=int, help="dense matrices when N <= this (2000)")
    p.add_argument("--prefilter", choices=["off", "on", "auto"])
    p.add_argument("--nlist", type=int)
    p.add_argument("--nprobe", type=int)
    p.add_argument("--alpha", nargs="*", metavar="THEME=W", help="weights of S_total")
    p.add_argument("--heads", nargs="*", help="only these heads")
    p.add_argument("--metric", help="a metric file from `culturesim fit-metric`: the general "
                   "head compared by its blend with the cosine (input: an embed run of the "
                   "metric's encoder)")
    p.add_argument("--s3-endpoint")
    p.add_argument("--address")
    p.add_argument("--overwrite", action="store_true", help="replace blocks that an earlier "
                   "run into --out wrote with other settings (else such a rerun is refused)")
