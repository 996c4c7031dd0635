"""InfoNCE by hand, the MoCo queue (wrap-around, same-culture masking), momentum update."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from culturesim_ray.losses.info_nce import info_nce, nt_xent_value
from culturesim_ray.models.momentum import update_momentum
from culturesim_ray.models.queue import MoCoQueue


def unit(*rows):
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.norm(dim=1, keepdim=True)


def test_info_nce_equals_the_hand_computed_value():
    q = unit([1.0, 0.0])
    k = unit([0.8, 0.6])
    negs = unit([0.0, 1.0], [-1.0, 0.0], [0.6, -0.8])
    loss, logits = info_nce(q, k, negs, temperature=0.5)
    # by hand: pos = 0.8, negatives 0, -1, 0.6
    want = -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(0) + math.exp(-2) + math.exp(1.2)))
    assert float(loss) == pytest.approx(want, abs=1e-12)
    assert float(loss) == pytest.approx(nt_xent_value(0.8, [0.0, -1.0, 0.6], 0.5), abs=1e-12)
    assert logits.shape == (1, 4)


def test_masked_negatives_are_left_out():
    q = unit([1.0, 0.0])
    k = unit([0.8, 0.6])
    negs = unit([0.0, 1.0], [0.6, -0.8])
    mask = torch.tensor([[True, False]])
    loss, _ = info_nce(q, k, negs, temperature=0.5, neg_mask=mask)
    assert float(loss) == pytest.approx(nt_xent_value(0.8, [0.0], 0.5), abs=1e-12)


def test_hard_negatives_weigh_the_nearest_more():
    q = unit([1.0, 0.0])
    k = unit([0.8, 0.6])
    negs = unit([0.0, 1.0], [0.6, -0.8])
    plain, _ = info_nce(q, k, negs, 0.5)
    zero, _ = info_nce(q, k, negs, 0.5, hard_beta=0.0)
    hard, _ = info_nce(q, k, negs, 0.5, hard_beta=5.0)
    assert float(plain) == float(zero)
    assert float(hard) > float(plain)  # the near negative (0.6) now weighs more than 1
    # weights by hand: w = 2 * softmax(5 * [0, 0.6])
    w = torch.softmax(torch.tensor([0.0, 3.0], dtype=torch.float64), 0) * 2
    want = -math.log(math.exp(1.6) / (math.exp(1.6) + w[0] * math.exp(0) + w[1] * math.exp(1.2)))
    assert float(hard) == pytest.approx(float(want), abs=1e-12)


def test_queue_wraps_around_and_masks_same_culture():
    qu = MoCoQueue(dim=2, size=5)
    assert not qu.filled().any()
    qu.enqueue(torch.ones(3, 2), torch.tensor([0, 1, 2]))
    qu.enqueue(torch.full((4, 2), 2.0), torch.tensor([3, 4, 0, 1]))  # wraps: slots 3, 4, 0, 1
    assert qu.cultures.tolist() == [0, 1, 2, 3, 4]
    assert qu.keys[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]
    assert int(qu.ptr) == 2
    mask = qu.negative_mask(torch.tensor([0, 3]))
    assert mask.tolist() == [[False, True, True, True, True], [True, True, True, False, True]]
    qu.enqueue(torch.arange(14.0).view(7, 2), torch.arange(7))  # larger than the queue
    assert sorted(qu.cultures.tolist()) == [2, 3, 4, 5, 6]
    state = qu.state_dict()
    assert set(state) == {"keys", "cultures", "ptr"}  # persistent: in every checkpoint


def test_unfilled_slots_are_never_negatives():
    qu = MoCoQueue(dim=2, size=4)
    qu.enqueue(torch.ones(1, 2), torch.tensor([7]))
    assert qu.negative_mask(torch.tensor([1])).tolist() == [[True, False, False, False]]


def test_momentum_update():
    online = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(5.0)
    before = [p.clone() for p in target.parameters()]
    update_momentum(online, target, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert target[1].running_mean.tolist() == [5.0, 5.0]
    with pytest.raises(ValueError):
        update_momentum(online, target, 1.5)


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    qu = MoCoQueue(dim=2, size=8)
    qu.enqueue(torch.full((2, 2), float(rank)), torch.tensor([10 * rank, 10 * rank + 1]))
    torch.save({"cultures": qu.cultures, "keys": qu.keys, "ptr": qu.ptr}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _spawn_two(worker, tmp_path) -> None:
    """Run worker(rank, port, out) in two gloo processes on a free loopback port."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(tmp_path)), nprocs=2, join=True)


def test_queue_gathers_keys_from_every_worker(tmp_path):
    _spawn_two(_worker, tmp_path)
    a = torch.load(tmp_path / "0.pt", weights_only=True)
    b = torch.load(tmp_path / "1.pt", weights_only=True)
    # both workers hold the same queue: rank 0's keys, then rank 1's
    assert a["cultures"][:4].tolist() == [0, 1, 10, 11] == b["cultures"][:4].tolist()
    assert torch.equal(a["keys"], b["keys"]) and int(a["ptr"]) == 4


def _worker_all(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from culturesim_ray.training.step import enqueue_all

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    g = torch.Generator().manual_seed(rank)
    pending = {"general": (torch.randn(3, 4, generator=g), torch.tensor([rank, -1, 5 + rank])),
               "food": (torch.randn(3, 2, generator=g), torch.tensor([7, 8 + rank, -1]))}
    one = {h: MoCoQueue(dim=k.shape[1], size=8) for h, (k, _) in pending.items()}
    enqueue_all(one, pending)  # one collective for every head
    each = {h: MoCoQueue(dim=k.shape[1], size=8) for h, (k, _) in pending.items()}
    for h, (k, c) in pending.items():  # the per-head gathers it replaces
        each[h].enqueue(k, c)
    torch.save({h: (q.keys, q.cultures, q.ptr) for h, q in one.items()}, f"{out}/one{rank}.pt")
    torch.save({h: (q.keys, q.cultures, q.ptr) for h, q in each.items()}, f"{out}/each{rank}.pt")
    dist.destroy_process_group()


def test_one_gather_for_every_head_equals_a_gather_per_head(tmp_path):
    _spawn_two(_worker_all, tmp_path)
    for rank in (0, 1):
        one = torch.load(tmp_path / f"one{rank}.pt", weights_only=True)
        each = torch.load(tmp_path / f"each{rank}.pt", weights_only=True)
        for h in ("general", "food"):
            assert torch.equal(one[h][0], each[h][0]) and torch.equal(one[h][1], each[h][1])
            assert int(one[h][2]) == int(each[h][2]) == 4  # 2 real keys per worker
    assert each["general"][1][:4].tolist() == [0, 5, 1, 6]  # rank 0's real keys, then 1's


def test_reference_similarity_is_the_cosine_of_mean_raw_vectors_in_float64():
    from culturesim_ray.models.culturesim import ModalityGraph
    from culturesim_ray.training.step import reference_similarity

    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 5, generator=g)
    culture = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1])
    themes = torch.tensor([[True], [False], [True], [True], [False], [False], [False],
                           [True], [False]])
    text = ModalityGraph(x, torch.zeros(2, 0, dtype=torch.long), culture, themes)
    ref = reference_similarity({"text": text}, 4)
    xn = x.double() / x.double().norm(dim=1, keepdim=True)
    means = torch.stack([xn[culture == c].mean(0) for c in range(3)])
    means = means / means.norm(dim=1, keepdim=True)
    assert torch.allclose(ref[:3, :3], means @ means.T, atol=1e-12)
    assert torch.isnan(ref[3]).all()  # culture 3 has no items
    per_theme = reference_similarity({"text": text}, 4, theme=0)
    assert torch.isnan(per_theme[2]).all() and torch.isfinite(per_theme[:2, :2]).all()
    # a second modality only culture 0 and 2 have: averaged in where both have it
    img = ModalityGraph(torch.randn(2, 3, generator=g), torch.zeros(2, 0, dtype=torch.long),
                        torch.tensor([0, 2]), torch.zeros(2, 1, dtype=torch.bool))
    both = reference_similarity({"text": text, "image": img}, 4)
    yn = img.x.double() / img.x.double().norm(dim=1, keepdim=True)
    assert both[0, 2] == pytest.approx(((means[0] @ means[2]) + (yn[0] @ yn[1])).item() / 2)
    assert both[0, 1] == pytest.approx(ref[0, 1].item())


def test_relation_loss_zero_for_an_affine_match_positive_otherwise_and_differentiable():
    from culturesim_ray.training.step import relation_loss

    g = torch.Generator().manual_seed(4)
    z = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    s = (z @ z.T).detach()
    assert float(relation_loss(z, 0.5 * s + 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_loss(z, -s)) == pytest.approx(2.0, abs=1e-6)
    other = torch.randn(6, 6, generator=g)
    other = other + other.T
    zz = z.clone().requires_grad_(True)
    loss = relation_loss(zz, other)
    assert 0 < float(loss) < 2
    loss.backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0
    ref = torch.full((6, 6), float("nan"))
    ref[0, 1] = ref[1, 0] = 0.3
    assert relation_loss(z, ref) is None  # under 3 usable pairs


def test_cap_per_culture_keeps_at_most_cap_kept_items_per_culture_across_modalities():
    from culturesim_ray.models.culturesim import ModalityGraph
    from culturesim_ray.training.step import cap_per_culture

    gen = torch.Generator().manual_seed(5)
    text = ModalityGraph(torch.ones(7, 2), torch.zeros(2, 0, dtype=torch.long),
                         torch.tensor([0, 0, 0, 1, 1, 2, 0]), torch.zeros(7, 1, dtype=torch.bool))
    image = ModalityGraph(torch.ones(3, 2), torch.zeros(2, 0, dtype=torch.long),
                          torch.tensor([0, 1, 2]), torch.zeros(3, 1, dtype=torch.bool))
    graphs = {"text": text, "image": image}
    masks = {"text": torch.tensor([True, True, False, True, True, False, True]),
             "image": torch.tensor([True, False, True])}
    for cap in (1, 2, 5):
        for _ in range(20):
            out = cap_per_culture(graphs, masks, cap, gen)
            assert not (out["text"] & ~masks["text"]).any()  # only kept items survive
            assert not (out["image"] & ~masks["image"]).any()
            per = torch.zeros(3, dtype=torch.long)
            for m, g in graphs.items():
                per.index_add_(0, g.culture[out[m]], torch.ones(int(out[m].sum()), dtype=torch.long))
            avail = torch.tensor([4, 2, 1])  # kept items per culture over both modalities
            assert torch.equal(per, torch.minimum(avail, torch.tensor(cap)))


def test_precomputed_references_give_the_same_step():
    from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig
    from culturesim_ray.training.stages import StageConfig, param_groups
    from culturesim_ray.training.step import StepConfig, moco_step, reference_similarities
    from synthetic_data import synthetic

    graphs = synthetic()
    cfg = CultureSimConfig({m: int(g.x.shape[1]) for m, g in graphs.items()}, ["a", "b"],
                           hidden=16, out=8)
    out = []
    for refs in (None, reference_similarities(graphs, 8, cfg.themes)):
        torch.manual_seed(0)
        model = CultureSim(cfg)
        key = copy.deepcopy(model)
        queues = {h: MoCoQueue(8, 16) for h in ["general", "a", "b"]}
        opt = torch.optim.AdamW(param_groups(model, 1, StageConfig()))
        gen = torch.Generator().manual_seed(2)
        out.append(moco_step(model, key, queues, graphs, 8, opt, StepConfig(keep=0.8), gen,
                             references=refs))
    assert out[0] == pytest.approx(out[1], rel=1e-6)
