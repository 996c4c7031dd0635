"""gpu_check's melody-LSTM rows: the inference form (forward, streaming step, cuDNN,
`SequenceEncoder`) and two `train_step`s, float32 on the device vs float64 on the CPU."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_rows import CPU, F64, Row, compare, failed, timed

# --- 4. melody LSTM inference form ---------------------------------------------------

def check_lstm(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from culturesim_ray.encoders import sequence as melody
    from culturesim_ray.encoders.lstm_inference import LSTMInference
    from culturesim_ray.encoders.music import PAD, Vocabulary

    vocab_size, batch, steps = 40, 8, (24 if quick else 64)
    torch.manual_seed(4)
    model = melody.MelodyLSTM(melody.LSTMConfig(vocab_size, 16, hidden=32, layers=2)).eval()
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=gen).tolist()
    seqs = [torch.randint(4, vocab_size, (n,), generator=gen).tolist() for n in lengths]
    ids = melody.pad_batch(seqs)
    m64 = copy.deepcopy(model).double()
    ref_inf = LSTMInference(m64.lstm)
    ref_out, (ref_h, ref_c) = ref_inf(m64.embed.weight.detach()[ids])
    mdev = copy.deepcopy(model).to(device)
    inf = LSTMInference(mdev.lstm)
    emb = mdev.embed.weight.detach()[ids.to(device)]
    rows: list[Row] = []

    def forward() -> Tensor:
        out, (h, c) = inf(emb)
        return torch.cat([out.reshape(-1), h.reshape(-1), c.reshape(-1)])

    def stream() -> Tensor:
        state, outs = None, []
        for s in range(emb.shape[1]):
            h, state = inf.step(emb[:, s], state)
            outs.append(h)
        return torch.stack(outs, dim=1)

    def cudnn(tf32: bool = False) -> Tensor:
        saved = torch.backends.cudnn.allow_tf32  # cuDNN RNNs may use TF32 by default
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            with torch.no_grad():
                return mdev.lstm(emb)[0]
        finally:
            torch.backends.cudnn.allow_tf32 = saved

    def encoder() -> Tensor:
        with tempfile.TemporaryDirectory() as tmp:
            melody.save_model(model, Vocabulary([f"t{i}" for i in range(vocab_size - 4)]), tmp)
            enc = melody.SequenceEncoder(tmp, device=str(device))
        return torch.from_numpy(enc.embed_ids(seqs))

    mask = (ids != PAD).unsqueeze(-1).to(F64)
    ref_emb = torch.nn.functional.normalize((ref_out * mask).sum(1) / mask.sum(1), dim=-1)
    checks = [("lstm.inference_forward", forward,
               torch.cat([ref_out.reshape(-1), ref_h.reshape(-1), ref_c.reshape(-1)])),
              ("lstm.inference_step", stream, ref_out), ("lstm.nn_lstm", cudnn, ref_out),
              ("lstm.sequence_encoder", encoder, ref_emb)]
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:  # the training default
        checks.append(("lstm.nn_lstm_tf32", lambda: cudnn(True), ref_out))
    for name, fn, ref in checks:
        tol = 1e-2 if name.endswith("tf32") else 1e-5
        try:
            rows.append(compare(name, fn(), ref, tol, info=f"B={batch} T={steps}"))
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(name, exc))
    return rows, {}


# --- 5. melody LSTM training step ----------------------------------------------------

def check_lstm_train(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Two `train_step`s of the melody LSTM (the step the plain loop and each Ray Train
    worker run; batches padded on the model's device, as the worker pads them) in
    float32 on the device vs float64 on the CPU from the same state: losses, the last
    step's gradients and the parameters. cuDNN's TF32 (its default for RNNs) off for
    the strict rows, on for a looser one. Then a step's time at the job's sizes."""
    from culturesim_ray.encoders import sequence as melody

    vocab_size, batch, steps = 40, 8, (24 if quick else 64)
    gen = torch.Generator().manual_seed(6)
    seqs = [torch.randint(4, vocab_size, (n,), generator=gen).tolist()
            for n in torch.randint(steps // 2, steps + 1, (2 * batch,), generator=gen).tolist()]
    torch.manual_seed(6)
    init = melody.MelodyLSTM(melody.LSTMConfig(vocab_size, 16, hidden=32, layers=2))

    def run(dev: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        model = copy.deepcopy(init).to(dev, dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
        losses = [melody.train_step(model, opt, melody.pad_batch(seqs[i:i + batch], dev))
                  for i in (0, batch)]
        flat = [torch.cat([t.detach().reshape(-1).to(CPU, F64) for t in ts])
                for ts in ([p.grad for p in model.parameters()], list(model.parameters()))]
        return torch.tensor(losses, dtype=F64), flat[0], flat[1]

    def cudnn_tf32(on: bool) -> Callable[[], tuple[Tensor, Tensor, Tensor]]:
        def go() -> tuple[Tensor, Tensor, Tensor]:
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = on
            try:
                return run(device, torch.float32)
            finally:
                torch.backends.cudnn.allow_tf32 = saved
        return go

    ref = run(CPU, F64)
    variants = [("lstm.train", cudnn_tf32(False), 1e-4)]
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:  # what the job runs
        variants.append(("lstm.train_tf32", cudnn_tf32(True), 1e-2))
    rows: list[Row] = []
    for name, fn, tol in variants:
        try:
            loss, grad, param = fn()
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(name, exc))
            continue
        rows += [compare(f"{name}.losses", loss, ref[0], tol, info=f"B={batch} T<={steps}, 2 steps"),
                 compare(f"{name}.grads", grad, ref[1], tol, scale=float(ref[1].abs().max()),
                         info="err / max|g|"),
                 compare(f"{name}.params", param, ref[2], tol, info="AdamW lr 1e-4")]
    # a step at the train job's sizes (LSTMConfig defaults, batch 16, tunes of 256 tokens)
    big = melody.MelodyLSTM(melody.LSTMConfig(200)).to(device)
    opt = torch.optim.AdamW(big.parameters(), lr=3e-3, weight_decay=1e-4)
    ids = torch.randint(4, 200, (16, 256), generator=gen).to(device)
    t = timed(lambda: melody.train_step(big, opt, ids), device, repeats=5)
    rows.append(Row("lstm.train_step_time", None, None, None, True,
                    f"{t * 1e3:.1f} ms/step (median; B=16 T=256 hidden 128)"))
    return rows, {"lstm_train_step_s": t}
