"""benchmarks/gpu_check.py runs where the GPU machine runs it: without ray, faiss,
music21, pydantic, fastapi or s3fs importable. Here on the CPU with --quick, in a
subprocess whose sitecustomize makes those imports fail; every check must pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from culturesim_ray.ops.similarity import NAMES

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "faiss", "music21", "pydantic", "fastapi", "s3fs")

# None in sys.modules is what an absent package looks like: `import ray` raises
# ModuleNotFoundError and importlib.util.find_spec("ray") returns None (torch probes
# optional packages that way, so a finder that raises would break torch itself)
SITECUSTOMIZE = f"""
import sys

for name in {BLOCKED!r}:
    sys.modules[name] = None
"""


def _env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_blocker_refuses_the_missing_packages(tmp_path: Path) -> None:
    env = _env(tmp_path)
    res = _run(["-c", "import ray"], env)
    assert res.returncode != 0
    assert "ModuleNotFoundError: import of ray halted" in res.stderr
    code = ("import importlib, importlib.util\n"
            f"for name in {BLOCKED!r}:\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError:\n"
            "        continue\n"
            "    raise SystemExit(name + ' imported')\n"
            "import numpy, torch, torch_geometric\n")  # what the GPU machine has still imports
    res = _run(["-c", code], env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_gpu_check_passes_on_cpu_without_the_missing_packages(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    res = _run(["benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--json", str(out)],
               _env(tmp_path), timeout=280)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "ALL PASS" in res.stdout
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["ok"] is True
    failed = [c for c in data["checks"] if not c["ok"]]
    assert not failed, failed
    names = {c["name"] for c in data["checks"]}
    assert {f"sim.{n}" for n in NAMES} <= names  # every S1 similarity has its row
    for group in ("allpairs.", "train.", "lstm.", "enc."):
        assert any(n.startswith(group) for n in names), group
    assert {"train.losses", "train.grads", "train.params", "allpairs.throughput",
            "lstm.train.losses", "lstm.train.grads", "lstm.train.params", "enc.minilm",
            "enc.efficientnet", "train.loop_first_step", "train.loop_finite"} <= names
    for c in data["checks"]:
        if c["max_err"] is not None:
            assert c["max_err"] <= c["tol"], c
    for key in ("allpairs_pairs_per_s", "gemm_pairs_per_s", "allpairs_over_gemm",
                "train_step_s", "lstm_train_step_s", "minilm_texts_per_s",
                "efficientnet_images_per_s", "loop_step_s", "loop_step_cpu_s", "loop_speedup"):
        assert data[key] is not None and data[key] > 0, key


@pytest.mark.slow
def test_encoder_assets_travel_and_load(tmp_path: Path) -> None:
    """--make-assets writes float16 weights under the 64 MiB the device tool carries, and
    the encoder rows pass from them alone (the blocker on, as on the GPU machine)."""
    assets = tmp_path / "assets"
    res = _run(["benchmarks/gpu_check.py", "--make-assets", str(assets)], dict(os.environ))
    assert res.returncode == 0, res.stderr[-4000:]
    size = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    assert 30e6 < size < 60 * 2**20, size
    code = ("import sys; sys.argv = ['gpu_check']; sys.path.insert(0, 'benchmarks')\n"
            "import torch, gpu_check\n"
            f"rows, perf = gpu_check.check_encoders(torch.device('cpu'), True, "
            f"__import__('pathlib').Path({str(assets)!r}))\n"
            "bad = [r for r in rows if not r.ok]\n"
            "assert not bad and len(rows) == 4, rows\n"
            "assert perf['minilm_texts_per_s'] > 0 and perf['efficientnet_images_per_s'] > 0\n")
    res = _run(["-c", code], _env(tmp_path))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
