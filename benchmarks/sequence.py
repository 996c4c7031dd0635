"""LSTM inference form vs torch.nn.LSTM, streaming one step at a time, on CPU.

Both run the same weights (the project's melody LSTM shape by default:
input 64, hidden 128, 2 layers) under `torch.inference_mode()`, fed one time
step per call with the state carried, as a streaming service would:
- torch:     `lstm(x_t[:, None], state)`
- inference: `LSTMInference.step(x_t, state)`
Items/s counts time steps of one sequence (batch 1) or of 64 sequences.

    python benchmarks/sequence.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from culturesim_ray.encoders.lstm_inference import LSTMInference  # noqa: E402


def stream_torch(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    state = None
    outs = []
    with torch.inference_mode():
        for t in range(x.shape[1]):
            o, state = lstm(x[:, t:t + 1], state)
            outs.append(o[:, 0])
    return torch.stack(outs, 1)


def stream_inference(inf: LSTMInference, x: torch.Tensor) -> torch.Tensor:
    state = None
    outs = []
    for t in range(x.shape[1]):
        h, state = inf.step(x[:, t], state)
        outs.append(h)
    return torch.stack(outs, 1)


def bench(batch: int, steps: int, lstm: torch.nn.LSTM, inf: LSTMInference, repeat: int) -> dict:
    x = torch.randn(batch, steps, lstm.input_size)
    stream_torch(lstm, x[:, :5])
    stream_inference(inf, x[:, :5])
    best_t = best_i = float("inf")
    for _ in range(repeat):  # interleaved, best of each
        t0 = time.perf_counter()
        a = stream_torch(lstm, x)
        best_t = min(best_t, time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = stream_inference(inf, x)
        best_i = min(best_i, time.perf_counter() - t0)
    return {"batch": batch, "steps": steps, "torch_items_per_s": batch * steps / best_t,
            "inference_items_per_s": batch * steps / best_i, "ratio": best_t / best_i,
            "max_abs_err": float((a - b).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(args.input, args.hidden, num_layers=args.layers, batch_first=True).eval()
    inf = LSTMInference(lstm)
    steps, repeat = (300, 3) if args.quick else (2000, 5)
    rows = [bench(1, steps, lstm, inf, repeat), bench(64, steps // 2, lstm, inf, repeat)]
    print(f"\nstreaming LSTM steps, input {args.input}, hidden {args.hidden}, "
          f"{args.layers} layers, torch threads {torch.get_num_threads()}")
    print(f"{'batch':>6}{'torch items/s':>16}{'inference items/s':>20}{'ratio':>8}{'max |diff|':>12}")
    for r in rows:
        print(f"{r['batch']:>6}{r['torch_items_per_s']:>16.0f}{r['inference_items_per_s']:>20.0f}"
              f"{r['ratio']:>8.2f}{r['max_abs_err']:>12.2e}")
    res = {"ratio_batch1": rows[0]["ratio"], "ratio_batch64": rows[1]["ratio"],
           "max_abs_err": max(r["max_abs_err"] for r in rows), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
