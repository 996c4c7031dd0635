"""How the scale benchmarks run a job and watch its memory: a `culturesim` CLI job in
its own process group with its RSS sampled (`measure`), a `python -c` child with its
peak RSS and anonymous memory (`sampled_child`), their shared options, and the ratios
and JSON they report. Used by scale.py, graph_scale.py, store_scale.py,
export_scale.py, evaluate_scale.py and report_scale.py."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Measured:
    job: str
    size: int  # rows for embed jobs, cultures for all-pairs alone
    peak_rss_mb: float
    wall_s: float
    samples: int
    returncode: int


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "culturesim"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("culturesim")
    if found:
        return [found]
    sys.exit("culturesim CLI not found next to this python or on PATH (pip install -e .)")


def communicate_sampling(proc: subprocess.Popen, sample: Any, interval: float,
                         timeout: float) -> tuple[str, str]:
    """proc.communicate(timeout) while a thread calls sample() every `interval` s
    (until it returns False or the process ends); the process's stdout and stderr."""
    done = threading.Event()

    def loop() -> None:
        while not done.is_set() and sample() is not False:
            done.wait(interval)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    try:
        return proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()


def anonymous_bytes(pid: int) -> int:
    """A process's anonymous memory (RSS less the pages of files it maps), bytes."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sampled_child(code: str, argv: list[str], cwd: str, interval: float, timeout: float,
                  env: dict[str, str] | None = None, what: str = "the child"
                  ) -> dict[str, Any]:
    """`python -c code *argv` in a fresh process, sampled every `interval` s: its last
    stdout line (JSON) with its peak RSS and peak anonymous memory (MB) and wall time.
    cwd: not the checkout, so that PYTHONPATH picks the code under test."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=env or {**child_env(), "OMP_NUM_THREADS": "1"})
    peak = {"rss": 0, "anon": 0}
    me = psutil.Process(proc.pid)

    def sample() -> bool:
        try:
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
        except psutil.Error:
            return False
        peak["anon"] = max(peak["anon"], anonymous_bytes(proc.pid))
        return True

    stdout, stderr = communicate_sampling(proc, sample, interval, timeout)
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]),
            "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(peak["rss"] / 2**20),
            "peak_anonymous_mb": round(peak["anon"] / 2**20)}


def growth_args(ap: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that follow one process's memory over two sizes
    (`export_scale`, `store_scale`)."""
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--workdir", help="keep the data here (default: a temporary folder)")
    ap.add_argument("--interval", type=float, default=0.1, help="sampling period, s")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per size, s")


def memory_growth(rows: list[dict[str, Any]], time_key: str, unit: str = "items"
                  ) -> dict[str, Any]:
    """Largest / smallest size's ratios of peak anonymous memory, peak RSS and the
    time under `time_key` ("export_s" -> "export_time_ratio"), printed on one line
    (the sizes, `n`, counted in `unit`)."""
    what = time_key.removesuffix("_s")
    out = {"peak_anonymous_ratio": ratio(rows[0]["peak_anonymous_mb"],
                                         rows[-1]["peak_anonymous_mb"]),
           "peak_rss_ratio": ratio(rows[0]["peak_rss_mb"], rows[-1]["peak_rss_mb"]),
           f"{what}_time_ratio": ratio(rows[0][time_key], rows[-1][time_key])}
    print(f"\n{rows[-1]['n'] // rows[0]['n']}x the {unit}: peak anonymous memory "
          f"x{out['peak_anonymous_ratio']}, peak RSS x{out['peak_rss_ratio']}, {what} time "
          f"x{out[f'{what}_time_ratio']}")
    return out


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """`rows` as a right-aligned table; a column per (header, key, format spec), as
    wide as its widest cell plus two."""
    cells = [[format(r[key], spec) for _, key, spec in columns] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) + 2
              for i, (h, _, _) in enumerate(columns)]
    print("\n" + "".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths, strict=True)))
    for c in cells:
        print("".join(f"{v:>{w}}" for v, w in zip(c, widths, strict=True)))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # each job starts its own local Ray
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "HF_HUB_OFFLINE": "1"})
    return env


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def stop_group(proc: subprocess.Popen) -> None:
    """TERM, then KILL, the job's process group (the CLI and the Ray it started)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def measure(job: str, size: int, args: list[str], logs: Path, interval: float,
            timeout: float) -> Measured:
    """Run `culturesim ARGS`, sampling the CLI process's own RSS until it exits."""
    cmd = cli() + args
    print(f"  $ {shlex.join(['culturesim', *args])}", flush=True)
    logs.mkdir(parents=True, exist_ok=True)
    out_log, err_log = logs / f"{job}.stdout", logs / f"{job}.stderr"
    peak, samples, done = [0], [0], threading.Event()
    with open(out_log, "wb") as fo, open(err_log, "wb") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=child_env(),
                                start_new_session=True)

        def sample() -> None:
            try:
                me = psutil.Process(proc.pid)
                while not done.is_set():
                    peak[0] = max(peak[0], me.memory_info().rss)  # this process only
                    samples[0] += 1
                    done.wait(interval)
            except psutil.Error:  # exited (or a zombie) between two samples
                pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            rc = 124
        except BaseException:
            stop_group(proc)
            raise
        finally:
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
    if rc != 0:
        print(f"\nFAILED ({'timed out after ' + str(timeout) + ' s' if rc == 124 else 'exit ' + str(rc)})"
              f": {shlex.join(cmd)}", file=sys.stderr)
        print(f"--- stderr (last 40 lines) ---\n{tail(err_log)}", file=sys.stderr)
        print(f"--- stdout (last 20 lines) ---\n{tail(out_log, 20)}", file=sys.stderr)
        raise SystemExit(1)
    m = Measured(job, size, round(peak[0] / 2**20, 1), round(wall, 2), samples[0], rc)
    print(f"    driver peak RSS {m.peak_rss_mb:.0f} MB, {m.wall_s:.1f} s ({m.samples} samples)",
          flush=True)
    return m


def add_measure_args(ap: argparse.ArgumentParser, timeout: float, per: str) -> None:
    """The options every CLI-measuring benchmark takes: --seed, --interval,
    --timeout (`per` says of what), --workdir, --json."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.05, help="RSS sampling period, s")
    ap.add_argument("--timeout", type=float, default=timeout, help=f"per {per}, s")
    ap.add_argument("--workdir", help="make the temporary directory under this one")
    ap.add_argument("--json", help="write the figures here")


def save_json(path: str | None, result: dict[str, Any]) -> None:
    """--json: the figures to `path` (nothing without one)."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or b is None else round(b / a, 3)
