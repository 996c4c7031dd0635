"""Fusion-model training: Ray Train overhead, queue cost, and retrieval quality.

On the demo corpus (built and embedded here unless --embed-dir is given):
- steps/s of the Ray Train loop (1 worker holding as many CPUs as the plain
  loop has torch threads, `run_train`, start-up included) vs the same
  `training.loop.train` called in process (the one loop), same stages, step
  count and mini-batches;
- the MoCo queues' share of a step's time (enqueue + masks, measured in the
  plain loop);
- held-out item -> culture retrieval (top-1 / top-5): the train job's default
  split (20% of each culture's items, `training.data.split_holdout`) is held out
  of everything the plain loop trains on (graph, views, culture vectors); each
  held-out text item is a query through the model's query path, as the service
  answers it (`held_out.query_retrieval`); baseline = nearest mean of the training
  items' raw embeddings.

Full run: hidden 256, 300 steps (stages 12/9/9 epochs of 10 steps); --quick:
hidden 64, 30 steps. The plain loop trains twice, contrastive only
(relation_weight 0) and with the relational term (the default weight).

    python benchmarks/train.py [--quick] [--json PATH] [--embed-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from culturesim_ray.pipeline.ray_env import set_safe_env  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import query_retrieval, table_queries  # noqa: E402

set_safe_env()


def retrieval(model, data, queries) -> tuple[float, float]:
    """Top-1/top-5 of the held-out text items through the model's query path (as the
    service answers), over the training items' graph and culture vectors."""
    r = query_retrieval(model, data, *queries)
    return r["model_top1"], r["model_top5"]


def raw_retrieval(data, queries) -> tuple[float, float]:
    r = query_retrieval(None, data, *queries, raw_only=True)
    return r["raw_top1"], r["raw_top5"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--embed-dir")
    ap.add_argument("--json")
    args = ap.parse_args()
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.models.queue import MoCoQueue
    from culturesim_ray.pipeline.embed import read_embeddings
    from culturesim_ray.training.batch import store_from_graphs
    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.data import build_training_data, split_holdout
    from culturesim_ray.training.loop import init_training, train
    from culturesim_ray.training.step import StepConfig

    tmp = Path(tempfile.mkdtemp(prefix="csr-bench-"))
    embed_dir = args.embed_dir
    if embed_dir is None:
        from culturesim_ray.demo import build_demo_corpus
        from culturesim_ray.pipeline.embed import run_embed

        corpus = build_demo_corpus(tmp / "corpus", per_culture_per_lang=10 if args.quick else 20,
                                   tunes_per_culture=10)
        embed_dir = str(tmp / "embed")
        run_embed(str(corpus), embed_dir, EmbedConfig(lstm_epochs=5), log=lambda *_: None)
    tables = read_embeddings(embed_dir)
    train_tables, held_tables = split_holdout(tables, 0.2)  # the train job's default split
    full = build_training_data(tables)
    data = build_training_data(train_tables, themes=full.themes)  # nothing held out is seen
    queries = table_queries(held_tables["text"], data.cultures)
    steps_per_epoch = 5 if args.quick else 10
    stages = ((1, 2), (2, 2), (3, 2)) if args.quick else ((1, 12), (2, 9), (3, 9))
    hidden, out_dim = (64, 32) if args.quick else (256, 64)
    mcfg = CultureSimConfig(data.in_dims, data.themes, hidden=hidden, out=out_dim,
                            raw_weight=0.9)  # the train job's default

    # plain loop: the same step, stages and schedule shape; once contrastive only
    # (relation_weight 0) and once with the relational term (the default)
    queue_time = [0.0]
    original = MoCoQueue.enqueue

    def timed_enqueue(self, k, c):
        t = time.perf_counter()
        original(self, k, c)
        queue_time[0] += time.perf_counter() - t

    rows = [("raw embeddings (mean per culture)", *raw_retrieval(data, queries))]

    store = store_from_graphs(data.graphs, data.cultures, data.themes)
    tcfg = merge_train_config({"stages": [list(s) for s in stages],
                               "steps_per_epoch": steps_per_epoch, "hidden": hidden,
                               "out_dim": out_dim, "val_fraction": 0.0})

    def train_plain(scfg: StepConfig, label: str) -> tuple[float, int]:
        """The one training loop (`training.loop.train`, as the Ray workers run it)."""
        model, key, queues, opt = init_training(store, mcfg, tcfg)  # seed 0, stage 1
        spent, last = [0.0], [time.perf_counter()]

        def on_step(_step, _out, _batch) -> None:
            now = time.perf_counter()
            spent[0] += now - last[0]
            last[0] = now

        def on_epoch(pos, metrics) -> None:
            done_stage = pos.epoch == 0  # the epoch just finished closed its stage
            if done_stage:
                rows.append((f"model{label} after stage {metrics['stage']}",
                             *retrieval(model, data, queries)))
            last[0] = time.perf_counter()

        last[0] = time.perf_counter()
        pos = train(model, key, queues, opt, store, replace(tcfg, step=scfg),
                    on_step=on_step, on_epoch=on_epoch)
        return spent[0], pos.step

    train_plain(replace(StepConfig(), relation_weight=0.0), " (contrastive only)")
    queue_time[0] = 0.0
    MoCoQueue.enqueue = timed_enqueue
    t_plain, n_steps = train_plain(StepConfig(), " (+ relational)")
    MoCoQueue.enqueue = original
    plain_steps_per_s = n_steps / t_plain

    from culturesim_ray.pipeline.train import run_train

    t = time.perf_counter()
    manifest = run_train(embed_dir, str(tmp / "train"), num_workers=1, stages=stages,
                         steps_per_epoch=steps_per_epoch, hidden=hidden, out_dim=out_dim,
                         cpus_per_worker=float(torch.get_num_threads()), val_fraction=0.0,
                         log=lambda *_: None)
    t_ray = time.perf_counter() - t
    ray_steps = manifest["counts"]["steps"]
    res = {"plain_steps_per_s": plain_steps_per_s, "ray_steps_per_s": ray_steps / t_ray,
           "ray_vs_plain": (ray_steps / t_ray) / plain_steps_per_s,
           "queue_share": queue_time[0] / t_plain,
           "retrieval_top1": {name: a for name, a, _ in rows},
           "retrieval_top5": {name: b for name, _, b in rows},
           "cultures": len(data.cultures), "held_out_text_items": int(len(queries[1]))}
    print(f"\ntraining on {len(data.cultures)} cultures, modalities {sorted(data.graphs)}, "
          f"themes {data.themes}")
    print(f"{'loop':<30}{'steps/s':>10}{'vs plain':>10}")
    print(f"{'plain (in process)':<30}{plain_steps_per_s:>10.2f}{1.0:>10.2f}")
    print(f"{'Ray Train, 1 worker (fit)':<30}{res['ray_steps_per_s']:>10.2f}{res['ray_vs_plain']:>10.2f}")
    print(f"queue share of step time: {res['queue_share']:.3%}")
    print(f"\nheld-out text item -> culture ({res['held_out_text_items']} items)")
    print(f"{'vectors':<48}{'top-1':>8}{'top-5':>8}")
    for name, a, b in rows:
        print(f"{name:<48}{a:>8.3f}{b:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
