"""All-pairs top-k: the blockwise kernel against its baselines, in one run.

Data: Gaussian clusters (1,000 centres of scale 0.35 per dimension, noise
0.3 per dimension, d=384), float32, the same
for every path. Sections:

(a) exact cosine top-k (k=10) at N: blockwise kernel vs one dense GEMM X @ X.T
    (this machine's roofline; on a row subset when N x N would not fit),
    vs FAISS IndexFlatIP search, vs scikit-learn cosine_similarity +
    argpartition (on a row subset), vs sentence-transformers'
    paraphrase_mining_embeddings when installed. Compared as pairs/s.
(b) FAISS k-means pre-filtering at N_pf: recall@10 against exact, pair
    evaluations saved, wall time (k-means included) vs exact, for several nprobe.
(c) each similarity's time relative to cosine (and L1 / per-dim relative to
    torch.cdist(p=1)) on one (2000 x 8000) block, the metric of `allpairs
    --metric` (`ops.metric.DimensionMetric`) among them; and that metric's fit (its
    pair moments over every culture pair, closed form) at N_pf cultures.
(d) peak RSS of an exact blockwise run at N_pf, in a fresh process, against
    what a dense N x N float32 matrix would take.
(e) a train run's culture map (`ops.modality_cosine.ModalityCosine`, raw slots of
    1,280 image and 384 text columns at uneven shares, then 128 learned columns):
    exact blockwise top-k at N_map, plain; whitened as before (each block's slots
    whitened in every call); whitened once (`prepare`, timed with the run) and
    scored by `on_prepared()`, as the all-pairs job does. Same kernel on all three.

    python benchmarks/allpairs.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from culturesim_ray.ops import similarity as S  # noqa: E402
from culturesim_ray.ops.allpairs import blockwise_topk  # noqa: E402
from culturesim_ray.ops.prefilter import build_clusters, prefiltered_topk, recall_at_k  # noqa: E402

K = 10
D = 384


def clustered(n: int, d: int = D, centers: int = 1000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * 0.35
    return (c[torch.randint(0, centers, (n,), generator=g)]
            + torch.randn(n, d, generator=g) * 0.3)


def timed(fn, repeat: int = 1):
    fn() if repeat > 1 else None
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t) / repeat, out


def section_a(n: int) -> dict:
    x = clustered(n)
    xn = x / x.norm(dim=1, keepdim=True)
    res: dict = {"n": n}
    sub = min(n, 25000)  # a dense sub x sub float32 result must fit in memory
    t_gemm, _ = timed(lambda: xn[:sub] @ xn[:sub].T)
    res["gemm_pairs_per_s"] = sub * sub / t_gemm
    res["gemm_rows"] = sub
    t_blk, (_, exact_idx) = timed(lambda: blockwise_topk(x, k=K, exclude_self=True))
    res["blockwise_pairs_per_s"] = n * n / t_blk
    res["blockwise_s"] = t_blk
    t_one, _ = timed(lambda: blockwise_topk(x, k=K, exclude_self=True, symmetric=False))
    res["blockwise_one_sided_pairs_per_s"] = n * n / t_one
    import faiss

    index = faiss.IndexFlatIP(D)
    xf = np.ascontiguousarray(xn.numpy())
    index.add(xf)
    t_faiss, _ = timed(lambda: index.search(xf, K + 1))
    res["faiss_flat_pairs_per_s"] = n * n / t_faiss
    try:
        from sklearn.metrics.pairwise import cosine_similarity

        rows = min(n, 4000)
        xs = x.numpy()

        def skl():
            s = cosine_similarity(xs[:rows], xs)
            s[np.arange(rows), np.arange(rows)] = -np.inf
            return np.argpartition(-s, K, axis=1)[:, :K]

        t_sk, _ = timed(skl)
        res["sklearn_pairs_per_s"] = rows * n / t_sk
    except ImportError:
        res["sklearn_pairs_per_s"] = None
    try:
        from sentence_transformers.util import paraphrase_mining_embeddings

        t_st, _ = timed(lambda: paraphrase_mining_embeddings(x, top_k=K))
        res["st_paraphrase_mining_pairs_per_s"] = n * n / t_st
    except ImportError:
        res["st_paraphrase_mining_pairs_per_s"] = None
    return res


def section_b(n: int, nprobes: list[int]) -> dict:
    x = clustered(n, seed=1)
    t_exact, (_, exact) = timed(lambda: blockwise_topk(x, k=K, exclude_self=True))
    rows = []
    for nprobe in nprobes:
        def run(nprobe=nprobe):
            cl = build_clusters(x, None, nprobe)
            return prefiltered_topk(x, k=K, clusters=cl)
        t_pf, (_, idx, stats) = timed(run)
        rows.append({"nprobe": nprobe, "nlist": stats.nlist, "recall_at_10": recall_at_k(idx, exact),
                     "pair_reduction": stats.pair_reduction, "seconds": t_pf,
                     "speedup": t_exact / t_pf})
    return {"n": n, "exact_s": t_exact, "runs": rows}


def section_c(n_fit: int) -> dict:
    from culturesim_ray.ops.metric import DimensionMetric

    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, D, generator=g), torch.randn(8000, D, generator=g)
    xs, ys = x[:500], y[:2000]  # the slow elementwise ones on a quarter block
    t_cos, _ = timed(lambda: S.cosine(x, y), 3)
    t_cos_small, _ = timed(lambda: S.cosine(xs, ys), 3)
    t_cd, _ = timed(lambda: torch.cdist(xs, ys, p=1), 2)
    out, vs_cdist = {}, {}
    w = torch.randn(D, generator=g).numpy()
    for name in ("dot", "euclidean", "ndd", "log_scaled", "hybrid", "mahalanobis",
                 "dimension_metric"):
        fn = DimensionMetric(w, 0.5) if name == "dimension_metric" else S.get(name)
        if name == "mahalanobis":
            fn.fit(torch.cat([x, y]))
        if name == "dimension_metric":
            fn.fit(torch.cat([x, y]).numpy())
        t, _ = timed(lambda fn=fn: fn(x, y), 3)
        out[name] = t / t_cos
    for name in ("l1", "poincare", "per_dim"):
        fn = S.get(name)
        t, _ = timed(lambda fn=fn: fn(xs, ys), 2)  # after a warm-up call (numba loads)
        out[name] = t / t_cos_small
        vs_cdist[name] = t / t_cd
    means = clustered(n_fit, seed=4).numpy()
    t_fit, _ = timed(lambda: DimensionMetric(w, 0.5).fit(means))
    return {"sim_time_vs_cosine": out, "vs_cdist_l1": vs_cdist,
            "metric_fit": {"cultures": n_fit, "seconds": t_fit}}


RSS_CHILD = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.allpairs import clustered
from culturesim_ray.ops.allpairs import blockwise_topk
x = clustered({n}, seed=3)
blockwise_topk(x, k=10, exclude_self=True)
# VmHWM belongs to this address space; ru_maxrss would carry over the forking parent's peak
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024)
"""


def section_d(n: int) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    code = RSS_CHILD.format(root=root, n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {"n": n, "peak_rss_mb": float(out.stdout.strip().splitlines()[-1]),
            "dense_matrix_mb": n * n * 4 / 2**20}


def section_e(n: int) -> dict:
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    g = torch.Generator().manual_seed(5)
    slots, learned = [(0, 1280), (1280, 1664)], 128
    x = clustered(n, 1664 + learned, seed=5)
    share = torch.rand(n, 1, generator=g)  # image share of each culture's items
    x[:, :1280] *= (0.9 * share).sqrt() / x[:, :1280].norm(dim=1, keepdim=True)
    x[:, 1280:1664] *= (0.9 * (1 - share)).sqrt() / x[:, 1280:1664].norm(dim=1, keepdim=True)
    x[:, 1664:] *= 0.1 ** 0.5 / x[:, 1664:].norm(dim=1, keepdim=True)
    mats = []
    for a, b in slots:  # symmetric positive definite, as `ops.whiten` makes them
        r = torch.randn(b - a, b - a, generator=g) / (b - a) ** 0.5
        mats.append(r @ r.T + 0.5 * torch.eye(b - a))
    plain = ModalityCosine(slots, learned=0.1).fit(x)
    white = ModalityCosine(slots, learned=0.1, whitening=mats).fit(x)

    def run(sim, rows):
        return blockwise_topk(rows, k=K, sim=sim, exclude_self=True)

    t_plain, _ = timed(lambda: run(plain, x))
    t_white, (v_white, _) = timed(lambda: run(white, x))
    t_once, (v_once, _) = timed(lambda: run(white.on_prepared(), white.prepare(x)))
    return {"n": n, "dim": x.shape[1], "plain_s": t_plain, "whitened_every_block_s": t_white,
            "whitened_once_s": t_once, "every_block_over_plain": t_white / t_plain,
            "once_over_plain": t_once / t_plain, "once_over_every_block": t_once / t_white,
            "max_score_difference": float((v_white - v_once).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller N (under 3 minutes)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    n_a, n_pf = (10000, 30000) if args.quick else (50000, 100000)
    n_map = 8192 if args.quick else 16384
    nprobes = [4, 8] if args.quick else [4, 8, 16]
    print(f"torch threads {torch.get_num_threads()}, d={D}, k={K}")
    a = section_a(n_a)
    print(f"\n(a) exact cosine top-{K}, N={n_a}")
    print(f"{'path':<36}{'Mpairs/s':>10}{'blockwise vs':>14}")
    paths = [("dense GEMM X@X.T (roofline)", a["gemm_pairs_per_s"]),
             ("blockwise_topk (symmetric)", a["blockwise_pairs_per_s"]),
             ("blockwise_topk (one-sided)", a["blockwise_one_sided_pairs_per_s"]),
             ("FAISS IndexFlatIP search", a["faiss_flat_pairs_per_s"]),
             ("sklearn cosine_similarity+argpart", a["sklearn_pairs_per_s"]),
             ("st paraphrase_mining_embeddings", a["st_paraphrase_mining_pairs_per_s"])]
    for name, v in paths:
        if v is None:
            print(f"{name:<36}{'not installed':>10}")
        else:
            print(f"{name:<36}{v / 1e6:>10.1f}{a['blockwise_pairs_per_s'] / v:>14.2f}")
    b = section_b(n_pf, nprobes)
    print(f"\n(b) pre-filtered top-{K}, N={n_pf} (exact: {b['exact_s']:.1f} s)")
    print(f"{'nprobe':>7}{'nlist':>7}{'recall@10':>11}{'pairs saved':>13}{'seconds':>9}{'speed-up':>10}")
    for r in b["runs"]:
        print(f"{r['nprobe']:>7}{r['nlist']:>7}{r['recall_at_10']:>11.3f}{r['pair_reduction']:>12.1f}x"
              f"{r['seconds']:>9.1f}{r['speedup']:>9.1f}x")
    c = section_c(n_pf)
    print("\n(c) time relative to cosine (same block); L1-like also vs torch.cdist(p=1)")
    for name, ratio in c["sim_time_vs_cosine"].items():
        extra = f"   vs cdist(p=1): {c['vs_cdist_l1'][name]:.2f}" if name in c["vs_cdist_l1"] else ""
        print(f"  {name:<16}{ratio:>8.2f}{extra}")
    print(f"  dimension_metric fit over {c['metric_fit']['cultures']} cultures' pairs: "
          f"{c['metric_fit']['seconds']:.2f} s")
    d = section_d(n_pf)
    print(f"\n(d) exact blockwise run at N={n_pf}: peak RSS {d['peak_rss_mb']:.0f} MB "
          f"(a dense N x N float32 matrix: {d['dense_matrix_mb']:.0f} MB)")
    e = section_e(n_map)
    print(f"\n(e) culture map (d={e['dim']}), exact blockwise top-{K}, N={n_map}")
    print(f"{'read-out':<36}{'seconds':>9}{'vs plain':>10}")
    for name, t in (("modality cosine, plain", e["plain_s"]),
                    ("whitened in every block", e["whitened_every_block_s"]),
                    ("whitened once (prepare)", e["whitened_once_s"])):
        print(f"{name:<36}{t:>9.1f}{t / e['plain_s']:>10.2f}")
    print(f"  once / every block {e['once_over_every_block']:.2f}; top-{K} scores differ by at "
          f"most {e['max_score_difference']:.1e}")
    best = max(b["runs"], key=lambda r: (r["recall_at_10"] >= 0.95, r["speedup"]))
    res = {
        "quick": args.quick, "section_a": a, "section_b": b, "section_c": c, "section_d": d,
        "section_e": e, "map_whitened_once_over_every_block": e["once_over_every_block"],
        "blockwise_vs_gemm": a["blockwise_pairs_per_s"] / a["gemm_pairs_per_s"],
        "blockwise_one_sided_vs_gemm": a["blockwise_one_sided_pairs_per_s"] / a["gemm_pairs_per_s"],
        "blockwise_vs_faiss_flat": a["blockwise_pairs_per_s"] / a["faiss_flat_pairs_per_s"],
        "blockwise_vs_sklearn": (a["blockwise_pairs_per_s"] / a["sklearn_pairs_per_s"]
                                 if a["sklearn_pairs_per_s"] else None),
        "prefilter_recall_at_10": best["recall_at_10"],
        "prefilter_pair_reduction": best["pair_reduction"],
        "prefilter_speedup": best["speedup"],
        "peak_rss_mb": d["peak_rss_mb"],
        "sim_time_vs_cosine": c["sim_time_vs_cosine"],
    }
    print(f"\nsummary: blockwise/GEMM {res['blockwise_vs_gemm']:.2f}, /FAISS "
          f"{res['blockwise_vs_faiss_flat']:.2f}, /sklearn {res['blockwise_vs_sklearn'] or 0:.2f}; "
          f"pre-filter (nprobe {best['nprobe']}) recall {best['recall_at_10']:.3f}, "
          f"{best['pair_reduction']:.1f}x fewer pairs, {best['speedup']:.1f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
