"""The culture map of a fused model's general embeddings: `ModalityCosine` compares
two cultures' raw parts over the modalities both have, with the learned part at the
run's weight (`CultureSimConfig.map_learned`). Used by `culturesim evaluate` and
`culturesim allpairs` on a train run (`runs.general_similarity`)."""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from culturesim_ray.ops.similarity import EPS, _check


class ModalityCosine:
    """The cosine of a fused model's general embeddings with each culture pair's raw
    part compared over the modalities both cultures have (`models.culturesim`).

    A general embedding is [sqrt(w) r, sqrt(1 - w) p]: r concatenates, per modality
    m, the culture's mean raw vector scaled by sqrt(its share of the culture's items
    in m). Its plain cosine is w * sum_m sqrt(s_am s_bm) cos_m(a, b) + (1 - w) p_a.p_b,
    so a culture with items in a second modality is ranked down against every
    culture without it (its text counts for sqrt(share) only), and two cultures
    that share an encoder whose means are all alike (cosines near 1, as the melody
    LSTM's) are ranked up. Here the raw term is divided by the weight of the
    modalities the pair shares:

        w * sum_m sqrt(s_am s_bm) cos_m(a, b) / sum_m sqrt(s_am s_bm) + (1 - w) p_a.p_b

    (the share-weighted mean of the shared modalities' cosines, as a one-modality
    query is compared with one slot in `serving.retrieval.modality_view`). A pair
    that shares no modality gets `fill` as its raw term: the mean raw term of the
    pairs that share one (`fit`); a row without any raw part (a theme embedding of a
    culture that has no item of the theme, `CultureSimConfig.theme_raw`) is compared
    by its learned part alone. With one modality, or the same modalities in
    every culture at the same shares, this is the plain cosine. Read from the
    vectors alone (w and the shares are the slot norms), for any rows x, y.

    learned: lam, the learned term's weight as a share of its trained one; with
    lam != 1 a pair scores (raw term + lam (1 - w) p_a.p_b) / (w + lam (1 - w)),
    so a culture with every modality still scores 1 with itself (the culture map's
    read-out, `CultureSimConfig.map_learned`). lam = 1: the formula above.

    learned_share: kappa > 0: `fit` sets lam so that the learned term's standard
    deviation over the culture pairs is kappa times the raw term's, lam = kappa
    sd(raw term) / sd(p_a.p_b), so the learned part moves the ranking as much
    whatever the spread of the encoder's cosines (`CultureSimConfig.
    map_learned_share`); `learned` stays where either spread is nil. 0: lam as given.

    slots: the (start, stop) columns of each modality's raw slot (`runs.raw_slots`).

    whitening: per slot, a (d, d) matrix T (`ops.whiten`) or None: each culture's raw
    slot direction is read as its image under T (renormalised, its norm kept), so the
    raw term compares the means in the within-culture-whitened geometry
    (`CultureSimConfig.map_whiten`); None throughout: as written above. Where the
    same rows are scored in many blocks (all-pairs), `prepare` whitens them once and
    `on_prepared()` scores them without whitening again.
    """

    name = "modality_cosine"

    def __init__(self, slots: Sequence[tuple[int, int]], fill: float | None = None,
                 learned: float = 1.0,
                 whitening: Sequence[Tensor | None] | None = None,
                 learned_share: float = 0.0) -> None:
        if not slots:
            raise ValueError("modality_cosine needs the raw slots of at least one modality")
        if not (learned >= 0 and math.isfinite(learned)):
            raise ValueError(f"modality_cosine: learned must be a finite weight >= 0, "
                             f"got {learned}")
        self.slots = [(int(a), int(b)) for a, b in slots]
        self.raw = (min(a for a, _ in self.slots), max(b for _, b in self.slots))
        if not (learned_share >= 0 and math.isfinite(learned_share)):
            raise ValueError(f"modality_cosine: learned_share must be a finite share >= 0, "
                             f"got {learned_share}")
        self.fill = fill
        self.learned = float(learned)
        self.learned_share = float(learned_share)
        self.whitening = list(whitening) if whitening is not None else [None] * len(self.slots)
        self._prepared = False  # rows arrive through `prepare` (their slots whitened)
        if len(self.whitening) != len(self.slots):
            raise ValueError(f"modality_cosine: {len(self.whitening)} whitening matrices for "
                             f"{len(self.slots)} slots")
        for (a, b), t in zip(self.slots, self.whitening, strict=True):
            if t is not None and tuple(t.shape) != (b - a, b - a):
                raise ValueError(f"modality_cosine: a whitening matrix of shape "
                                 f"{tuple(t.shape)} for a slot of {b - a} columns")

    @property
    def key(self) -> str:
        """What the all-pairs fingerprint records: the name, the learned weight where it
        is not 1, its share of the raw spread where set and a digest of the whitening
        where there is one (outputs written before any of them existed still resume)."""
        opts = ([f"learned={self.learned:g}"] if self.learned != 1.0 else []) + (
            [f"learned_share={self.learned_share:g}"] if self.learned_share else []) + (
            [f"whitened={self._whitening_digest()}"] if self._whitened else [])
        return f"{self.name}({','.join(opts)})" if opts else self.name

    @property
    def _whitened(self) -> bool:
        return any(t is not None for t in self.whitening)

    def _whitening_digest(self) -> str:
        h = hashlib.sha256()
        for t in self.whitening:
            h.update(b"-" if t is None else t.detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]

    def manifest_record(self) -> dict:
        """What an all-pairs manifest records of it (`head_similarity`)."""
        return {"name": self.name, "fill": self.fill, "learned": self.learned,
                "learned_share": self.learned_share,
                "whitened": self._whitening_digest() if self._whitened else None}

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(raw part, learned part, slot norms (n, M)) of the L2-normalised rows."""
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(EPS)
        a, b = self.raw
        norms = torch.stack([xn[:, s:e].norm(dim=1) for s, e in self.slots], dim=1)
        raw = xn[:, a:b]
        if self._whitened and not self._prepared:
            # each slot's direction through its T, at the slot's norm
            parts = []
            for j, ((s, e), t) in enumerate(zip(self.slots, self.whitening, strict=True)):
                r = xn[:, s:e]
                if t is not None:
                    r = nn.functional.normalize(r @ t.to(r), dim=1, eps=EPS) * norms[:, j:j + 1]
                parts.append(r)
            raw = torch.cat(parts, dim=1)
        return raw, torch.cat([xn[:, :a], xn[:, b:]], dim=1), norms

    def prepare(self, x: Tensor) -> Tensor:
        """The rows as `on_prepared()` reads them: L2-normalised, each whitened raw
        slot's direction through its T at the slot's norm (the norm of a row and of
        each of its slots kept); rows already prepared come back normalised only."""
        raw, learned, _ = self._split(x)
        a = self.raw[0]
        return torch.cat([learned[:, :a], raw, learned[:, a:]], dim=1)

    def on_prepared(self) -> ModalityCosine:
        """This similarity (its key, manifest record and fill) over rows from
        `prepare`: the same scores, the slots not whitened again in every call."""
        out = copy.copy(self)
        out._prepared = True
        return out

    def slot_norms(self, x: Tensor) -> Tensor:
        """(n, M) norms of each modality's slot in the L2-normalised rows: sqrt(w *
        share of the culture's items in that modality)."""
        return self._split(x)[2]

    @staticmethod
    def _term(sx: tuple[Tensor, Tensor, Tensor], sy: tuple[Tensor, Tensor, Tensor]
              ) -> tuple[Tensor, Tensor, Tensor]:
        """(raw term, the pair shares a modality, |r_a||r_b| = w)."""
        (rx, _, ux), (ry, _, uy) = sx, sy
        shared = ux @ uy.T  # sum over the modalities of both of the slot norms' products
        scale = rx.norm(dim=1, keepdim=True) * ry.norm(dim=1)  # |r_a||r_b| = w
        ok = shared > EPS
        return torch.where(ok, (rx @ ry.T) * scale / shared.clamp_min(EPS), 0.0), ok, scale

    def raw_term(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(raw term (n, m), shared (n, m) bool: the pair shares a modality)."""
        _check(x, y)
        return self._term(self._split(x), self._split(y))[:2]

    def fit(self, x: Tensor, sample: int = 2000, seed: int = 0) -> ModalityCosine:
        """fill = the mean raw term over the pairs (a < b) of up to `sample` seeded rows
        of x that share a modality (0 when none does); with `learned_share`, the
        learned weight from the same pairs' spreads (the raw term with that fill)."""
        if x.shape[0] > sample:
            g = torch.Generator().manual_seed(seed)
            x = x[torch.randperm(x.shape[0], generator=g)[:sample].to(x.device)]
        sx = self._split(x)
        term, ok, w = self._term(sx, sx)
        upper = torch.triu(torch.ones_like(ok), diagonal=1)
        shared = upper & ok
        self.fill = float(term[shared].double().mean()) if bool(shared.any()) else 0.0
        if self.learned_share > 0 and int(upper.sum()) > 1:
            raw = torch.where(ok, term, torch.where(w > EPS, self.fill, 0.0))[upper].double()
            learned = (sx[1] @ sx[1].T)[upper].double()
            if float(raw.std()) > EPS and float(learned.std()) > EPS:
                self.learned = self.learned_share * float(raw.std()) / float(learned.std())
        return self

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.fill is None:
            raise RuntimeError("modality_cosine: call fit(vectors) first (it sets the raw "
                               "term of pairs that share no modality)")
        _check(x, y)
        sx, sy = self._split(x), self._split(y)
        term, ok, w = self._term(sx, sy)
        # a pair that shares no modality gets `fill`, unless a side has no raw part at
        # all (a theme embedding of a culture without items of that theme): then 0,
        # and the pair is compared by its learned parts alone
        raw = torch.where(ok, term, torch.where(w > EPS, self.fill, 0.0))
        if self.learned == 1.0:
            return raw + sx[1] @ sy[1].T
        rest = sx[1].norm(dim=1, keepdim=True) * sy[1].norm(dim=1)  # |p_a||p_b| = 1 - w
        return (raw + self.learned * (sx[1] @ sy[1].T)) / (w + self.learned * rest).clamp_min(EPS)
