"""gpu_check's training rows: two `moco_step`s of a small fusion model on the CPU and
on the device from the same state, and the train job's loop itself at its default
batch (CPU vs device)."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_rows import CPU, F64, Row, compare, failed, timed

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

    from benchmarks.train_scale import synthetic
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
