"""Mini-batch training: the sampler, the batch's reference, the one loop, TrainConfig."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig, ModalityGraph
from culturesim_ray.training.batch import (
    PassSampler,
    batch_reference,
    sample_batch,
    shard_rows,
    store_from_graphs,
)
from culturesim_ray.training.config import merge_train_config
from culturesim_ray.training.loop import Position, make_queues, train, validation_batch
from culturesim_ray.training.stages import param_groups
from culturesim_ray.training.step import reference_similarity


def _graphs(n_cultures: int, per: int, d: int = 8, seed: int = 0) -> dict[str, ModalityGraph]:
    from culturesim_ray.graph.knn import knn_edges

    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, m in enumerate(["image", "text"]):
        n = n_cultures * per
        culture = torch.arange(n) % n_cultures
        centres = torch.randn(n_cultures, d, generator=g)
        x = centres[culture] + 0.3 * torch.randn(n, d, generator=g) + j
        themes = torch.rand(n, 2, generator=g) < 0.5
        ei, _ = knn_edges(x, 4)
        out[m] = ModalityGraph(x, ei, culture, themes)
    return out


def _store(n_cultures: int = 6, per: int = 7):
    graphs = _graphs(n_cultures, per)
    return graphs, store_from_graphs(graphs, [f"c{i}" for i in range(n_cultures)], ["a", "b"])


def test_a_pass_seeds_every_shard_item_once_and_ranks_run_equal_steps():
    _, store = _store(5, 9)
    nc = store.node_culture()
    steps = PassSampler.steps_for(nc, [shard_rows(len(nc), r, 2) for r in range(2)], 3, 4)
    for rank in range(2):
        shard = shard_rows(len(nc), rank, 2)
        s = PassSampler(nc, shard, 3, 4, seed=1, rank=rank, steps_per_pass=steps)
        seen = np.concatenate([s.seeds(i) for i in range(steps)])
        assert set(seen.tolist()) == set(shard.tolist())  # every shard item, nothing else
        batch = s.seeds(0)
        assert len(np.unique(nc[batch])) <= 3
        again = PassSampler(nc, shard, 3, 4, seed=1, rank=rank, steps_per_pass=steps)
        assert np.array_equal(again.seeds(steps + 1), s.seeds(steps + 1))  # a step's seeds
        assert not np.array_equal(s.seeds(0), s.seeds(steps))  # a new pass reshuffles


def test_chunk_shards_partition_the_items_and_split_the_steps_evenly():
    rng = np.random.default_rng(0)
    _, store = _store(40, 9)
    store.seedable = np.sort(rng.choice(store.num_items, 600, replace=False))  # a split
    nc = store.node_culture()
    m, b = 4, 5
    one = store.shards(1, m)
    assert np.array_equal(one[0], store.seedable)
    for world in (2, 3):
        shards = store.shards(world, m)
        every = np.concatenate(shards)
        assert np.array_equal(np.sort(every), store.seedable)  # nothing lost, nothing twice
        for c in range(40):  # a worker's share of a culture: whole even chunks of it
            n_c = int((nc[store.seedable] == c).sum())
            k = -(-n_c // m)
            sizes = [int((nc[s] == c).sum()) for s in shards]
            taken = [len(range(r, k, world)) for r in range(world)]  # chunks dealt to r
            assert sorted(sizes) == sorted(
                sum(len(p) for p in np.array_split(np.arange(n_c), k)[(r - c) % world::world])
                for r in range(world)), (c, sizes)
            assert all(-(-sz // m) == t for sz, t in zip(sorted(sizes), sorted(taken), strict=True))
        chunks = sum(PassSampler.chunks_of(nc, s, m) for s in shards)
        assert chunks == PassSampler.chunks_of(nc, one[0], m)  # as many chunks as one worker
        per_item = [store.seedable[r::world] for r in range(world)]
        assert chunks < sum(PassSampler.chunks_of(nc, s, m) for s in per_item)
        assert PassSampler.steps_for(nc, shards, b, m) <= -(-PassSampler.steps_for(
            nc, one, b, m) // world) + 1


def test_steps_carry_even_chunks_so_lockstep_workers_wait_little():
    _, store = _store(41, 50)  # cultures of 100 nodes: 32, 32, 32 and 4 in runs of m
    nc = store.node_culture()
    m, b = 32, 8
    work = {}
    for world in (1, 2):
        shards = store.shards(world, m)
        steps = PassSampler.steps_for(nc, shards, b, m)
        samplers = [PassSampler(nc, s, b, m, 0, r, steps) for r, s in enumerate(shards)]
        for s in samplers:
            s.seeds(0)
            sizes = np.array([len(c) for c in s._chunks])
            chunk_culture = np.array([nc[c[0]] for c in s._chunks])
            for c in np.unique(chunk_culture):  # a culture's chunks: even, at most m
                mine = sizes[chunk_culture == c]
                assert mine.max() <= m and mine.max() - mine.min() <= 1
        per_step = np.array([[len(s.seeds(j)) for j in range(steps)] for s in samplers])
        # the workers' steps hold the same number of chunks, give or take one
        assert np.abs(per_step - per_step[0]).max() <= m, per_step
        for s in samplers:  # a pass's chunks dealt evenly over its steps, b at most
            n = np.diff(s._bounds)
            assert n.max() <= b and n.max() - n.min() <= 1 and n.sum() == len(s._chunks)
        work[world] = per_step.max(axis=0).sum()  # a lockstep step lasts its largest
    assert work[2] <= 0.51 * work[1]  # full last steps (wrapped chunks) made it 0.52


def test_batch_reference_matches_the_full_reference_in_float64():
    graphs, store = _store()
    cultures = np.array([4, 0, 2])
    full = reference_similarity(graphs, 6)
    got = batch_reference(store, cultures, "general")
    assert torch.allclose(got, full[cultures][:, cultures], atol=1e-6)
    theme = reference_similarity(graphs, 6, theme=1)
    assert torch.allclose(batch_reference(store, cultures, "b"), theme[cultures][:, cultures],
                          atol=1e-6)


def test_a_batch_pools_its_seeds_only_and_keeps_only_sampled_edges():
    _, store = _store()
    seeds = np.array([0, 1, 2, 50])
    b = sample_batch(store, seeds, 4, (3, 2), np.random.default_rng(0), ["general", "a"])
    ids = b.culture_ids.tolist()
    assert sorted(c for c in ids if c >= 0) == sorted(set(store.node_culture()[seeds].tolist()))
    pooled = sum(int(g.pool.sum()) for g in b.graphs.values())
    assert pooled == len(seeds)
    for g in b.graphs.values():
        assert (g.culture[~g.pool] == -1).all() and (g.culture[g.pool] >= 0).all()
        assert g.edge_index.numel() == 0 or int(g.edge_index.max()) < g.x.shape[0]
    assert b.references["general"].shape == (4, 4)


class _Largest(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_a_step_over_10000_cultures_allocates_nothing_of_size_c_by_c():
    c = 10_000
    graphs = _graphs(c, 2, d=4)
    store = store_from_graphs(graphs, [f"c{i}" for i in range(c)], ["a", "b"])
    cfg = merge_train_config({"stages": [[1, 1]], "steps_per_epoch": 2, "hidden": 16,
                              "out_dim": 8, "batch_cultures": 32, "items_per_culture": 2,
                              "queue_size": 64})
    model = CultureSim(CultureSimConfig(store.in_dims, ["a", "b"], hidden=16, out=8,
                                        raw_weight=0.9))
    key = copy.deepcopy(model)
    queues = make_queues(model, 64)
    opt = torch.optim.AdamW(param_groups(model, 1, cfg.stages_cfg))
    with _Largest() as probe:
        pos = train(model, key, queues, opt, store, cfg)
    assert pos.step == 2
    assert 0 < probe.largest < c * c // 100, probe.largest  # bounded by the batch, not C^2


def _setup(cfg, store):
    torch.manual_seed(0)
    model = CultureSim(CultureSimConfig(store.in_dims, ["a", "b"], hidden=16, out=8,
                                        raw_weight=0.9, dropout=0.0))
    key = copy.deepcopy(model)
    queues = make_queues(model, 32)
    opt = torch.optim.AdamW(param_groups(model, 1, cfg.stages_cfg))
    return model, key, queues, opt


def test_resuming_from_a_position_gives_the_uninterrupted_run():
    _, store = _store(6, 8)
    cfg = merge_train_config({"stages": [[1, 1], [2, 1], [3, 2]], "steps_per_epoch": 2,
                              "batch_cultures": 4, "items_per_culture": 3})
    val = validation_batch(store, cfg, ["general", "a", "b"])
    model, key, queues, opt = _setup(cfg, store)
    whole = train(model, key, queues, opt, store, cfg, val=val)

    saved = {}

    def stop_after_first(pos, _metrics):
        if "state" not in saved:
            saved["state"] = copy.deepcopy((m2.state_dict(), k2.state_dict(),
                                            {h: q.state_dict() for h, q in q2.items()},
                                            o2.state_dict(), pos.to_dict()))
    m2, k2, q2, o2 = _setup(cfg, store)
    train(m2, k2, q2, o2, store, cfg, val=val, on_epoch=stop_after_first)
    m3, k3, q3, o3 = _setup(cfg, store)
    ms, ks, qs, os_, ps = saved["state"]
    m3.load_state_dict(ms)
    k3.load_state_dict(ks)
    for h, q in q3.items():
        q.load_state_dict(qs[h])
    o3.load_state_dict(os_)
    resumed = train(m3, k3, q3, o3, store, cfg, Position.from_dict(ps), val=val)
    assert resumed.step == whole.step
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in whole.history], rel=1e-5)
    for a, b in zip(model.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_merge_train_config_layers_yaml_then_flags_and_names_unknown_keys():
    cfg = merge_train_config({"model": {"hidden": 48}, "batch": {"fanouts": [4, 2]}},
                             {"hidden": 32, "steps_per_epoch": None, "num_workers": 3})
    assert cfg.model.hidden == 32 and cfg.batch.fanouts == (4, 2) and cfg.num_workers == 3
    assert cfg.steps_per_epoch == 10  # a flag not given keeps the default
    assert merge_train_config(cfg.to_dict()) == cfg
    assert cfg.model.map_learned == 0.1  # the culture map's default read-out
    assert merge_train_config({"map_learned": 1.0}).model.map_learned == 1.0  # the flag's alias
    assert cfg.model.map_learned_share == 0.05
    assert merge_train_config({"map_learned_share": 0.0}).model.map_learned_share == 0.0
    with pytest.raises(ValueError, match="unknown key 'hiden'"):
        merge_train_config({"hiden": 3})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\] in model"):
        merge_train_config({"model": {"widht": 3}})
    with pytest.raises(ValueError, match="stages must be"):
        merge_train_config({"stages": [[4, 1]]})
