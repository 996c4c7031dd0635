"""What `benchmarks/gpu_check.py`'s checks share: a table row, the comparison of a
device result with its float64 CPU reference, a timer that synchronises the device,
and the clustered test points."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

F64 = torch.float64
CPU = torch.device("cpu")


@dataclass
class Row:
    name: str
    max_abs: float | None  # None: not a comparison (a timing) or it could not run
    max_err: float | None  # max |got - ref| / (scale + |ref|)
    tol: float | None
    ok: bool
    info: str = ""


def compare(name: str, got: Tensor, ref: Tensor, tol: float, scale: float = 1.0,
            info: str = "") -> Row:
    """Row for got vs ref: error |got - ref| / (scale + |ref|), must be <= tol."""
    got = got.detach().to(CPU, F64)
    ref = ref.detach().to(CPU, F64)
    if got.shape != ref.shape:
        return Row(name, None, None, tol, False, f"shape {tuple(got.shape)} "
                   f"vs reference {tuple(ref.shape)}")
    if not bool(torch.isfinite(got).all()):
        return Row(name, None, None, tol, False, "non-finite values")
    diff = (got - ref).abs()
    err = float((diff / (scale + ref.abs())).max())
    return Row(name, float(diff.max()), err, tol, err <= tol, info)


def failed(name: str, exc: BaseException) -> Row:
    return Row(name, None, None, None, False, f"{type(exc).__name__}: {exc}"[:300])


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """Median seconds of fn() after one warm-up call (synchronised on CUDA)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clustered(n: int, d: int, gen: torch.Generator, centers: Tensor) -> Tensor:
    """n float64 points around random rows of `centers` (non-zero, norms ~1)."""
    pick = torch.randint(0, centers.shape[0], (n,), generator=gen)
    return centers[pick] + 0.05 * torch.randn(n, d, generator=gen, dtype=F64)
