"""MoCoQueue: a ring buffer of negative keys with the culture of each key.

K keys of dimension D live in persistent buffers (so they are in every
checkpoint's state_dict), with `cultures` (-1 = slot not filled yet) and a
write pointer. `enqueue` gathers keys from every worker first when training
is distributed, writes them at the pointer and wraps around; a batch of any
size works (one larger than K keeps its newest K keys).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from culturesim_ray import dist


class MoCoQueue(nn.Module):
    def __init__(self, dim: int, size: int = 4096) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError("queue size and dim must be positive")
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("cultures", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def filled(self) -> Tensor:
        """(K,) bool: slots holding a real key."""
        return self.cultures >= 0

    def negative_mask(self, query_cultures: Tensor) -> Tensor:
        """(B, K) bool: usable negatives for each query (filled, of another culture)."""
        return self.filled()[None, :] & (self.cultures[None, :] != query_cultures[:, None])

    @torch.no_grad()
    def enqueue(self, keys: Tensor, cultures: Tensor, gathered: bool = False) -> None:
        """keys (B, D), cultures (B,): gathered across workers (unless `gathered`: the
        caller did, `training.step.enqueue_all`), then written in a ring.

        Rows with culture -1 are padding (workers must gather equal shapes) and
        are dropped after the gather."""
        if not gathered:
            keys = dist.all_gather_cat(keys.detach())
            cultures = dist.all_gather_cat(cultures.detach().long())
        real = cultures >= 0
        keys, cultures = keys[real], cultures[real]
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            keys, cultures, n = keys[-self.size:], cultures[-self.size:], self.size
        idx = (int(self.ptr) + torch.arange(n, device=keys.device)) % self.size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.cultures[idx] = cultures
        self.ptr.fill_((int(self.ptr) + n) % self.size)
