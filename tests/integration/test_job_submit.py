"""`ray job submit` against a real local head (127.0.0.1, its own ports and temp dir)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FLAGS, corpus_rows, free_port, write_jsonl

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    tmp = tempfile.mkdtemp(prefix="csr-", dir="/tmp")  # short: Ray puts sockets under it
    dash = free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={tmp}",
           f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
           f"--object-manager-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}", "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    import requests

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{address}/api/version", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}")
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the local head's dashboard never answered")
    yield {"address": address, "env": env}
    os.killpg(proc.pid, signal.SIGTERM)  # only this head's process group, not other Ray instances
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(tmp, ignore_errors=True)  # the head's session: logs, sockets, packages


def submit(head: dict, *args: str) -> subprocess.CompletedProcess:
    runtime_env = {"excludes": [".venv", ".git", "runs", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".ruff_cache"]}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["address"],
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env),
           "--", "python", *args]
    return subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=400)


def test_embed_then_allpairs_jobs_succeed(head, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_rows())
    out = tmp_path / "embed"
    res = submit(head, "jobs/embed.py", str(corpus), "--out", str(out), "--batch-size", "4",
                 "--uri-root", str(FLAGS))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["embedded"] == 12 and manifest["counts"]["balanced"]
    ap = tmp_path / "allpairs"
    res = submit(head, "jobs/allpairs.py", str(out), "--out", str(ap), "-k", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pairs = pq.read_table(ap / "pairs.parquet").to_pylist()
    assert {r["culture_a"] for r in pairs} == {"Turkish", "Greek", "Persian"}
