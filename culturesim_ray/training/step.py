"""One MoCo training step of the fusion model (SPEC T1), pure torch.

Positives are two views of the same culture: random subsets of its items
(each item kept with probability `keep`) with feature dropout. The query
view goes through the model, the key view through the momentum encoder.
Negatives: the other cultures' keys in the batch plus the MoCo queue, with
every entry of the query's own culture masked out (with few cultures the
queue is otherwise full of false negatives) and hard negatives weighted up.
Each theme head is trained the same way on views built from the items that
carry that theme, with a queue of its own.

Relational term (weight `relation_weight`): instance discrimination alone
makes every other culture equally "negative", so the graded similarity
between cultures, which is what this tool measures, is free to drift. The
term keeps the shape of the raw geometry: 1 - Pearson correlation between the
head's culture-culture cosines in the batch and the reference cosines of the
cultures' mean raw embeddings (averaged over the modalities both cultures
have; for a theme head, over the items carrying that theme). Scale-free, so
it does not fight InfoNCE's separation of cultures, only their ordering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from culturesim_ray import dist
from culturesim_ray.losses.info_nce import info_nce
from culturesim_ray.models.culturesim import CultureSim, ModalityGraph
from culturesim_ray.models.momentum import update_momentum
from culturesim_ray.models.queue import MoCoQueue


@dataclass
class StepConfig:
    """temperature (0.1), hard_beta (1.0: 0 = plain InfoNCE), momentum (0.99),
    keep (0.5: share of items a view keeps), feature_dropout (0.1),
    theme_weight (0.5: weight of the mean theme loss), relation_weight (2.0: weight
    of the relational term; 0 = contrastive only; 2.0 beat 0.5 on the dev sets of
    benchmarks/truth.py, see benchmarks/RESULTS.md), small_view_prob (0.5) and
    small_view_items (3): with that probability a step's query view keeps only
    1..small_view_items random items per culture (across modalities), so the
    model learns to place a lone item, as a query is, near its culture, not
    only to tell culture means apart."""

    temperature: float = 0.1
    hard_beta: float = 1.0
    momentum: float = 0.99
    keep: float = 0.5
    feature_dropout: float = 0.1
    theme_weight: float = 0.5
    relation_weight: float = 2.0
    small_view_prob: float = 0.5
    small_view_items: int = 3


def random_view(graphs: dict[str, ModalityGraph], keep: float, feature_dropout: float,
                gen: torch.Generator, restrict: dict[str, Tensor] | None = None
                ) -> tuple[dict[str, ModalityGraph], dict[str, Tensor]]:
    """A view: feature-dropped graphs and, per modality, which items it keeps."""
    view, masks = {}, {}
    for m, g in graphs.items():  # random draws on the CPU generator, then to x's device
        n, dev = g.x.shape[0], g.x.device
        masks[m] = (torch.rand(n, generator=gen) < keep).to(dev)
        if g.pool is not None:  # a mini-batch pools its seeds only
            masks[m] &= g.pool
        if restrict is not None and m in restrict:
            masks[m] &= restrict[m]
        drop = (torch.rand(g.x.shape, generator=gen) >= feature_dropout).to(dev, g.x.dtype)
        view[m] = replace(g, x=g.x * drop / max(1e-6, 1.0 - feature_dropout))
    return view, masks


def cap_per_culture(graphs: dict[str, ModalityGraph], masks: dict[str, Tensor], cap: int,
                    gen: torch.Generator) -> dict[str, Tensor]:
    """Of the kept items, at most `cap` random ones per culture, over all modalities."""
    mods = sorted(masks)
    dev = masks[mods[0]].device
    culture = torch.cat([graphs[m].culture.cpu() for m in mods])
    kept = torch.cat([masks[m].cpu() for m in mods])
    score = torch.rand(len(culture), generator=gen, dtype=torch.float64)
    score[~kept] = float("inf")
    order = torch.argsort(culture.double() * 4.0 + score.clamp(max=2.0))  # culture, then score
    c_sorted = culture[order]
    first = torch.ones_like(c_sorted, dtype=torch.bool)
    first[1:] = c_sorted[1:] != c_sorted[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(order)), 0), dim=0).values
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - start
    keep_all = kept & (rank < cap)
    out, at = {}, 0
    for m in mods:
        n = len(masks[m])
        out[m] = keep_all[at:at + n].to(dev)
        at += n
    return out


def _present(model: CultureSim, graphs: dict[str, ModalityGraph], masks: dict[str, Tensor],
             n_cultures: int) -> Tensor:
    present = torch.zeros(n_cultures, dtype=torch.bool, device=next(iter(graphs.values())).x.device)
    for m, g in graphs.items():
        present[g.culture[masks[m]]] = True
    return present


def reference_similarity(graphs: dict[str, ModalityGraph], n_cultures: int,
                         theme: int | None = None) -> Tensor:
    """(C, C) cosine of the cultures' mean L2-normalised raw item vectors, averaged
    over the modalities both cultures have items of (NaN where they share none).
    theme: only items carrying that theme (column of `ModalityGraph.themes`)."""
    dev = next(iter(graphs.values())).x.device
    total = torch.zeros(n_cultures, n_cultures, dtype=torch.float64, device=dev)
    count = torch.zeros(n_cultures, n_cultures, dtype=torch.float64, device=dev)
    for g in graphs.values():
        x = nn.functional.normalize(g.x.double(), dim=1)
        c = g.culture
        if theme is not None:
            keep = g.themes[:, theme]
            x, c = x[keep], c[keep]
        if len(c) == 0:
            continue
        sums = torch.zeros(n_cultures, x.shape[1], dtype=torch.float64,
                           device=dev).index_add_(0, c, x)
        has = torch.zeros(n_cultures, dtype=torch.bool, device=dev)
        has[c] = True
        means = nn.functional.normalize(sums, dim=1)
        both = (has[:, None] & has[None, :]).double()
        total += (means @ means.T) * both
        count += both
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def reference_similarities(graphs: dict[str, ModalityGraph], n_cultures: int,
                           themes: list[str]) -> dict[str, Tensor]:
    """`reference_similarity` for the general head and each theme head. It depends
    only on the data: compute it once per run and pass it to `moco_step`."""
    refs = {"general": reference_similarity(graphs, n_cultures)}
    for t, theme in enumerate(themes):
        refs[theme] = reference_similarity(graphs, n_cultures, t)
    return refs


def relation_loss(z: Tensor, reference: Tensor) -> Tensor | None:
    """1 - Pearson correlation between the off-diagonal cosines of the rows of z
    (L2-normalised, (B, D)) and `reference` (B, B); None with under 3 usable pairs."""
    b = z.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)
    ref = reference.to(z.device, z.dtype)
    use = off & torch.isfinite(ref)
    if int(use.sum()) < 6:  # 3 unordered pairs, each counted twice
        return None
    s = (z @ z.T)[use]
    r = ref[use]
    s, r = s - s.mean(), r - r.mean()
    denom = s.norm() * r.norm()
    if float(r.norm()) < 1e-12:
        return None
    return 1.0 - (s * r).sum() / denom.clamp_min(1e-12)


def contrastive_loss(q: Tensor, k: Tensor, cultures: Tensor, queue: MoCoQueue,
                     cfg: StepConfig) -> Tensor:
    """InfoNCE of queries q against keys k (row-aligned), in-batch + queue negatives."""
    b = q.shape[0]
    negatives = torch.cat([k, queue.keys.to(k.dtype)], dim=0)  # (B + K, D)
    in_batch = ~torch.eye(b, dtype=torch.bool, device=q.device)
    mask = torch.cat([in_batch, queue.negative_mask(cultures)], dim=1)
    loss, _ = info_nce(q, k, negatives, cfg.temperature, mask, cfg.hard_beta)
    return loss


def moco_step(model: nn.Module, key_model: CultureSim, queues: dict[str, MoCoQueue],
              graphs: dict[str, ModalityGraph], n_cultures: int, opt: torch.optim.Optimizer,
              cfg: StepConfig, gen: torch.Generator,
              scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              references: dict[str, Tensor] | None = None,
              culture_ids: Tensor | None = None,
              heads_only: list[str] | None = None) -> dict[str, float]:
    """One optimisation step; returns the losses. `queues` has "general" and one per
    theme (heads_only: train these heads alone, e.g. a theme added later); `references` (from `reference_similarities`, (n_cultures, n_cultures) per
    head) saves recomputing them. A mini-batch (`training.batch`) numbers its cultures
    0..n_cultures-1 (slots) and gives each slot's global culture in `culture_ids`
    (-1: unused), which the queues store, so negatives are masked across steps."""
    model.train()
    key_model.train()
    pending: dict[str, tuple[Tensor, Tensor]] = {}
    losses = head_losses(model, key_model, queues, graphs, n_cultures, cfg, gen, pending,
                         heads_only=heads_only, references=references, culture_ids=culture_ids)
    finish_enqueue = start_enqueue(queues, pending)  # the keys travel during backward
    themes = [v for h, v in losses.items() if h != "general"]
    # a head absent here still joins the graph (zero weight) so every parameter gets a gradient
    total = losses.get("general", sum(p.sum() * 0.0 for p in model.parameters()))
    if themes:
        total = total + cfg.theme_weight * torch.stack(themes).mean()
    opt.zero_grad()
    total.backward()
    dist.average_gradients(model)  # no-op on one worker
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    if scheduler is not None:
        scheduler.step()
    update_momentum(model, key_model, cfg.momentum)
    finish_enqueue()
    return {"loss": float(total.detach()), **{f"loss_{h}": float(v.detach()) for h, v in losses.items()}}


@torch.no_grad()
def validation_loss(model: nn.Module, key_model: CultureSim, queues: dict[str, MoCoQueue],
                    graphs: dict[str, ModalityGraph], n_cultures: int, cfg: StepConfig,
                    seed: int = 12345, references: dict[str, Tensor] | None = None,
                    culture_ids: Tensor | None = None) -> float:
    """The general head's loss on fixed views, without updating anything."""
    model.eval()
    key_model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = head_losses(model, key_model, queues, graphs, n_cultures, cfg, gen, None,
                         heads_only=["general"], references=references,
                         culture_ids=culture_ids)
    return float(losses["general"]) if "general" in losses else float("nan")


def head_losses(model: nn.Module, key_model: CultureSim, queues: dict[str, MoCoQueue],
                graphs: dict[str, ModalityGraph], n_cultures: int, cfg: StepConfig,
                gen: torch.Generator, pending: dict[str, tuple[Tensor, Tensor]] | None,
                heads_only: list[str] | None = None,
                references: dict[str, Tensor] | None = None,
                culture_ids: Tensor | None = None) -> dict[str, Tensor]:
    """Per-head InfoNCE of two fresh views. `model` may be DDP-wrapped; culture_ids
    as in `moco_step`. pending: a dict that receives each head's keys (padded) for
    the caller to enqueue (`start_enqueue`); None: nothing is enqueued."""
    core: CultureSim = getattr(model, "module", model)
    dev = next(iter(graphs.values())).x.device
    ids = (torch.arange(n_cultures, device=dev) if culture_ids is None
           else culture_ids.to(dev))
    losses: dict[str, Tensor] = {}
    heads = ["general"] + (core.theme_heads.themes if core.theme_heads is not None else [])
    for i, head in enumerate(heads):
        if heads_only is not None and head not in heads_only:
            continue
        restrict = None
        if head != "general":
            t = i - 1
            restrict = {m: g.themes[:, t] for m, g in graphs.items()}
        vq, mq = random_view(graphs, cfg.keep, cfg.feature_dropout, gen, restrict)
        vk, mk = random_view(graphs, cfg.keep, cfg.feature_dropout, gen, restrict)
        if cfg.small_view_prob > 0 and float(torch.rand(1, generator=gen)) < cfg.small_view_prob:
            cap = int(torch.randint(1, max(1, cfg.small_view_items) + 1, (1,), generator=gen))
            mq = cap_per_culture(graphs, mq, cap, gen)
        both = (_present(model, vq, mq, n_cultures) & _present(model, vk, mk, n_cultures))
        cultures = both.nonzero().squeeze(1)
        if cultures.numel() < 2:  # a theme too sparse in this draw
            if pending is not None:  # every worker joins the same collectives: enqueue padding only
                keys = queues[head].keys
                pending[head] = (keys.new_zeros(n_cultures, keys.shape[1]),
                                 torch.full((n_cultures,), -1, dtype=torch.long,
                                            device=keys.device))
            continue
        q = model(vq, n_cultures, mq, cultures)[head]
        with torch.no_grad():
            k = key_model(vk, n_cultures, mk, cultures)[head]
        losses[head] = contrastive_loss(q, k, ids[cultures], queues[head], cfg)
        if cfg.relation_weight > 0:
            ref = (references[head] if references is not None else
                   reference_similarity(graphs, n_cultures, None if head == "general" else i - 1))
            sel = cultures.to(ref.device)
            rel = relation_loss(q, ref[sel][:, sel])
            if rel is not None:
                losses[head] = losses[head] + cfg.relation_weight * rel
        if pending is not None:  # after the loss: the batch is not its own negative
            # padded to every culture (-1 = absent) so workers gather equal shapes
            k_all = k.new_zeros(n_cultures, k.shape[1])
            c_all = torch.full((n_cultures,), -1, dtype=torch.long, device=k.device)
            k_all[cultures], c_all[cultures] = k, ids[cultures]
            pending[head] = (k_all, c_all)
    # no head with two cultures in both views (a tiny shard): the step still runs
    # every collective (padding enqueued above, a zero gradient averaged)
    return losses


def enqueue_all(queues: dict[str, MoCoQueue], pending: dict[str, tuple[Tensor, Tensor]]
                ) -> None:
    """Every head's keys of this step into its queue (`start_enqueue`, waited at once)."""
    start_enqueue(queues, pending)()


def start_enqueue(queues: dict[str, MoCoQueue], pending: dict[str, tuple[Tensor, Tensor]]
                  ) -> Callable[[], None]:
    """Start putting every head's keys of this step into its queue, gathered across
    workers in ONE asynchronous collective (one flat tensor: each head's keys and
    cultures, padded to equal shapes); the returned function waits for it and
    enqueues. Workers meet once per step here instead of twice per head."""
    heads = sorted(pending)
    if dist.world_size() == 1:
        def local() -> None:
            for h in heads:
                queues[h].enqueue(*pending[h])
        return local
    flat = torch.cat([torch.cat([pending[h][0].reshape(-1).float(),
                                 pending[h][1].float()]) for h in heads])
    gathered = dist.all_gather_start(flat)

    def finish() -> None:
        parts = gathered().reshape(dist.world_size(), -1)
        at = 0
        for h in heads:
            k, c = pending[h]
            nk, nc = k.numel(), c.numel()
            keys = parts[:, at:at + nk].reshape(-1, k.shape[1])
            cultures = parts[:, at + nk:at + nk + nc].reshape(-1).round().long()
            queues[h].enqueue(keys, cultures, gathered=True)
            at += nk + nc
    return finish
