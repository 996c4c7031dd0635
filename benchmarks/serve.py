"""The similarity service under load: latency and throughput of POST /v1/similar.

A run with N cultures (2,000 by default; --quick 500) is made here: culture
item vectors in MiniLM's 384-d space (clustered synthetic vectors, so any N is
cheap; the query itself goes through the real MiniLM encoder), a fusion model
trained for a few plain MoCo steps on them, and its culture embeddings. The
app is deployed with Ray Serve on 127.0.0.1; load comes from a separate
process (this script with --load), bounded in requests and seconds:

- sequential (1 client): p50/p95/p99 over HTTP vs the in-process predictor
  (`SimilarityService.similar`, same queries): the floor -> http_over_inprocess;
- open loop at --rate requests/s (default 20) for 60 s (--quick 10 s): latency measured from each
  request's scheduled send time (no coordinated omission): the p99 target;
- closed loop, --clients concurrent clients, batching on (max_batch_size 16)
  vs off (max_batch_size 1, set through user_config): requests/s and
  batching_gain = rps on / rps off.

The text encoder runs in --precision (default auto: bfloat16 on a CPU with
AVX512-BF16, as the service does), the floor in the same precision. Ray
Serve runs in the data-plane mode ray_env.SERVE_ENV sets unless the
environment says otherwise (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0 for the
classic actor-call data plane, to compare).

    python benchmarks/serve.py [--quick] [--json PATH] [--cultures N] [--precision P]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from culturesim_ray.encoders.base import PRECISIONS  # noqa: E402

QUERIES = [
    "Ottoman tiles decorate the mosques of Istanbul.",
    "A festival of lanterns lights the old town at new year.",
    "Fishermen sing work songs while hauling the nets.",
    "The royal court commissioned portraits of the dynasty.",
    "Rice terraces climb the mountain slopes above the village.",
    "Folk dances are performed in embroidered costumes.",
    "Monks copied manuscripts in the monastery library.",
    "Spices arrived by caravan from the eastern deserts.",
    "A flag with a red crescent and a white star.",
    "The epic poem tells of a hero crossing the sea.",
]


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


# ----------------------------------------------------------------- load generator process
def load_main(url: str, mode: str, clients: int, rate: float, requests_n: int,
              seconds: float) -> None:
    import requests

    lat: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def one(session: requests.Session, i: int, t_sched: float) -> None:
        body = {"text": QUERIES[i % len(QUERIES)] + f" ({i})", "k": 10}
        try:
            code = session.post(f"{url}/v1/similar", json=body, timeout=30).status_code
        except requests.RequestException:
            code = -1
        with lock:
            lat.append((time.perf_counter() - t_sched) * 1000)
            codes[str(code)] = codes.get(str(code), 0) + 1

    t0 = time.perf_counter()
    if mode == "closed":
        counter = iter(range(requests_n))

        def client() -> None:
            s = requests.Session()
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                one(s, i, time.perf_counter())

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:  # open loop: request i is due at t0 + i / rate, whatever came before
        sessions = [requests.Session() for _ in range(32)]
        threads = []
        for i in range(requests_n):
            due = t0 + i / rate
            if due > deadline:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            t = threading.Thread(target=one, args=(sessions[i % 32], i, due))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    print(json.dumps({"latencies_ms": lat, "codes": codes, "wall_s": wall}))


def run_load(url: str, mode: str, clients: int = 1, rate: float = 20.0, n: int = 100,
             seconds: float = 60.0) -> dict:
    cmd = [sys.executable, __file__, "--load", url, "--mode", mode, "--clients", str(clients),
           "--rate", str(rate), "--requests", str(n), "--seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    lat = res["latencies_ms"]
    return {"n": len(lat), "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99), "rps": len(lat) / res["wall_s"],
            "codes": res["codes"]}


# ----------------------------------------------------------------- the run being served
def make_run(root: Path, n_cultures: int, per: int = 3, steps: int = 20) -> Path:
    """embed/ (MiniLM-space item vectors + manifest) and train/ (model, culture embeddings)."""
    import numpy as np
    import pyarrow as pa
    import torch

    from culturesim_ray import io
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
    from culturesim_ray.runs import read_embeddings
    from culturesim_ray.training.batch import store_from_graphs
    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.data import build_training_data
    from culturesim_ray.training.export import export_culture_embeddings
    from culturesim_ray.training.loop import make_queues, train
    from culturesim_ray.training.stages import StageConfig, param_groups

    rng = np.random.default_rng(0)
    d = 384
    centres = rng.normal(size=(n_cultures, d))
    culture = np.repeat(np.arange(n_cultures), per)
    x = centres[culture] + 0.7 * rng.normal(size=(len(culture), d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    names = [f"culture-{i:05d}" for i in range(n_cultures)]
    themes = [["history"] if i % 2 else ["music"] for i in range(len(culture))]
    table = pa.table({
        "item_id": [f"item-{i:06d}" for i in range(len(culture))],
        "culture": [names[c] for c in culture], "modality": ["text"] * len(culture),
        "encoder": ["minilm"] * len(culture),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d),
        "themes": themes, "error": pa.array([None] * len(culture), pa.string())})
    embed = root / "embed"
    io.write_table(table, str(embed / "embeddings" / "text" / "part-0.parquet"))
    io.write_json(io.manifest("embed", EmbedConfig().model_dump(),
                              {"embedded": len(culture)}, time.time(),
                              encoders={"text": {"name": "minilm", "dim": d}}),
                  str(embed / "manifest.json"))
    data = build_training_data(read_embeddings(str(embed)))
    cfg = CultureSimConfig(data.in_dims, data.themes)
    torch.manual_seed(0)
    model = CultureSim(cfg)
    model.set_centers(data.graphs)
    key = CultureSim(cfg)
    key.load_state_dict(model.state_dict())
    queues = make_queues(model, 256)
    opt = torch.optim.AdamW(param_groups(model, 1, StageConfig()))
    # the one training loop (training.loop), stage 1 for `steps` steps
    train(model, key, queues, opt, store_from_graphs(data.graphs, data.cultures, data.themes),
          merge_train_config({"stages": [[1, 1]], "steps_per_epoch": steps}))
    train = root / "train"
    train.mkdir(parents=True)
    torch.save(model.state_dict(), train / "model.pt")
    from dataclasses import asdict

    (train / "model_config.json").write_text(json.dumps(asdict(cfg)))
    io.write_table(export_culture_embeddings(model, data),
                   str(train / "culture_embeddings.parquet"))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--cultures", type=int)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="intra-op threads of the encoder and fusion replicas (0: Ray's cap)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the text encoder's dtype, in the service and the floor")
    ap.add_argument("--load")  # internal: be the load generator for this URL
    ap.add_argument("--mode", default="closed")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    if args.load:
        load_main(args.load, args.mode, args.clients, args.rate, args.requests, args.seconds)
        return

    from culturesim_ray.pipeline.ray_env import set_safe_env

    set_safe_env()
    import socket

    from ray import serve

    from culturesim_ray.pipeline.ray_env import SERVE_ENV, init_ray
    from culturesim_ray.pipeline.serve import app_builder
    from culturesim_ray.serving.predictor import RunPaths, SimilarityService

    n_cultures = args.cultures or (500 if args.quick else 2000)
    n_seq = 30 if args.quick else 100
    n_load = 150 if args.quick else 400
    root = Path(tempfile.mkdtemp(prefix="csr-serve-bench-"))
    t = time.perf_counter()
    make_run(root, n_cultures)
    print(f"run with {n_cultures} cultures made in {time.perf_counter() - t:.1f} s")

    # in-process floor
    svc = SimilarityService(RunPaths.of(str(root)), precision=args.precision)
    svc.similar("text", QUERIES[0], k=10)  # warm
    precision = svc.encoders.encoder("text").precision
    floor = []
    for i in range(n_seq):
        t = time.perf_counter()
        svc.similar("text", QUERIES[i % len(QUERIES)] + f" ({i})", k=10)
        floor.append((time.perf_counter() - t) * 1000)
    del svc

    init_ray(num_cpus=2, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False})
    url = f"http://127.0.0.1:{port}"

    def deploy(batch: int) -> None:
        cfg = {"max_batch_size": batch, "batch_wait_timeout_s": 0.002 if batch > 1 else 0.0}
        serve.run(app_builder({"run_dir": str(root), "batch": cfg,
                               "ingress": {"default_k": 10},
                               "torch_threads": args.torch_threads,
                               "precision": args.precision}),
                  name="culturesim", route_prefix="/")
        run_load(url, "closed", 1, n=10, seconds=30)  # warm every replica

    deploy(16)
    seq = run_load(url, "closed", 1, n=n_seq, seconds=120)
    open_seconds = 10 if args.quick else 60
    open_loop = run_load(url, "open", rate=args.rate, n=int(args.rate * open_seconds),
                         seconds=open_seconds + 5)
    on = run_load(url, "closed", args.clients, n=n_load, seconds=60)
    deploy(1)
    off = run_load(url, "closed", args.clients, n=n_load, seconds=60)
    serve.shutdown()

    p50_floor = statistics.median(floor)
    serve_env = {k: os.environ.get(k) for k in SERVE_ENV}
    res = {"cultures": n_cultures, "precision": precision, "serve_env": serve_env,
           "p50_ms": open_loop["p50_ms"], "p95_ms": open_loop["p95_ms"],
           "p99_ms": open_loop["p99_ms"], "rate": args.rate, "rps": on["rps"],
           "batching_gain": on["rps"] / off["rps"],
           "http_over_inprocess": seq["p50_ms"] / p50_floor,
           "inprocess_p50_ms": p50_floor, "sequential": seq, "open_loop": open_loop,
           "closed_batching_on": on, "closed_batching_off": off}
    print(f"\nPOST /v1/similar, text queries, k=10, {n_cultures} cultures, 2 CPUs, "
          f"text encoder in {precision}, {serve_env}")
    print(f"{'load':<40}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}  codes")
    print(f"{'in-process predictor (floor)':<40}{len(floor):>6}{p50_floor:>9.1f}"
          f"{percentile(floor, 95):>9.1f}{percentile(floor, 99):>9.1f}{'':>8}")
    for name, r in (("HTTP sequential (1 client)", seq),
                    (f"HTTP open loop {args.rate:g} req/s", open_loop),
                    (f"HTTP closed {args.clients} clients, batching on", on),
                    (f"HTTP closed {args.clients} clients, batching off", off)):
        print(f"{name:<40}{r['n']:>6}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['rps']:>8.1f}  {r['codes']}")
    print(f"\nbatching_gain (rps on / off)        {res['batching_gain']:.2f}")
    print(f"http_over_inprocess (p50 seq/floor)  {res['http_over_inprocess']:.2f}")
    print(f"p99 at {args.rate:g} req/s: {open_loop['p99_ms']:.1f} ms (target <= 100 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
