"""Kill trials for `benchmarks/chaos.py` and tests/integration/test_crash.py: the
embed and all-pairs jobs run as `culturesim` subprocesses, SIGKILLed (the whole
process group: driver, Ray head, workers) at seeded points while they write,
rerun, and compared with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CLI = str(Path(sys.executable).parent / "culturesim")
TEXTS = ["The Ottoman Empire ruled Anatolia from Istanbul", "Iznik tiles show tulips",
         "Byzantine mosaics on gold", "Greek drama in open-air theatres",
         "Hafez wrote ghazals in Shiraz", "Persian carpets from Isfahan"]


def job_env() -> dict[str, str]:
    """A local Ray of the job's own on 127.0.0.1 (never a running cluster)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


def run_job(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=job_env(), capture_output=True, text=True,
                          timeout=timeout)


def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Start `culturesim ARGS` in a session of its own; SIGKILL its process group (and
    any descendant that left it) once `ready()` holds. False when the job ended
    first (nothing was killed)."""
    import psutil

    proc = subprocess.Popen([CLI, *args], env=job_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        if proc.poll() is not None:
            return False
        family = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        for child in family:  # only this job's own processes
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)


def torn_files(folder: Path) -> list[str]:
    """Parquet files under `folder` that do not read whole (what a reader would trip on)."""
    torn = []
    for f in sorted(folder.rglob("*.parquet")):
        try:
            pq.read_table(f)
        except (pa.ArrowInvalid, OSError):
            torn.append(str(f))
    return torn


# ---------------------------------------------------------------- embed
def write_corpus(folder: Path, n: int = 120) -> Path:
    """n text rows (3 of them bad: no culture, a duplicate id, an unknown modality)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"item_id": f"t{i:04d}", "culture": f"C{i % 6}", "modality": "text",
             "text": f"{TEXTS[i % 6]} ({i})", "themes": ["history"]} for i in range(n)]
    rows += [{"item_id": "bad-culture", "modality": "text", "text": "x"},
             {"item_id": "t0001", "culture": "C1", "modality": "text", "text": "again"},
             {"item_id": "bad-modality", "culture": "C1", "modality": "video", "text": "x"}]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "embed.yaml").write_text("rows_per_file: 4\nbatch_size: 4\nnum_actors: 1\n"
                                       "max_length: 32\n")
    return path


def embed_args(corpus: Path, out: Path) -> list[str]:
    return ["embed", str(corpus), "--out", str(out), "--config",
            str(corpus.parent / "embed.yaml"), "--blocks", "8"]


def embed_reference(corpus: Path, out: Path) -> dict[str, Any]:
    """The uninterrupted run, in this process (Ray already initialised): the job
    `culturesim embed` runs, with the settings of `embed_args`."""
    from culturesim_ray.config import EmbedConfig, load_yaml
    from culturesim_ray.pipeline.embed import run_embed

    cfg = EmbedConfig(**load_yaml(corpus.parent / "embed.yaml"), blocks=8)
    run_embed(str(corpus), str(out), cfg, log=lambda *_: None)
    return embed_outputs(out)


def embed_outputs(out: Path) -> dict[str, Any]:
    """ids as written (with twins), vectors by id, the quarantine, the manifest counts."""
    import json

    from culturesim_ray.runs import read_quarantine

    files = sorted((out / "embeddings" / "text").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    ids = table.column("item_id").to_pylist()
    vectors = dict(zip(ids, np.asarray(table.column("vector").to_pylist(), np.float32),
                       strict=True))
    q = read_quarantine(str(out))
    quarantine = sorted(zip(q.column("source_row").to_pylist(), q.column("field").to_pylist(),
                            strict=True))
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {"ids": ids, "vectors": vectors, "quarantine": quarantine, "counts": counts}


def compare(ref_ids: list[str], ids: list[str]) -> tuple[int, int]:
    """(rows lost, rows duplicated) of `ids` against the reference."""
    return len(set(ref_ids) - set(ids)), len(ids) - len(set(ids))


def kill_at_seeded_points(args: list[str], out: Path, folder: Path, n_units: int, kills: int,
                          rng: np.random.Generator) -> tuple[int, list[str]]:
    """Start the job `args` `kills` times, each killed once `folder` holds a seeded
    number of parquet files more (of the `n_units` the job writes there); returns how
    many kills landed and the torn files found under `out` after each."""
    done, torn = 0, []
    for _ in range(kills):
        have = len(list(folder.glob("*.parquet")))
        at = have + int(rng.integers(1, max(2, (n_units - have) // 2)))
        done += kill_when(args, lambda at=at: len(list(folder.glob("*.parquet"))) >= at)
        torn += torn_files(out)
    return done, torn


def embed_trial(work: Path, corpus: Path, ref: dict[str, Any], seed: int,
                kills: int = 1) -> dict[str, Any]:
    """One output folder, killed `kills` times at seeded points (a number of files
    written), then run to the end; compared with the uninterrupted run `ref`."""
    rng = np.random.default_rng(seed)
    out = work / f"embed-{seed}"
    folder = out / "embeddings" / "text"
    n_files = len(set(ref["ids"])) // 4
    done, torn = kill_at_seeded_points(embed_args(corpus, out), out, folder, n_files, kills, rng)
    res = run_job(embed_args(corpus, out))
    got = embed_outputs(out) if res.returncode == 0 else None
    lost, dup = compare(ref["ids"], got["ids"]) if got else (len(ref["ids"]), 0)
    same = bool(got) and got["quarantine"] == ref["quarantine"] and set(got["ids"]) == set(
        ref["ids"]) and all(np.allclose(got["vectors"][i], ref["vectors"][i], atol=1e-5)
                            for i in ref["ids"])
    return {"job": "embed", "seed": seed, "kills": done, "torn_files": len(torn),
            "rc": res.returncode, "identical": same, "rows_lost": lost, "rows_duplicated": dup,
            "balanced": bool(got and got["counts"]["balanced"]),
            "error": res.stderr[-1500:] if res.returncode else ""}


# ---------------------------------------------------------------- all-pairs
def write_cultures(folder: Path, n: int = 3000, d: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = pa.table({"culture": [f"c{i:05d}" for i in range(n)], "head": ["general"] * n,
                  "vector": pa.array(rng.normal(size=(n, d)).astype(np.float32).tolist(),
                                     pa.list_(pa.float32(), d))})
    path = folder / "cultures.parquet"
    pq.write_table(t, path)
    return path


def allpairs_args(cultures: Path, out: Path) -> list[str]:
    return ["allpairs", str(cultures), "--out", str(out), "--block-rows", "50",
            "--similarity", "l1", "-k", "5", "--prefilter", "off"]


def allpairs_reference(cultures: Path, out: Path) -> pa.Table:
    """The uninterrupted all-pairs run, in this process, with `allpairs_args`' settings."""
    from culturesim_ray.config import AllPairsConfig
    from culturesim_ray.pipeline.allpairs import run_allpairs

    run_allpairs(str(cultures), str(out), AllPairsConfig(block_rows=50, similarity="l1", k=5,
                                                          prefilter="off"),
                 log=lambda *_: None)
    return sorted_pairs(out)


def sorted_pairs(out: Path) -> pa.Table:
    return pq.read_table(out / "pairs.parquet").sort_by(
        [("theme", "ascending"), ("culture_a", "ascending"), ("rank", "ascending")])


def allpairs_trial(work: Path, cultures: Path, ref: pa.Table, seed: int,
                   kills: int = 1) -> dict[str, Any]:
    """Like `embed_trial` for the all-pairs job (kill points: blocks written)."""
    rng = np.random.default_rng(seed)
    out = work / f"allpairs-{seed}"
    folder = out / "blocks" / "general"
    n_blocks = -(-pq.read_metadata(cultures).num_rows // 50)  # --block-rows 50
    done, torn = kill_at_seeded_points(allpairs_args(cultures, out), out, folder, n_blocks,
                                       kills, rng)
    res = run_job(allpairs_args(cultures, out))
    got = sorted_pairs(out) if res.returncode == 0 else None
    def key(t: pa.Table) -> list[str]:
        return [f"{a}|{th}|{r}" for a, th, r in zip(
            t.column("culture_a").to_pylist(), t.column("theme").to_pylist(),
            t.column("rank").to_pylist(), strict=True)]

    lost, dup = compare(key(ref), key(got)) if got is not None else (ref.num_rows, 0)
    return {"job": "allpairs", "seed": seed, "kills": done, "torn_files": len(torn),
            "rc": res.returncode, "identical": got is not None and got.equals(ref),
            "rows_lost": lost, "rows_duplicated": dup, "balanced": True,
            "error": res.stderr[-1500:] if res.returncode else ""}


# ---------------------------------------------------------------- melody LSTM
def lstm_trial(work: Path, seed: int, epochs: int = 12) -> dict[str, Any]:
    """Ray Train fit of the melody LSTM (2 workers, in this process's Ray) with one
    worker SIGKILLed once a seeded number of checkpoints is registered: it must
    resume at the epoch after the last checkpoint it had, losing or repeating none."""
    import json
    import threading

    import psutil

    from culturesim_ray.encoders.music import Vocabulary
    from culturesim_ray.encoders.sequence import LSTMConfig
    from culturesim_ray.pipeline.train_lstm import train_lstm_distributed, write_sample

    at = int(np.random.default_rng(seed).integers(2, epochs - 3))
    seqs = [["n+0_1"] + ["n+2_0.5", "n+2_0.5", "n-4_1"] * (4 + i % 3) for i in range(24)]
    vocab = Vocabulary.build(seqs)
    out = work / f"lstm-{seed}"
    snap = out / "ray_train" / "lstm" / "checkpoint_manager_snapshot.json"

    def registered() -> int:  # checkpoints the controller has taken on
        try:
            return len(json.loads(snap.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0

    seen: list[int] = []

    def killer() -> None:  # a Ray Train worker of this process's Ray, nobody else's
        deadline = time.time() + 240
        while time.time() < deadline and not seen:
            if registered() >= at:
                for p in psutil.Process(os.getpid()).children(recursive=True):
                    try:
                        if "RayTrainWorker" in " ".join(p.cmdline()):
                            seen.append(registered())
                            os.kill(p.pid, signal.SIGKILL)
                            return
                    except psutil.Error:
                        continue
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    metrics = train_lstm_distributed(write_sample(seqs, work / f"sample-{seed}"), vocab,
                                     LSTMConfig(len(vocab), 16, 32, 2), str(out),
                                     num_workers=2, epochs=epochs, batch_size=6, lr=1e-2,
                                     seed=seed)
    thread.join(timeout=5)
    resumes = metrics.get("resumes", [])
    same_step = bool(seen) and bool(resumes) and resumes[0] in (seen[0], seen[0] + 1)
    whole = metrics["epoch"] == epochs - 1 and len(metrics["history"]) == epochs
    return {"job": "lstm", "seed": seed, "kills": int(bool(seen)), "killed_at": seen[:1],
            "resumed_at": resumes[:1], "identical": same_step and whole,
            "rows_lost": 0 if whole else abs(epochs - len(metrics["history"])),
            "rows_duplicated": 0, "rc": 0, "torn_files": 0, "balanced": True,
            "history": metrics["history"]}
