"""Text -> image retrieval in the shared image-text space (issue 17, deliverable 2).

On the packaged pairs (Twemoji PNGs captioned with their Unicode names, plus the
project's flags; `culturesim_ray.encoders.align_data`), each split holds out
pairs never trained on; every caption (MiniLM) queries the held-out images and
recall@1/@10 is the share whose own image ranks in the top k. Compared, on the
same split and features:

- aligned: `train_alignment` (symmetric InfoNCE, learnt temperature; the
  `culturesim align` defaults) on the training pairs;
- unaligned: the raw EfficientNet features through a fixed random Gaussian
  projection 1280 -> 384 (no alignment at all: what comparing the two encoders'
  vectors amounts to without one; a 1280-d image vector cannot meet a 384-d
  text vector otherwise);
- least squares: a ridge map from the raw features to the caption vectors fitted
  on the same training pairs (lambda picked on a validation cut of them): an
  alignment without the contrastive loss, the stronger non-contrastive baseline;
- chance: k / N.

    python -m benchmarks.align [--quick] [--json PATH] [--cache FEATURES.npz]

--quick: 400 pairs, 2 splits (the image forward passes are most of the time);
--cache: keep the features between runs (written when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _features(pairs: list[tuple[str, str]], cache: str | None) -> tuple[np.ndarray, np.ndarray]:
    key = np.array([f"{u}\t{c}" for u, c in pairs])
    if cache and os.path.exists(cache):
        data = np.load(cache)
        if data["key"].shape == key.shape and (data["key"] == key).all():
            return data["image"], data["text"]
    from culturesim_ray.encoders import registry
    from culturesim_ray.encoders.align_data import pair_features

    feats, texts, kept = pair_features(pairs, registry.build_encoder("efficientnet"),
                                       registry.build_encoder("minilm"),
                                       log=lambda m: print(f"  {m}", file=sys.stderr))
    if len(kept) != len(pairs):
        raise RuntimeError(f"{len(pairs) - len(kept)} packaged images did not decode")
    if cache:
        np.savez(cache, key=key, image=feats, text=texts)
    return feats, texts


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ridge(x: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ t)


def _ridge_fit(x: np.ndarray, t: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Ridge map with lambda chosen by recall@10 on a 20 % validation cut."""
    from culturesim_ray.encoders.align_data import recall_at, split

    fit, val = split(len(x), 0.2, seed + 1000)
    best = max((recall_at(_unit(x[val] @ _ridge(x[fit], t[fit], lam)), t[val], (10,))[10], -lam)
               for lam in (0.01, 0.1, 1.0, 10.0, 100.0))
    return _ridge(x, t, -best[1]), -best[1]


def run(quick: bool = False, cache: str | None = None, splits: int | None = None
        ) -> dict[str, object]:
    import torch

    from culturesim_ray.encoders.align import AlignConfig, train_alignment
    from culturesim_ray.encoders.align_data import packaged_pairs, recall_at, split

    pairs = packaged_pairs()
    if quick:
        keep = np.sort(np.random.default_rng(0).permutation(len(pairs))[:400])
        pairs = [pairs[i] for i in keep]
    started = time.time()
    x, t = _features(pairs, cache)
    encode_s = time.time() - started
    t = _unit(t)
    splits = splits or (2 if quick else 5)
    cfg = AlignConfig()
    rows: dict[str, list[dict[int, float]]] = {"aligned": [], "unaligned": [], "least_squares": []}
    lams, train_s = [], []
    n_test = len(pairs) // 5
    for s in range(splits):
        tr, te = split(len(pairs), n_test, seed=s)
        t0 = time.time()
        model, _ = train_alignment(x[tr], t[tr], AlignConfig(**{**cfg.__dict__, "seed": s}))
        train_s.append(time.time() - t0)
        with torch.no_grad():
            aligned = model(torch.from_numpy(x[te])).numpy()
        rows["aligned"].append(recall_at(aligned, t[te]))
        rand = np.random.default_rng(s).normal(size=(x.shape[1], t.shape[1])).astype(np.float32)
        rows["unaligned"].append(recall_at(_unit(x[te] @ rand), t[te]))
        w, lam = _ridge_fit(x[tr], t[tr], s)
        lams.append(lam)
        rows["least_squares"].append(recall_at(_unit(x[te] @ w), t[te]))
    result: dict[str, object] = {
        "pairs": len(pairs), "held_out": n_test, "splits": splits, "quick": quick,
        "config": cfg.__dict__, "ridge_lambdas": lams,
        "encode_seconds": round(encode_s, 1), "train_seconds_mean": round(float(np.mean(train_s)), 2),
        "chance": {"1": 1 / n_test, "10": 10 / n_test}}
    for name, rs in rows.items():
        result[name] = {str(k): {"mean": float(np.mean([r[k] for r in rs])),
                                 "sd": float(np.std([r[k] for r in rs]))} for k in (1, 10)}
    return result


def table(r: dict) -> str:
    lines = [f"text -> image on {r['held_out']} held-out pairs of {r['pairs']} "
             f"(mean ± sd over {r['splits']} splits)",
             f"{'space':<16}{'recall@1':>16}{'recall@10':>16}{'R@10 / chance':>16}"]
    for name in ("aligned", "least_squares", "unaligned"):
        m = r[name]
        lines.append(f"{name:<16}{m['1']['mean']:>10.3f} ± {m['1']['sd']:.3f}"
                     f"{m['10']['mean']:>10.3f} ± {m['10']['sd']:.3f}"
                     f"{m['10']['mean'] / r['chance']['10']:>15.1f}x")
    lines.append(f"{'chance':<16}{r['chance']['1']:>16.4f}{r['chance']['10']:>16.4f}{1.0:>15.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--cache", help="features .npz (reused when it matches the pairs)")
    ap.add_argument("--splits", type=int)
    args = ap.parse_args(argv)
    r = run(args.quick, args.cache, args.splits)
    print(table(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    ok = (r["aligned"]["10"]["mean"] >= 3 * r["chance"]["10"]
          and r["aligned"]["10"]["mean"] > r["unaligned"]["10"]["mean"])
    print("done-when (R@10 >= 3x chance and > unaligned):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
