"""Every GPU path of the project, checked in one run against float64 CPU references.

What it proves (each a row of the printed table; exit code 1 when any row fails):

1. sim.<name>: every S1 similarity (`ops.similarity.NAMES`, plus the critical-dimension
   share and `allpairs --metric`'s `ops.metric.DimensionMetric`) in float32 on the device
   vs float64 on the CPU ("learned" and the metric fitted on the CPU).
2. allpairs.<sim>: `blockwise_topk` on the device vs the float64 dense top-k (same
   scores; same neighbours up to ties); pairs/s vs plain blocked GEMM on the device.
3. train.*: two mini-batch `moco_step`s (`training.batch`, as the train job's loop) of a
   small two-modality CultureSim on the CPU and on the device from the same state:
   same losses, gradients and parameters (a device mismatch is a FAIL row). Step time.
   train.loop_*: the train job's loop itself at its default batch on a synthetic
   store (validation and early stopping included), CPU vs device: the first step's
   losses, finite losses, and the device's step-time speed-up over the CPU, at the
   default batch and at 4x its cultures.
4. lstm.*: the melody LSTM inference form (forward, streaming `step`, cuDNN `nn.LSTM`,
   `SequenceEncoder.embed_ids`) in float32 on the device vs float64 on the CPU.
5. lstm.train.*: two melody-LSTM `train_step`s on the device (float32) vs the CPU
   (float64) from the same state: losses, gradients, parameters. Step time.
6. enc.*: the embed job's text (MiniLM) and image (EfficientNet-Lite0) encoders in
   float32 on the device vs float64 on the CPU; texts/s and images/s.

The checks live beside this entry point, one file a group: `gpu_kernels.py` (1-2),
`gpu_train.py` (3), `gpu_lstm.py` (4-5), `gpu_encoders.py` (6); `gpu_rows.py` holds the
row and the comparison they share.

Needs only torch, torch_geometric, numpy, transformers and pillow (no ray, faiss,
music21, pydantic, fastapi, s3fs). The encoders' weights come from their packages, or,
on a machine without them, from a folder made here and carried there (64 MiB at most):

    python benchmarks/gpu_check.py --make-assets .gpu_assets       # here, once
    python benchmarks/gpu_check.py [--device cuda] [--quick] [--json PATH] [--assets .gpu_assets]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.gpu_encoders import check_encoders, make_assets  # noqa: E402
from benchmarks.gpu_kernels import check_allpairs, check_similarities, check_throughput  # noqa: E402
from benchmarks.gpu_lstm import check_lstm, check_lstm_train  # noqa: E402
from benchmarks.gpu_rows import Row, failed  # noqa: E402
from benchmarks.gpu_train import check_train, check_train_loop  # noqa: E402

# --- main --------------------------------------------------------------------------

def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--assets", type=Path, help="encoder weights made by --make-assets "
                   "(default: the installed weight packages)")
    p.add_argument("--make-assets", type=Path, metavar="DIR",
                   help="write the encoders' weights for a machine without the packages; exit")
    args = p.parse_args(argv)
    if args.make_assets:
        print(f"assets in {make_assets(args.make_assets)}")
        return 0
    device = torch.device(args.device)
    t0 = time.perf_counter()
    rows: list[Row] = []
    perf: dict[str, Any] = dict.fromkeys(
        ["allpairs_pairs_per_s", "gemm_pairs_per_s", "allpairs_over_gemm", "train_step_s",
         "lstm_train_step_s", "minilm_texts_per_s", "efficientnet_images_per_s",
         "efficientnet_images_per_s_1thread",
         "loop_step_s", "loop_step_cpu_s", "loop_speedup"])
    for group, check in [("sim", check_similarities), ("allpairs", check_allpairs),
                         ("allpairs.throughput", check_throughput), ("train", check_train),
                         ("train.loop", check_train_loop),
                         ("lstm", check_lstm), ("lstm.train", check_lstm_train),
                         ("enc", lambda d, q: check_encoders(d, q, args.assets))]:
        try:  # a check that cannot even start (an import, a crash) is a FAIL row
            got, extra = check(device, args.quick)
            rows += got
            perf.update(extra)
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(group, exc))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{'quick' if args.quick else 'full'}, {time.perf_counter() - t0:.1f} s")
    print(f"{'check':<28}{'max_abs':>10}{'max_err':>10}{'tol':>10}  ok    info")
    for r in rows:
        print(f"{r.name:<28}{fmt(r.max_abs):>10}{fmt(r.max_err):>10}{fmt(r.tol):>10}  "
              f"{'PASS' if r.ok else 'FAIL'}  {r.info}")
    ok = all(r.ok for r in rows)
    print("ALL PASS" if ok else f"FAILED: {', '.join(r.name for r in rows if not r.ok)}")
    if args.json:
        out = {"device": str(device), "device_name": name, "torch": torch.__version__,
               "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "quick": args.quick,
               "checks": [asdict(r) for r in rows], **perf, "ok": ok}
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
