"""Image reading: large JPEGs decoded at a reduced size (`load_image(draft=True)`)
against decoded in full, on the same files, in one run.

The files: the two photographs scikit-learn ships (china.jpg, flower.jpg, 640x427)
and the demo's 12 flags, each enlarged (Lanczos) to a camera's size, short side
3,000 px (12 MP at 4:3), with sensor-like noise (sigma 4 grey levels), saved as
JPEG quality 90; `--quick` uses a short side of 1,500 px. Per file, both readings
go through the same `load_image` and the same EfficientNet-Lite0 forward pass (one
thread). Printed: decode ms per image (median of `--repeats`), the forward pass's
ms per image, their sum, the ratio full / drafted, and how far the drafted
reading moves the features (cosine between the two feature vectors; max abs pixel
difference of the 224x224 input), beside the cosines between different files' features
(how far apart distinct images sit).

    python benchmarks/images.py [--quick] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def camera_jpegs(short_side: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes): the sample photographs and the flags at `short_side`."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    import culturesim_ray

    rng = np.random.default_rng(seed)
    sources = [(Path(f).name, Image.fromarray(a))
               for f, a in zip(load_sample_images().filenames, load_sample_images().images,
                               strict=True)]
    flags = sorted((Path(culturesim_ray.__file__).parent / "data" / "flags").glob("*.png"))
    sources += [(f.name, Image.open(f).convert("RGB")) for f in flags]
    out = []
    for name, img in sources:
        w, h = img.size
        size = (round(w * short_side / min(w, h)), round(h * short_side / min(w, h)))
        big = np.asarray(img.resize(size, Image.LANCZOS), dtype=np.float32)
        big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "JPEG", quality=90)
        out.append((name, buf.getvalue()))
    return out


def run(short_side: int, repeats: int) -> dict:
    import torch

    from culturesim_ray.encoders.image import EfficientNetEncoder, load_image

    torch.set_num_threads(1)
    files = camera_jpegs(short_side)
    enc = EfficientNetEncoder(decode_threads=1)

    def timed(draft: bool) -> tuple[float, list[np.ndarray]]:
        per_pass, arrays = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            arrays = [load_image(data, draft=draft) for _, data in files]
            per_pass.append((time.perf_counter() - t0) / len(files))
        return statistics.median(per_pass), arrays

    # alternate the two sides so drift in the machine's speed hits both
    full_s, full = timed(False)
    draft_s, drafted = timed(True)
    full_s2, _ = timed(False)
    draft_s2, _ = timed(True)
    full_s, draft_s = statistics.mean([full_s, full_s2]), statistics.mean([draft_s, draft_s2])

    feats = {}
    forward = []
    for key, arrays in (("full", full), ("draft", drafted)):
        out = np.zeros((len(arrays), enc.dim), dtype=np.float32)
        t0 = time.perf_counter()
        enc._forward(out, list(range(len(arrays))), arrays)
        forward.append((time.perf_counter() - t0) / len(arrays))
        feats[key] = out
    fwd = statistics.mean(forward)
    cos = np.sum(feats["full"] * feats["draft"], axis=1)
    between = feats["full"] @ feats["full"].T  # how far apart different files sit
    others = between[~np.eye(len(between), dtype=bool)]
    pix = [float(np.abs(a - b).max()) for a, b in zip(full, drafted, strict=True)]
    mb = statistics.mean(len(d) for _, d in files) / 1e6
    return {"short_side": short_side, "files": len(files), "mean_file_mb": round(mb, 2),
            "decode_ms_full": round(full_s * 1e3, 1), "decode_ms_draft": round(draft_s * 1e3, 1),
            "decode_ratio_full_over_draft": round(full_s / draft_s, 2),
            "forward_ms": round(fwd * 1e3, 1),
            "image_ms_full": round((full_s + fwd) * 1e3, 1),
            "image_ms_draft": round((draft_s + fwd) * 1e3, 1),
            "image_ratio_full_over_draft": round((full_s + fwd) / (draft_s + fwd), 2),
            "feature_cosine_min": round(float(cos.min()), 5),
            "feature_cosine_median": round(float(np.median(cos)), 5),
            "other_files_cosine_max": round(float(others.max()), 5),
            "other_files_cosine_median": round(float(np.median(others)), 5),
            "input_max_abs_diff": round(max(pix), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short side 1,500 px only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    sides = [1500] if args.quick else [1500, 3000]
    rows = [run(s, args.repeats) for s in sides]
    print("| short side px | files | MB each | decode ms full | decode ms drafted | x | "
          "forward ms | image ms full / drafted | x | feature cos min / median | "
          "other files' cos median / max | input max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['short_side']:,} | {r['files']} | {r['mean_file_mb']} | "
              f"{r['decode_ms_full']} | {r['decode_ms_draft']} | "
              f"{r['decode_ratio_full_over_draft']} | {r['forward_ms']} | "
              f"{r['image_ms_full']} / {r['image_ms_draft']} | "
              f"{r['image_ratio_full_over_draft']} | {r['feature_cosine_min']} / "
              f"{r['feature_cosine_median']} | {r['other_files_cosine_median']} / "
              f"{r['other_files_cosine_max']} | {r['input_max_abs_diff']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
