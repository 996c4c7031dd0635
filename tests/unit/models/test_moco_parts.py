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


def test_queue_gathers_keys_from_every_worker(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "0.pt", weights_only=True)
    b = torch.load(tmp_path / "1.pt", weights_only=True)
    # both workers hold the same queue: rank 0's keys, then rank 1's
    assert a["cultures"][:4].tolist() == [0, 1, 10, 11] == b["cultures"][:4].tolist()
    assert torch.equal(a["keys"], b["keys"]) and int(a["ptr"]) == 4
