"""gpu_check's kernels: every S1 similarity and the blockwise all-pairs top-k on the
device against float64 on the CPU, and the all-pairs throughput against plain GEMM."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_rows import CPU, F64, Row, clustered, compare, failed, timed
from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.allpairs import blockwise_topk
from culturesim_ray.ops.learned import LearnedSimilarity
from culturesim_ray.ops.metric import DimensionMetric

# --- 1. similarities ---------------------------------------------------------------

def per_dim_reference(x: Tensor, y: Tensor) -> Tensor:
    """per_dim in float64 on the torch path (blocks under the numba kernel's 4096 pairs)."""
    rows = max(1, 4095 // y.shape[0])
    return torch.cat([S.per_dim(x[i:i + rows], y) for i in range(0, x.shape[0], rows)])


def check_similarities(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    n, m, d = (129, 97, 32) if quick else (257, 193, 64)
    gen = torch.Generator().manual_seed(1)
    centers = 0.15 * torch.randn(8, d, generator=gen, dtype=F64)
    x, y = clustered(n, d, gen, centers), clustered(m, d, gen, centers)
    xd, yd = x.to(device, torch.float32), y.to(device, torch.float32)
    tols = {"poincare": 1e-4, "mahalanobis": 1e-4, "critical_share": 1.0 / d + 1e-6}
    rows = []
    for name in [*S.NAMES, "critical_share", "dimension_metric"]:
        try:
            if name == "dimension_metric":  # z-scores: the error is read against their scale
                w = torch.randn(d, generator=gen, dtype=F64).numpy()
                fn = DimensionMetric(w, 0.5).fit(torch.cat([x, y]).numpy())
                ref, got = fn(x, y), fn(xd, yd)
                rows.append(compare(f"sim.{name}", got, ref, 1e-5, scale=float(ref.std())))
                continue
            if name == "learned":
                a, b = x[:96], y[:96]
                labels = ((a - b).norm(dim=1) < (a - b).norm(dim=1).median()).to(F64)
                fn = LearnedSimilarity(hidden=32, epochs=40, seed=0).fit(a, b, labels)
                ref, got = fn(x, y), fn(xd, yd)  # fitted on the CPU, applied on the device
            elif name == "per_dim":
                ref, got = per_dim_reference(x, y), S.per_dim(xd, yd)
            else:
                fn = S.critical_share if name == "critical_share" else S.get(name)
                ref, got = fn(x, y), fn(xd, yd)  # mahalanobis: fitted by the CPU call
            rows.append(compare(f"sim.{name}", got, ref, tols.get(name, 1e-5),
                                info="1/d: one flip" if name == "critical_share" else ""))
        except Exception as exc:  # noqa: BLE001 - a broken path is a FAIL row
            rows.append(failed(f"sim.{name}", exc))
    return rows, {}


# --- 2. all-pairs ------------------------------------------------------------------

def topk_row(name: str, scores: Tensor, idx: Tensor, full: Tensor, k: int,
             tol: float = 1e-5) -> Row:
    """Device top-k vs the float64 dense matrix `full` (self pairs already -inf)."""
    ref_v, ref_idx = torch.topk(full, k, dim=1)
    row, idx, kth = compare(name, scores, ref_v, tol), idx.to(CPU), ref_v[:, -1:]
    picked = torch.gather(full, 1, idx)  # reference scores of the chosen neighbours
    unique = bool((idx.sort(dim=1).values.diff(dim=1) != 0).all())
    tie_ok = bool((picked >= kth - tol * (1 + kth.abs())).all())  # a swap only among ties
    agree = float((idx.unsqueeze(2) == ref_idx.unsqueeze(1)).any(2).float().mean())
    row.ok = row.ok and unique and tie_ok
    row.info = f"idx agree {agree:.4f}{'' if tie_ok else ', non-tie mismatch'}" \
        f"{'' if unique else ', duplicate ids'}"
    return row


def check_allpairs(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    n, m, d, block, k = (600, 450, 48, 320, 10) if quick else (1100, 700, 64, 512, 10)
    gen = torch.Generator().manual_seed(2)
    centers = 0.15 * torch.randn(16, d, generator=gen, dtype=F64)
    x, y = clustered(n, d, gen, centers), clustered(m, d, gen, centers)
    xd, yd = x.to(device, torch.float32), y.to(device, torch.float32)
    cases = [("cosine", True, True), ("dot", True, True), ("cosine", False, False),
             ("euclidean", True, True)]
    rows = []
    for sim, self_join, excl in cases:
        name = f"allpairs.{sim}.{'self' if self_join else 'xy'}"
        try:
            full = S.get(sim)(x, x if self_join else y).clone()
            if excl:
                full.fill_diagonal_(float("-inf"))
            sc, ix = blockwise_topk(xd, None if self_join else yd, k, sim, block, block,
                                    exclude_self=excl)
            rows.append(topk_row(name, sc, ix, full, k))
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(name, exc))
    return rows, {}


def check_throughput(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Cosine self-join top-k (k=10) vs blocked GEMM of the same blocks, in pairs/s."""
    gen = torch.Generator().manual_seed(8)
    big = (2048 if quick else 4096) if device.type == "cpu" else (16384 if quick else 32768)
    tb = 1024 if device.type == "cpu" else 4096
    xt = torch.randn(big, 128, generator=gen).to(device)
    buf = torch.empty(tb, tb, device=device)

    def gemm() -> None:
        for i0 in range(0, big, tb):
            for j0 in range(0, big, tb):
                torch.mm(xt[i0:i0 + tb], xt[j0:j0 + tb].T, out=buf)

    t_kernel = timed(lambda: blockwise_topk(xt, None, 10, "cosine", tb, tb, True), device)
    t_gemm = timed(gemm, device)
    perf = {"allpairs_pairs_per_s": big * big / t_kernel, "gemm_pairs_per_s": big * big / t_gemm}
    perf["allpairs_over_gemm"] = perf["allpairs_pairs_per_s"] / perf["gemm_pairs_per_s"]
    info = f"N={big} d=128 block={tb}: {perf['allpairs_pairs_per_s']:.3g} pairs/s, " \
        f"GEMM {perf['gemm_pairs_per_s']:.3g}, ratio {perf['allpairs_over_gemm']:.3f}"
    return [Row("allpairs.throughput", None, None, None, True, info)], perf
