"""Chaos: killed jobs, an overloaded service and fuzzed inputs, in bounded time.

- kills: the embed and all-pairs jobs run as `culturesim` subprocesses and are
  SIGKILLed (driver, Ray head, workers) at seeded points while they write, then
  rerun and compared with an uninterrupted run (`chaos_kill.py`); the melody
  LSTM's Ray Train fit gets a worker killed and must resume at the next epoch.
  A kill is survived when the rerun succeeds, its output equals the reference,
  and no torn file was ever visible.
- overload: a small run (the embed reference, a short training) is served by
  Ray Serve on 127.0.0.1 with small queues (`chaos_load.small_queues`:
  max_queued_requests 2 on the Ingress and the Encoder); 64 clients in a closed loop (`chaos_load.py`). Bad = any
  answer but a 200 or a 429/503 with Retry-After (a dropped connection
  included); a hang = no answer in 30 s. Then the sequential latency again.
- fuzz: the property tests of tests/unit/test_fuzz_inputs.py with --examples
  cases each (default 250; corpus files, gold, relations, config YAML, request bodies), hostile
  bodies over real HTTP (a 5xx or a dropped connection is a crash), and hostile
  corpus folders through the real `culturesim embed` (a traceback, an exit
  status other than 0/1/2, or rows in != embedded + quarantined is a crash).

    python benchmarks/chaos.py [--quick] [--json PATH] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import chaos_kill as ck  # noqa: E402
from benchmarks.chaos_load import closed_loop, median_latency, small_queues  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- kills
def run_kills(work: Path, quick: bool, seed: int) -> list[dict[str, Any]]:
    trials = []
    corpus = ck.write_corpus(work / "corpus", n=24 if quick else 120)
    ref = ck.embed_reference(corpus, work / "run" / "embed")  # also the served run's
    for s in range(seed, seed + (1 if quick else 3)):
        trials.append(ck.embed_trial(work, corpus, ref, seed=s, kills=1 if quick else 2))
        print(f"  embed seed {s}: {_brief(trials[-1])}", flush=True)
    cultures = ck.write_cultures(work / "cultures", n=600 if quick else 3000)
    pairs = ck.allpairs_reference(cultures, work / "allpairs-ref")
    for s in range(seed, seed + (1 if quick else 3)):
        trials.append(ck.allpairs_trial(work, cultures, pairs, seed=s, kills=1 if quick else 2))
        print(f"  allpairs seed {s}: {_brief(trials[-1])}", flush=True)
    return trials


def run_lstm_kills(work: Path, quick: bool, seed: int) -> list[dict[str, Any]]:
    trials = []
    for s in range(seed, seed + (1 if quick else 2)):
        trials.append(ck.lstm_trial(work, seed=s, epochs=7 if quick else 12))
        print(f"  lstm seed {s}: {_brief(trials[-1])}", flush=True)
    return trials


def _brief(t: dict[str, Any]) -> str:
    return (f"kills {t['kills']}, torn files seen {t['torn_files']}, identical {t['identical']}, "
            f"lost {t['rows_lost']}, duplicated {t['rows_duplicated']}"
            + (f", rc {t['rc']}: {t['error'][-300:]}" if t["rc"] else ""))


# ---------------------------------------------------------------- overload + HTTP fuzz
def serve_config(run: Path, port: int) -> dict[str, Any]:
    """serve_configs/local.yaml on this run and port, with small queues."""
    import yaml

    config = yaml.safe_load((ROOT / "serve_configs" / "local.yaml").read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["run_dir"] = str(run)
    return small_queues(config)


def run_service(work: Path, quick: bool, examples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    import socket

    from ray import serve

    from culturesim_ray.pipeline.serve_deploy import deploy_config
    from culturesim_ray.pipeline.train import run_train

    run = work / "run"
    run_train(str(run / "embed"), str(run / "train"), num_workers=1,
              stages=((1, 1), (2, 1), (3, 1)), steps_per_epoch=2, hidden=32, out_dim=16,
              queue_size=16, log=lambda *_: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    deploy_config(serve_config(run, port))
    try:
        before = median_latency(url, n=5)
        load = closed_loop(url, clients=64, seconds=6 if quick else 20, timeout=30)
        after = median_latency(url, n=5)
        load.update(latency_before_s=round(before, 4), latency_after_s=round(after, 4))
        print(f"  overload: {load}", flush=True)
        fuzz = http_fuzz(url, examples)
        print(f"  http fuzz: {fuzz}", flush=True)
    finally:
        serve.shutdown()
    return load, fuzz


def http_fuzz(url: str, examples: int) -> dict[str, int]:
    import requests
    from hypothesis import HealthCheck, given, settings

    fz = _fuzz_module()
    BODIES, CTYPES = fz.BODIES, fz.CTYPES  # noqa: N806

    counts = {"cases": 0, "crashes": 0}
    session = requests.Session()
    session.trust_env = False

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=BODIES, ctype=CTYPES)
    def send(body: bytes, ctype: str | None) -> None:
        headers = {"Content-Type": ctype} if ctype is not None else {}
        counts["cases"] += 1
        try:
            res = session.post(f"{url}/v1/similar", data=body, headers=headers, timeout=60)
            if res.status_code >= 500 and res.status_code != 503:
                counts["crashes"] += 1
        except requests.RequestException:
            counts["crashes"] += 1

    send()
    return counts


# ---------------------------------------------------------------- pure + CLI fuzz
def _fuzz_module() -> Any:
    """tests/unit/test_fuzz_inputs.py, loaded by path (a `tests` package elsewhere on
    sys.path must not shadow it)."""
    import importlib.util

    name = "culturesim_fuzz_inputs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "tests" / "unit" / "test_fuzz_inputs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pure_fuzz(examples: int) -> dict[str, int]:
    """Every property test of test_fuzz_inputs.py, `examples` cases each; a test
    that fails counts as a crash."""
    from hypothesis import settings

    fz = _fuzz_module()

    counts = {"cases": 0, "crashes": 0}
    for name in sorted(dir(fz)):
        fn = getattr(fz, name)
        if not (name.startswith("test_") and hasattr(fn, "hypothesis")):
            continue
        inner = fn.hypothesis.inner_test

        def counted(*a: Any, inner: Any = inner, **kw: Any) -> None:
            counts["cases"] += 1
            inner(*a, **kw)

        own = fn._hypothesis_internal_use_settings
        fn.hypothesis.inner_test = counted
        fn._hypothesis_internal_use_settings = settings(own, max_examples=examples,
                                                        database=None)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  (a falsified property: counted, named)
            counts["crashes"] += 1
            print(f"  FUZZ FAILURE {name}: {str(exc)[:500]}", flush=True)
        finally:
            fn.hypothesis.inner_test = inner
            fn._hypothesis_internal_use_settings = own
    return counts


def cli_corpora(work: Path, quick: bool) -> list[Path]:
    """Hostile corpus folders for the real CLI."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"item_id": "a", "culture": "A", "modality": "text", "text": "Mosaics in gold"},
            {"item_id": "b", "culture": "B", "modality": "text", "text": "Carpets",
             "era_start": 1e30, "themes": "[" * 3000},
            {"item_id": "c", "culture": "C", "modality": "text", "text": "\u202e" + "é" * 500,
             "themes": ["x", 3]},
            {"item_id": "d", "culture": None, "modality": "text", "text": "x"},
            {"item_id": "e", "culture": "A", "modality": "image", "uri": "../../etc/passwd"},
            {"item_id": "a", "culture": "A", "modality": "text", "text": "twin"}]
    mixed = work / "fuzz-mixed"
    mixed.mkdir(parents=True)
    (mixed / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (mixed / "b.csv").write_bytes(b"\xef\xbb\xbfitem_id,culture,modality,text,era_end\n"
                                  b"f,B,text,\"a, b\",NaN\ng,B,text,,\nh,B,text,t,12x\n")
    pq.write_table(pa.table({"item_id": ["p", "q"], "culture": ["C", "C"],
                             "modality": ["text", "text"], "text": [None, "fine"],
                             "extra": [[1.5], None]}), mixed / "c.parquet")
    (mixed / "empty.jsonl").write_bytes(b"")
    broken = work / "fuzz-broken"
    broken.mkdir()
    (broken / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (broken / "z.parquet").write_bytes(bytes(range(256)) * 4)
    folders = [broken] if quick else [mixed, broken]
    if not quick:
        for name, data in (("utf16.csv", "item_id,culture\nx,A\n".encode("utf-16")),
                           ("deep.jsonl", b'{"item_id": ' + b"[" * 50_000 + b"\n"),
                           ("surrogate.jsonl", b'{"item_id": "\\udc00", "culture": "A"}\n')):
            folder = work / f"fuzz-{name.split('.')[0]}"
            folder.mkdir()
            (folder / name).write_bytes(data)
            folders.append(folder)
    return folders


def cli_fuzz(work: Path, quick: bool) -> dict[str, int]:
    counts = {"cases": 0, "crashes": 0}
    for folder in cli_corpora(work, quick):
        out = work / (folder.name + "-out")
        res = ck.run_job(["embed", str(folder), "--out", str(out), "--actors", "1",
                          "--batch-size", "8"])
        counts["cases"] += 1
        text = res.stdout + res.stderr
        crash = "Traceback (most recent call last)" in text or res.returncode not in (0, 1, 2)
        if res.returncode == 0:
            counts_ = json.loads((out / "manifest.json").read_text())["counts"]
            crash = crash or not counts_["balanced"]
        elif str(folder) not in text:
            crash = True  # an error must name the file
        counts["crashes"] += crash
        print(f"  cli {folder.name}: rc {res.returncode}, crash {crash}: "
              f"{text.strip().splitlines()[-1][:200] if text.strip() else ''}", flush=True)
    return counts


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one trial per job, short loops")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, help="fuzz cases per property (default 250; "
                    "--quick 25)")
    args = ap.parse_args()
    examples = args.examples or (25 if args.quick else 250)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="culturesim-chaos-"))
    from culturesim_ray.pipeline.ray_env import init_ray

    init_ray(num_cpus=2, log_to_driver=False)  # the references, the LSTM fit, the service
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    phases: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        phases[name] = round(time.time() - t0, 1)

    try:
        print("kills (subprocess jobs)", flush=True)
        t0 = time.time()
        trials = run_kills(work, args.quick, args.seed)
        lap("kills_jobs", t0)
        print("fuzz (pure validators, CLI)", flush=True)
        t0 = time.time()
        pure = pure_fuzz(examples)
        cli = cli_fuzz(work, args.quick)
        lap("fuzz", t0)
        print("kills (melody LSTM worker)", flush=True)
        t0 = time.time()
        trials += run_lstm_kills(work, args.quick, args.seed)
        lap("kills_lstm", t0)
        print("overload + HTTP fuzz", flush=True)
        t0 = time.time()
        load, http = run_service(work, args.quick, max(20, examples))
        lap("serve", t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {
        "kills": sum(t["kills"] for t in trials),
        "kills_survived": sum(t["kills"] for t in trials
                              if t["rc"] == 0 and t["identical"] and not t["torn_files"]),
        "torn_files_seen": sum(t["torn_files"] for t in trials),
        "rows_lost": sum(t["rows_lost"] for t in trials),
        "rows_duplicated": sum(t["rows_duplicated"] for t in trials),
        "overload_requests": load["requests"], "overload_ok": load["ok"],
        "overload_shed": load["shed"], "overload_bad": load["bad"],
        "overload_hangs": load["hangs"] + load["stuck_clients"],
        "latency_before_s": load["latency_before_s"], "latency_after_s": load["latency_after_s"],
        "fuzz_cases": pure["cases"] + http["cases"] + cli["cases"],
        "fuzz_crashes": pure["crashes"] + http["crashes"] + cli["crashes"],
        "fuzz_cases_by_kind": {"pure": pure["cases"], "http": http["cases"], "cli": cli["cases"]},
        "trials": [{k: v for k, v in t.items() if k not in ("history", "error")}
                   for t in trials],
        "quick": args.quick, "seconds": round(time.time() - started, 1),
        "phase_seconds": phases,
    }
    print(f"\n{'check':<28}{'figure':>12}  target")
    for key, target in (("kills", ""), ("kills_survived", "== kills"),
                        ("torn_files_seen", "0"), ("rows_lost", "0"), ("rows_duplicated", "0"),
                        ("overload_requests", ""), ("overload_ok", ""), ("overload_shed", ""),
                        ("overload_bad", "0"), ("overload_hangs", "0"),
                        ("latency_before_s", ""), ("latency_after_s", "~ before"),
                        ("fuzz_cases", ">= 2000 (full)"), ("fuzz_crashes", "0"),
                        ("seconds", "< 300 (--quick)")):
        print(f"{key:<28}{res[key]!s:>12}  {target}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
