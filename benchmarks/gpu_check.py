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

Needs only torch, torch_geometric, numpy, transformers and pillow (no ray, faiss,
music21, pydantic, fastapi, s3fs). The encoders' weights come from their packages, or,
on a machine without them, from a folder made here and carried there (64 MiB at most):

    python benchmarks/gpu_check.py --make-assets .gpu_assets       # here, once
    python benchmarks/gpu_check.py [--device cuda] [--quick] [--json PATH] [--assets .gpu_assets]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from culturesim_ray.ops import similarity as S  # noqa: E402
from culturesim_ray.ops.allpairs import blockwise_topk  # noqa: E402
from culturesim_ray.ops.learned import LearnedSimilarity  # noqa: E402
from culturesim_ray.ops.metric import DimensionMetric  # noqa: E402

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


# --- 3. training step --------------------------------------------------------------

def make_graphs(dims: dict[str, int], cultures: int, themes: int, items: int,
                gen: torch.Generator) -> dict[str, Any]:
    from culturesim_ray.models.culturesim import ModalityGraph

    graphs = {}
    for mod, d in dims.items():
        culture = (torch.arange(items) % cultures)[torch.randperm(items, generator=gen)]
        x = torch.randn(cultures, d, generator=gen)[culture] + 0.7 * torch.randn(items, d,
                                                                                generator=gen)
        xn = torch.nn.functional.normalize(x, dim=1)
        sim = (xn @ xn.T).fill_diagonal_(-2.0)
        nbr = torch.topk(sim, 5, dim=1).indices  # kNN: an edge from each neighbour
        edge_index = torch.stack([nbr.reshape(-1), torch.arange(items).repeat_interleave(5)])
        graphs[mod] = ModalityGraph(x, edge_index, culture,
                                    torch.rand(items, themes, generator=gen) < 0.6)
    return graphs


def check_train(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
    from culturesim_ray.models.queue import MoCoQueue
    from culturesim_ray.training.step import StepConfig, moco_step

    themes, n_cult = ["dress", "food", "music"], 6
    cfg = CultureSimConfig(in_dims={"image": 24, "text": 32}, themes=themes, hidden=32, out=16,
                           heads=4, dropout=0.0, raw_weight=0.3)
    graphs = make_graphs(cfg.in_dims, n_cult, len(themes), 48 if quick else 96,
                         torch.Generator().manual_seed(3))
    import numpy as np

    from culturesim_ray.training.batch import sample_batch, store_from_graphs
    from culturesim_ray.training.loop import batch_to

    # the train job's mini-batches (built on the CPU, as the loop does, then moved)
    store = store_from_graphs(graphs, [f"c{i}" for i in range(n_cult)], themes)
    n_nodes = store.num_items
    batches = [sample_batch(store, np.arange(i % 2, n_nodes, 2), n_cult, (5, 3),
                            np.random.default_rng(i), ["general", *themes]) for i in range(2)]
    torch.manual_seed(0)
    init = CultureSim(cfg)
    init.set_centers(graphs)
    queues0 = {h: MoCoQueue(cfg.head_dim(h), 32) for h in ["general", *themes]}

    def setup(dev: torch.device) -> tuple[Any, ...]:
        model = copy.deepcopy(init).to(dev)
        queues = {h: copy.deepcopy(q).to(dev) for h, q in queues0.items()}
        g = [batch_to(b, dev) for b in batches]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        return model, copy.deepcopy(model), queues, g, opt, torch.Generator().manual_seed(7)

    def run(dev: torch.device, steps: int = 2) -> tuple[Tensor, dict[str, Tensor], Any]:
        model, key, queues, g, opt, gen = setup(dev)
        losses = []
        for i in range(steps):
            b = g[i % len(g)]
            out = moco_step(model, key, queues, b.graphs, n_cult, opt, StepConfig(), gen,
                            references=b.references, culture_ids=b.culture_ids)
            losses += [out[h] for h in sorted(out)]
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"key.{k}": v for k, v in key.state_dict().items()})
        state.update({f"queue.{h}": q.keys for h, q in queues.items()})
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        live = (model, key, queues, g, opt, gen)
        return torch.tensor(losses, dtype=F64), {"state": state, **grads}, live

    ref_loss, ref_t, _ = run(CPU)
    try:
        loss, got_t, live = run(device)
    except Exception as exc:  # noqa: BLE001 - e.g. CPU masks against device tensors
        return [failed("train.moco_step", exc)], {}
    flat = {k: v for k, v in got_t["state"].items() if v.is_floating_point()}
    ref_flat = {k: ref_t["state"][k] for k in flat}
    cat = [torch.cat([t.reshape(-1).to(CPU, F64) for t in d.values()]) for d in (flat, ref_flat)]
    names = [k for k in ref_t if k != "state"]
    gcat = [torch.cat([d[k].reshape(-1).to(CPU, F64) for k in names]) for d in (got_t, ref_t)]
    rows = [compare("train.losses", loss, ref_loss, 1e-3, info=f"{len(loss)} values, 2 steps"),
            compare("train.grads", gcat[0], gcat[1], 1e-3, scale=float(gcat[1].abs().max()),
                    info=f"{len(names)} tensors, err / max|g|"),
            compare("train.params", cat[0], cat[1], 1e-3, info="model, key model, queues")]
    model, key, queues, g, opt, gen = live
    t = timed(lambda: moco_step(model, key, queues, g[0].graphs, n_cult, opt, StepConfig(),
                                gen, references=g[0].references, culture_ids=g[0].culture_ids),
              device, repeats=5)
    rows.append(Row("train.step_time", None, None, None, True, f"{t * 1e3:.1f} ms/step (median)"))
    return rows, {"train_step_s": t}


def synthetic_store(n: int, c: int, device: torch.device, k: int = 10) -> Any:
    """An ItemStore as the graph stage writes it, without faiss: train_scale's
    synthetic items (a Gaussian cluster per culture, 2 themes), symmetrised exact kNN
    edges from the device."""
    import numpy as np
    from train_scale import synthetic

    from culturesim_ray.graph.sample import CSRGraph
    from culturesim_ray.training.batch import ItemStore, fill_means

    x, culture, themes = synthetic(n, c)
    v = torch.nn.functional.normalize(torch.from_numpy(x).to(device), dim=1)
    dst, src = [], []
    for r0 in range(0, n, 4096):  # each item's k nearest others feed it
        s = v[r0:r0 + 4096] @ v.T
        s[torch.arange(s.shape[0]), torch.arange(r0, r0 + s.shape[0])] = -2.0
        src.append(torch.topk(s, k, dim=1).indices.cpu().numpy().reshape(-1))
        dst.append(np.repeat(np.arange(r0, r0 + s.shape[0]), k))
    csr = CSRGraph.from_edges(np.concatenate(src), np.concatenate(dst), n, symmetric=True)
    store = ItemStore(["text"], {"text": x}, {"text": culture}, {"text": themes},
                      csr, ["similar"], [f"c{i}" for i in range(c)], ["a", "b"])
    fill_means(store)
    return store


def check_train_loop(device: torch.device, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """The train job's loop (`training.loop.train` from `init_training`, as each Ray
    Train worker runs it, validation batch and early stopping included) at the job's
    default batch (64 cultures x 32 items, fan-outs 10 and 5) on the CPU and on the
    device from the same state and batches: the first step's losses agree, every loss
    is finite, and the step times give the device's speed-up over this machine's CPU
    (all its cores)."""
    import dataclasses

    import numpy as np

    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.loop import init_training, train, validation_batch

    n, c, warm, steps = (6_000, 60, 2, 4) if quick else (40_000, 400, 3, 10)
    store = synthetic_store(n, c, device)
    nodes = np.arange(n)
    val_nodes = nodes[nodes % 10 == 0]
    train_store = dataclasses.replace(store, seedable=np.setdiff1d(nodes, val_nodes))
    val_store = dataclasses.replace(store, seedable=val_nodes)
    cfg = merge_train_config({"stages": [[3, 1]], "steps_per_epoch": warm + steps})
    # the job's model but dropout 0: its masks come from each device's own RNG
    mcfg = CultureSimConfig(store.in_dims, store.theme_names, raw_weight=0.9, dropout=0.0)
    heads = ["general", *store.theme_names]

    def run(dev: torch.device, batch_cultures: int | None = None) -> dict[str, Any]:
        rcfg = cfg if batch_cultures is None else merge_train_config(
            {**cfg.to_dict(), "batch": {**cfg.to_dict()["batch"], "batch_cultures": batch_cultures}})
        model, key, queues, opt = init_training(train_store, mcfg, rcfg, dev)
        val = validation_batch(val_store, rcfg, heads)
        times: list[float] = []
        losses: list[list[float]] = []
        last = [time.perf_counter()]

        def on_step(step: int, out: dict[str, float], _batch: Any) -> None:
            now = time.perf_counter()  # out's losses are Python floats: the step has synced
            if step >= warm:
                times.append(now - last[0])
            losses.append([out[h] for h in sorted(out)])
            last[0] = now

        pos = train(model, key, queues, opt, train_store, rcfg, val=val, device=dev,
                    on_step=on_step)
        return {"step_s": statistics.median(times), "losses": losses,
                "val": pos.history[-1]["val_loss"]}

    ref = run(CPU)
    got = ref if device == CPU else run(device)
    first = torch.tensor(got["losses"][0], dtype=F64)
    finite = all(np.isfinite(v) for row in got["losses"] for v in row)
    rows = [compare("train.loop_first_step", first, torch.tensor(ref["losses"][0], dtype=F64),
                    1e-3, info=f"{len(first)} losses; N={n} C={c}"),
            Row("train.loop_finite", None, None, None, bool(finite and np.isfinite(got["val"])),
                f"{len(got['losses'])} steps, validation loss {got['val']:.4f}")]
    speedup = ref["step_s"] / got["step_s"]
    rows.append(Row("train.loop_step_time", None, None, None, True,
                    f"{got['step_s'] * 1e3:.1f} ms/step on {device.type}, "
                    f"{ref['step_s'] * 1e3:.1f} on the CPU ({torch.get_num_threads()} threads): "
                    f"x{speedup:.2f}"))
    perf = {"loop_step_s": got["step_s"], "loop_step_cpu_s": ref["step_s"],
            "loop_speedup": speedup}
    if device != CPU:  # a step is mostly kernel launches at this batch: 4x the cultures
        big = 4 * cfg.batch.batch_cultures
        bg, bc = run(device, big), run(CPU, big)
        perf.update(loop_step_s_4x=bg["step_s"], loop_step_cpu_s_4x=bc["step_s"],
                    loop_speedup_4x=bc["step_s"] / bg["step_s"])
        rows.append(Row("train.loop_step_time_4x", None, None, None, True,
                        f"batch {big} cultures: {bg['step_s'] * 1e3:.1f} ms/step on "
                        f"{device.type}, {bc['step_s'] * 1e3:.1f} on the CPU: "
                        f"x{perf['loop_speedup_4x']:.2f}"))
    return rows, perf


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


# --- 6. corpus encoders -------------------------------------------------------------

ASSET_MINILM, ASSET_EFFNET = "minilm", "efficientnet-lite0.pt"
SAMPLE_TEXTS = [
    "Sushi and sake are served at a formal dinner in Kyoto.",
    "Flamenco dancing and the Spanish guitar.",
    "La baguette et le fromage se partagent au marché du dimanche.",
    "El tango nació en los barrios del puerto de Buenos Aires a fines del siglo XIX.",
    "Der Kölner Dom ist eine römisch-katholische Kirche im gotischen Baustil.",
    "A raga is a melodic framework for improvisation in Indian classical music. " * 12,
    "Nowruz", "The Great Wall stretches along the northern frontier.",
    # past 256 tokens: read in windows pooled over all their tokens (MiniLMEncoder.windows)
    "The Silk Road carried silk, spices and ideas between China and the Mediterranean. " * 30,
]


def make_assets(out: Path) -> Path:
    """The encoders' weights as the device machine needs them (it has no project
    packages, and at most 64 MiB travel): MiniLM's folder and EfficientNet-Lite0's
    state in float16 (44 + 9 MB; both sides of each check load the same rounded
    weights, so the check compares code paths, not weights), plus the
    efficientnet_lite_pytorch source. Run here; carry the folder."""
    import shutil

    import efficientnet_lite_pytorch
    from safetensors.torch import load_file, save_file

    from culturesim_ray.encoders.image import efficientnet_weights_path
    from culturesim_ray.encoders.text import minilm_path

    out.mkdir(parents=True, exist_ok=True)
    src = Path(minilm_path())
    dst = out / ASSET_MINILM
    shutil.copytree(src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "README*"))
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    state = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
               out / ASSET_EFFNET)
    pkg = Path(efficientnet_lite_pytorch.__file__).parent
    shutil.copytree(pkg, out / pkg.name, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return out


def sample_images(n: int, gen: torch.Generator) -> list[bytes]:
    """PNG files of several sizes and aspect ratios: smooth colour fields plus noise."""
    import io

    from PIL import Image

    out = []
    for i in range(n):
        h, w = [(224, 224), (300, 200), (160, 400), (512, 384)][i % 4]
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([xx, yy, (xx + yy) / 2]) * torch.rand(3, 1, 1, generator=gen)
        img = (base + 0.2 * torch.rand(3, h, w, generator=gen)).clamp(0, 1)
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def check_encoders(device: torch.device, quick: bool, assets: Path | None,
                   ) -> tuple[list[Row], dict[str, Any]]:
    """The embed job's text (MiniLM) and image (EfficientNet-Lite0) encoders in float32
    on the device vs the same weights in float64 on the CPU; cuDNN TF32 (its default
    for convolutions) off for the strict rows, on for a looser one. Throughput."""
    import numpy as np

    if assets is not None and str(assets) not in sys.path:
        sys.path.insert(0, str(assets))  # the carried efficientnet_lite_pytorch
    from culturesim_ray.encoders.image import EfficientNetEncoder, load_image
    from culturesim_ray.encoders.text import MiniLMEncoder

    text_path = str(assets / ASSET_MINILM) if assets else None
    image_path = str(assets / ASSET_EFFNET) if assets else None
    gen = torch.Generator().manual_seed(9)
    texts = SAMPLE_TEXTS if quick else SAMPLE_TEXTS * 4
    images = sample_images(6 if quick else 16, gen)
    rows: list[Row] = []
    perf: dict[str, Any] = {}

    ref_text = MiniLMEncoder("cpu", text_model=text_path)
    ref_text.model = ref_text.model.double()  # encode() pools in the model's float64
    want = torch.from_numpy(ref_text.encode(texts).vectors)
    enc = MiniLMEncoder(str(device), text_model=text_path)
    got = torch.from_numpy(enc.encode(texts).vectors)
    rows.append(compare("enc.minilm", got, want, 1e-4, info=f"{len(texts)} texts"))
    t = timed(lambda: enc.encode(texts * 8), device)
    perf["minilm_texts_per_s"] = 8 * len(texts) / t
    rows.append(Row("enc.minilm_throughput", None, None, None, True,
                    f"{perf['minilm_texts_per_s']:.0f} texts/s (chunks of {enc.chunk})"))

    img = EfficientNetEncoder(str(device), weights_path=image_path)
    ref_model = copy.deepcopy(img.model).to(CPU, F64)
    x = torch.from_numpy(np.stack([load_image(b) for b in images])).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref_model.extract_features(x.to(F64)).mean(dim=(2, 3)),
                                             dim=-1)

    def encode(tf32: bool) -> Tensor:
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            res = img.encode_bytes(images)
        finally:
            torch.backends.cudnn.allow_tf32 = saved
        if any(res.errors):
            raise RuntimeError(f"image errors: {res.errors}")
        return torch.from_numpy(res.vectors)

    variants = [("enc.efficientnet", False, 1e-4)]
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:  # what the job runs
        variants.append(("enc.efficientnet_tf32", True, 1e-2))
    for name, tf32, tol in variants:
        rows.append(compare(name, encode(tf32), want, tol, info=f"{len(images)} images"))
    many = images * (8 if device.type == "cuda" else 1)
    t = timed(lambda: img.encode_bytes(many), device)
    perf["efficientnet_images_per_s"] = len(many) / t
    threads, img.decode_threads = img.decode_threads, 1
    perf["efficientnet_images_per_s_1thread"] = len(many) / timed(lambda: img.encode_bytes(many),
                                                                  device)
    rows.append(Row("enc.efficientnet_throughput", None, None, None, True,
                    f"{perf['efficientnet_images_per_s']:.0f} images/s decoding in {threads} "
                    f"threads, {perf['efficientnet_images_per_s_1thread']:.0f} in 1"))
    return rows, perf


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
