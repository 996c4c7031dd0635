"""Distributed is optional: rank 0 and world size 1 when torch.distributed is not set up."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (same shape on every worker) across workers along dim 0,
    in rank order; `t` itself when not distributed. No gradient flows back."""
    return all_gather_start(t)()


@torch.no_grad()
def all_gather_start(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    """`all_gather_cat` started asynchronously: returns a function that waits for
    the collective and gives the concatenation. Work done between the two (a
    backward pass) overlaps the transfer, and a step whose workers meet once more
    later (the gradient all-reduce) waits for the slower worker once, not twice."""
    if world_size() == 1:
        return lambda: t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    work = dist.all_gather(parts, t.contiguous(), async_op=True)

    def finish() -> torch.Tensor:
        work.wait()
        return torch.cat(parts, dim=0)

    return finish


def average_gradients(module: torch.nn.Module) -> None:
    """Data parallelism by hand: average every parameter's gradient over the
    workers (one coalesced all-reduce; a missing gradient counts as zero).
    Used where a step runs several forwards before one backward, which torch
    DDP does not support within one iteration. No-op when not distributed."""
    if world_size() == 1:
        return
    params = list(module.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Make every worker start from rank `src`'s parameters and buffers."""
    if world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src)
