"""How training cost grows with the corpus: graph build, step time, worker memory,
and data parallelism (epoch time with 1 and 2 Ray Train workers).

Synthetic item vectors (d = 64, one modality, a Gaussian cluster per culture,
two themes) at N = 10,000 / 100,000 / 1,000,000 items over C = 100 / 1,000 /
10,000 cultures (--quick: the first two). Per size, in a fresh process (so its
peak RSS is that size's alone), the same code the train job runs:
- graph: `graph.build` (flat index below 50,000 items, IVF above; recall@10 of
  the IVF graph against exact search on 1,000 sampled rows);
- step time: `training.loop.train` on the graph's `ItemStore`, 1 torch thread,
  the default batch (64 cultures x 32 items, fan-outs 10, 5), median of the
  timed steps after warm-up;
- peak RSS of that process (graph, store, model, steps): what one worker holds.
Serve replica start (at the smallest and largest N): a fresh process imports,
loads the weights and the serving state the train job writes
(`serving.artifacts`) and answers one query; the loading after the imports is
reported on its own too (serve_load_ratio).
Epoch time (every item a seed once): at N = 100,000, TorchTrainer with 1
and with 2 workers, each given 1 CPU and 1 torch thread (equal resources per
worker, so the ratio measures data parallelism), two passes timed inside the
workers (slowest worker): the second is the epoch time (steady state, as in a
run of many epochs: the first also carries the start-up of Ray Train's own
actors and the allocator's warm-up; its ratio is reported beside); --repeats
pairs (default 5), 1 and 2 workers alternated, each run in a fresh Ray session;
the ratio is the median of the pairs' ratios, every pair reported. Right
before and after, `cpu_pair.py` measures this machine's floor for that ratio
(the same work in two busy processes against one: a lockstep step waits for
the slower core). The full
run does the epoch comparison first: run right after the 1,000,000-item size
(GBs allocated and freed), both sides ran slower on this 2-core machine, the
2-worker side more (RESULTS: train scale).

    python benchmarks/train_scale.py [--quick] [--json PATH] [--only graph|epoch] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SIZES = [(10_000, 100), (100_000, 1_000), (1_000_000, 10_000)]
EPOCHS = 2  # the epoch comparison times the last of these (steady state, warm-up excluded)
D = 64


def synthetic(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    culture = rng.integers(0, c, n)
    centres = rng.normal(size=(c, D)).astype(np.float32)
    x = centres[culture] + 0.8 * rng.normal(size=(n, D)).astype(np.float32)
    themes = rng.random((n, 2)) < 0.5
    return x.astype(np.float32), culture.astype(np.int64), themes


def build_store(n: int, c: int) -> tuple[object, dict]:
    """The ItemStore of a synthetic corpus and the graph's figures."""
    from culturesim_ray.graph import build as gb
    from culturesim_ray.graph.sample import CSRGraph
    from culturesim_ray.training.batch import ItemStore, fill_means

    x, culture, themes = synthetic(n, c)
    t = time.perf_counter()
    v = gb.normalize_rows(x)
    kind, nlist = gb.choose_index(n)
    index = gb.build_index(v, kind, nlist, nprobe=16, train_sample=100_000, seed=0)
    src, dst, w = [], [], []
    for r0 in range(0, n, 50_000):
        s, d, wt = gb.search_block(index, v[r0:r0 + 50_000], r0, 10)
        src.append(s)
        dst.append(d)
        w.append(wt)
    graph_s = time.perf_counter() - t
    rows = gb.sample_rows(n, 1000)
    recall = gb.sample_recall(index, x, rows, 10)
    del index, v
    csr = CSRGraph.from_edges(np.concatenate(src), np.concatenate(dst), n,
                              np.concatenate(w), symmetric=True)
    store = ItemStore(["text"], {"text": x}, {"text": culture}, {"text": themes}, csr,
                      ["similar"], [f"c{i}" for i in range(c)], ["a", "b"])
    fill_means(store)
    return store, {"graph_s": graph_s, "index": kind, "nlist": nlist, "recall_at_10": recall,
                   "edges": csr.num_edges}


def _model_and_opt(store, cfg):
    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.training.loop import init_training

    return init_training(store, CultureSimConfig(store.in_dims, store.theme_names,
                                                 raw_weight=0.9), cfg)


def one_size(n: int, c: int, steps: int, serve: bool = False) -> dict:
    """Graph, step time and peak RSS of one size (run in its own process)."""
    import torch

    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.loop import train

    torch.set_num_threads(1)
    store, figs = build_store(n, c)
    warm = 3
    cfg = merge_train_config({"stages": [[1, 1]], "steps_per_epoch": warm + steps})
    model, key, queues, opt = _model_and_opt(store, cfg)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, _out, _batch):
        now = time.perf_counter()
        if step >= warm:
            times.append(now - last[0])
        last[0] = now

    last[0] = time.perf_counter()
    train(model, key, queues, opt, store, cfg, on_step=on_step)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB -> MB on Linux
    serve_s = serve_start(model, store) if serve else None
    return {"n": n, "cultures": c, **figs, "step_s": statistics.median(times),
            "peak_rss_mb": rss, "serve_start_s": serve_s["process_s"] if serve_s else None,
            "serve_load_s": serve_s["load_s"] if serve_s else None}


SERVE_CHILD = """
import sys, time, json
t = time.perf_counter()
import numpy as np, torch
from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
from culturesim_ray.serving.artifacts import load_serving_state
from culturesim_ray.serving.predictor import FusionPredictor
root = sys.argv[1]
cfg = CultureSimConfig(**json.load(open(root + "/model_config.json")))
imported = time.perf_counter()
m = CultureSim(cfg)
m.load_state_dict(torch.load(root + "/model.pt", weights_only=True))
pred = FusionPredictor(m, None, state=load_serving_state(root + "/serving", root + "/model.pt"))
q = np.load(root + "/query.npy")
pred.general(pred.fuse("text", q), "text", q)
print(json.dumps({"imports_s": imported - t, "load_s": time.perf_counter() - imported}))
"""


def serve_start(model, store) -> dict:
    """A Fusion replica's start on this corpus, in a fresh process: imports, the
    weights, the train job's serving state (memory-mapped layer states, the neighbour
    index) and one query answered (what `FusionPredictor.from_run` does). The state
    is written first (not timed)."""
    from dataclasses import asdict

    import torch

    from culturesim_ray.models.culturesim import ModalityGraph
    from culturesim_ray.serving.artifacts import write_serving_state

    csr = store.csr
    dst = np.repeat(np.arange(csr.num_nodes), np.diff(csr.indptr))
    g = ModalityGraph(torch.from_numpy(store.x["text"]),
                      torch.from_numpy(np.stack([csr.indices, dst])),
                      torch.from_numpy(store.culture["text"]),
                      torch.from_numpy(store.themes["text"]))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp, "model.pt"))
        Path(tmp, "model_config.json").write_text(json.dumps(asdict(model.cfg)))
        np.save(Path(tmp, "query.npy"), np.asarray(store.x["text"][:1], np.float32))
        write_serving_state(model, {"text": g}, str(Path(tmp, "serving")),
                            str(Path(tmp, "model.pt")))
        del g, dst
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", SERVE_CHILD, tmp], capture_output=True,
                             text=True, check=True, cwd=str(Path(__file__).resolve().parents[1]))
        wall = time.perf_counter() - t
        return {"process_s": wall, **json.loads(res.stdout.strip().splitlines()[-1])}


def _epoch_worker(config: dict) -> None:
    import ray
    import ray.train
    import torch

    from culturesim_ray.training.batch import PassSampler
    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.loop import train

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    store = ray.get(config["store"])
    cfg0 = merge_train_config({})
    steps = PassSampler.steps_for(store.node_culture(),
                                  store.shards(world, cfg0.batch.items_per_culture),
                                  cfg0.batch.batch_cultures, cfg0.batch.items_per_culture)
    cfg = merge_train_config({"stages": [[1, EPOCHS]], "steps_per_epoch": steps})
    model, key, queues, opt = _model_and_opt(store, cfg)
    ends = [time.perf_counter()]
    train(model, key, queues, opt, store, cfg, rank=rank, world=world,
          on_epoch=lambda _pos, _m: ends.append(time.perf_counter()))
    times = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps({"s": times[-1],
                                                                   "first_s": times[0],
                                                                   "steps": steps}))


def epoch_times(n: int, c: int, repeats: int = 3) -> dict:
    """One pass over the items with 1 and with 2 workers (1 CPU, 1 thread each),
    `repeats` times in alternation (1, 2, 1, 2, ...), so a slow spell of this shared
    2-core machine hits both sides; the ratio is the median of the pairs' ratios."""
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    store, _ = build_store(n, c)
    runs: dict[int, list[float]] = {1: [], 2: []}
    firsts: dict[int, list[float]] = {1: [], 2: []}
    steps: dict[int, int] = {}
    for rep in range(repeats):
        for w in (1, 2):  # each run in a fresh Ray session: no actors left from the last
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ref = ray.put(store)
            with tempfile.TemporaryDirectory() as tmp:
                TorchTrainer(_epoch_worker, train_loop_config={"store": ref, "out": tmp},
                             scaling_config=ScalingConfig(num_workers=w,
                                                          resources_per_worker={"CPU": 1}),
                             run_config=ray.train.RunConfig(storage_path=tmp,
                                                            name=f"w{w}r{rep}")).fit()
                ranks = [json.loads(p.read_text()) for p in Path(tmp).glob("rank*.json")]
            runs[w].append(max(r["s"] for r in ranks))
            firsts[w].append(max(r["first_s"] for r in ranks))
            steps[w] = ranks[0]["steps"]
            ray.shutdown()
    ratios = [b / a for a, b in zip(runs[1], runs[2], strict=True)]
    return {"n": n, "cultures": c,
            **{f"{w}w": {"epoch_s": statistics.median(runs[w]), "runs_s": runs[w],
                         "first_epoch_runs_s": firsts[w], "steps": steps[w]} for w in (1, 2)},
            "ratios": ratios, "epoch_time_2w_over_1w": statistics.median(ratios),
            "first_epoch_ratios": [b / a for a, b in zip(firsts[1], firsts[2], strict=True)]}


def epoch_line(ep: dict) -> str:
    return (f"epoch at N={ep['n']}: 1 worker {ep['1w']['epoch_s']:.1f} s "
            f"({ep['1w']['steps']} steps), 2 workers {ep['2w']['epoch_s']:.1f} s "
            f"({ep['2w']['steps']} steps each), medians of {len(ep['ratios'])}: ratio "
            f"{ep['epoch_time_2w_over_1w']:.2f} (pairs: "
            f"{', '.join(f'{r:.2f}' for r in ep['ratios'])}; first epochs: "
            f"{', '.join(f'{r:.2f}' for r in ep['first_epoch_ratios'])}); this machine's "
            f"floor for the ratio (benchmarks/cpu_pair.py), before / after: "
            f"{' / '.join(format(f['floor_2w_over_1w'], '.2f') for f in ep['machine_floor'])}")


def run_epochs(env: dict, repeats: int) -> dict:
    """The epoch comparison, with this machine's floor for its ratio (`cpu_pair.py`:
    two processes' throughput against one's) measured right before and after."""
    from benchmarks.cpu_pair import pair_bound

    n, c = SIZES[1]  # the epoch comparison at 100,000 items in both modes
    before = pair_bound()
    res = subprocess.run([sys.executable, __file__, "--_epoch", str(n), str(c), str(repeats)],
                         capture_output=True, text=True, env=env, check=True)
    return {**json.loads(res.stdout.strip().splitlines()[-1]),
            "machine_floor": [before, pair_bound()]}


def partial(args: argparse.Namespace, sizes: list[tuple[int, int]], env: dict) -> None:
    """`--only graph` / `--only epoch`: one part of the full run, the same code."""
    if args.only == "graph":
        rows = []
        for n, c in sizes:
            res = subprocess.run([sys.executable, __file__, "--_graph", str(n), str(c)],
                                 capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"N={n:>9} C={c:>6} {r['index']:>5} nlist {r['nlist']} graph "
                  f"{r['graph_s']:.1f} s recall@10 {r['recall_at_10']:.3f}", flush=True)
        ivf = [r for r in rows if r["index"] == "ivf"]
        result = {"sizes": rows, "graph_recall_at_10": ivf[-1]["recall_at_10"] if ivf else None}
    else:
        ep = run_epochs(env, args.repeats)
        result = {"epoch": ep, "epoch_time_2w_over_1w": ep["epoch_time_2w_over_1w"]}
        print(epoch_line(ep))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per size")
    ap.add_argument("--only", choices=["graph", "epoch"],
                    help="graph: the graph build and its recall@10 at each size alone; "
                         "epoch: the 1- vs 2-worker epoch comparison alone")
    ap.add_argument("--_graph", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_size", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=5,
                    help="1- and 2-worker epoch runs, alternated; the ratio is their median")
    ap.add_argument("--_epoch", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._size:
        n, c, serve = args._size
        print(json.dumps(one_size(n, c, args.steps, bool(serve))))
        return
    if args._epoch:
        print(json.dumps(epoch_times(*args._epoch)))
        return
    if args._graph:
        print(json.dumps({"n": args._graph[0], "cultures": args._graph[1],
                          **build_store(*args._graph)[1]}))
        return
    sizes = SIZES[:2] if args.quick else SIZES
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    if args.only:
        partial(args, sizes, env)
        return
    epochs = run_epochs(env, args.repeats)  # first: see the docstring
    print(epoch_line(epochs), flush=True)
    rows = []
    for i, (n, c) in enumerate(sizes):
        serve = int(i in (0, len(sizes) - 1))  # replica start at the smallest and largest N
        res = subprocess.run([sys.executable, __file__, "--_size", str(n), str(c), str(serve),
                              "--steps", str(args.steps)], capture_output=True, text=True,
                             env=env, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"N={n}: {rows[-1]}", flush=True)
    ivf = [r for r in rows if r["index"] == "ivf"]
    result = {
        "sizes": rows, "epoch": epochs,
        "step_time_ratio": rows[-1]["step_s"] / rows[0]["step_s"],
        "epoch_time_2w_over_1w": epochs["epoch_time_2w_over_1w"],
        "worker_rss_mb_largest": rows[-1]["peak_rss_mb"],
        "graph_recall_at_10": ivf[-1]["recall_at_10"] if ivf else None,
        "serve_start_ratio": rows[-1]["serve_start_s"] / rows[0]["serve_start_s"],
        "serve_load_ratio": rows[-1]["serve_load_s"] / rows[0]["serve_load_s"],
    }
    print(f"\n{'N':>10}{'C':>8}{'index':>7}{'graph s':>9}{'recall@10':>11}{'step s':>9}"
          f"{'peak RSS MB':>13}{'serve start s':>15}")
    for r in rows:
        start = f"{r['serve_start_s']:.2f}" if r["serve_start_s"] is not None else "-"
        print(f"{r['n']:>10}{r['cultures']:>8}{r['index']:>7}{r['graph_s']:>9.1f}"
              f"{r['recall_at_10']:>11.3f}{r['step_s']:>9.3f}{r['peak_rss_mb']:>13.0f}"
              f"{start:>15}")
    print(f"\nstep time ratio (largest / smallest N): {result['step_time_ratio']:.2f}; "
          f"serve start ratio: {result['serve_start_ratio']:.2f} (a fresh process; the "
          f"loading after imports alone: {result['serve_load_ratio']:.2f})")
    print(epoch_line(epochs))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
