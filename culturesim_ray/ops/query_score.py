"""Stage-1 scores of one-item queries against cultures (pure numpy).

A culture's mean vector answers "which culture is this item most like on
average"; a query about one dish or one ruler is often closest to a few of a
culture's items and far from its mean (a culture's corpus covers many
topics). The query score therefore mixes, for the query's modality:

    score(q, c) = (1 - a) * raw(q, c) + a * w * nearest(q, c) + l * learned(q, c)

- raw(q, c): the raw part of the general cosine, w * cos(q, culture mean)
  (`Retriever.parts`; w = the model's raw_weight);
- nearest(q, c): the mean cosine of q to culture c's m most similar items
  (a set-level score: the item set, not its mean), from a shortlist of the
  query's K nearest corpus items (`nearest_item_scores`);
- learned(q, c): the learned part of the general cosine, (1 - w) * cos of the
  projections, weighted by l (1 = as trained).

The mix is a training setting (`TrainConfig.query`), written with the serving
state; the service and the retrieval benchmarks read it from there. A modality can
have its own a and m (`QueryMix.modalities`; `QueryMix.for_modality`).

With a = 0 and l = 1 this is the model's plain general cosine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QueryMix:
    """nearest: a, the share of the raw part given to the nearest-items score; m: items
    per culture it averages; shortlist: K, the query's nearest corpus items it reads;
    learned: l (see the module). Chosen on the held-out items and page titles of the
    dev sets of benchmarks/truth.py (`benchmarks/query_mix.py`; figures with paired
    intervals in benchmarks/RESULTS.md, sessions 12-13 and 19-21): every a in
    0.25-0.75 beat the culture mean alone on all three text sets; the learned part
    costs top-5 from l = 0.25 up (l = 1, its trained weight, ranked worst), while
    l = 0.1 lost nothing measurable against 0.25 and keeps the learned part in the
    answer; m = 1 (the culture's single nearest item) beat m = 3 on short queries
    (held-out page titles such as "Nowruz") and tied on the held-out items.

    modalities: per query modality, its own "nearest" and/or "m" (the rest as above).
    Tunes (`sequence`): a = 1, m = 3, the mean of a culture's 3 nearest tunes with no
    culture-mean term: the melody LSTM's culture means are nearly parallel, so the
    mean term mostly adds noise; on held-out tunes of the folk-music and mixed-modal
    truth runs it beat a = 0.5, m = 1 in top-1 and top-3 with intervals clear of
    zero, and pointed the same way on a second, disjoint Essen set (session 21).

    abtt: the modalities whose queries meet single items (the nearest-items score and
    the answer's evidence) with the corpus's dominant directions removed
    (`ops.abtt`: centred, the top dim / 100 principal directions projected out; the
    culture-mean term keeps the plain vectors). Texts: among the top directions are
    those that separate a multilingual corpus's languages in an English encoder, so
    a query met items in its own language whatever their subject. On the held-out
    texts and page titles of the four text truth runs it raised top-1 and top-3 with
    paired intervals clear of zero; projecting out the directions between the
    corpus's language means did as well, two random directions nothing (session 24).
    Not tunes: no number of directions gained on the held-out tunes."""

    nearest: float = 0.5
    m: int = 1
    shortlist: int = 64
    learned: float = 0.1
    modalities: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"sequence": {"nearest": 1.0, "m": 3}}, hash=False)
    abtt: tuple[str, ...] = ("text",)

    def __post_init__(self) -> None:
        if isinstance(self.abtt, str) or not all(isinstance(m, str) for m in self.abtt):
            raise ValueError(f"QueryMix.abtt must list modalities, got {self.abtt!r}")
        object.__setattr__(self, "abtt", tuple(self.abtt))  # a YAML list
        if not 0.0 <= self.nearest <= 1.0:
            raise ValueError(f"QueryMix.nearest must be in [0, 1], got {self.nearest}")
        if self.m < 1 or self.shortlist < self.m:
            raise ValueError(f"QueryMix needs 1 <= m <= shortlist, got m={self.m}, "
                             f"shortlist={self.shortlist}")
        if self.learned < 0:
            raise ValueError(f"QueryMix.learned must be >= 0, got {self.learned}")
        if not isinstance(self.modalities, dict):
            raise ValueError(f"QueryMix.modalities must map a modality to its settings, "
                             f"got {self.modalities!r}")
        for modality, over in self.modalities.items():
            bad = sorted(set(over) - {"nearest", "m"}) if isinstance(over, dict) else over
            if bad:
                raise ValueError(f"QueryMix.modalities[{modality!r}]: only 'nearest' and 'm' "
                                 f"can differ per modality, got {bad!r}")
            self.for_modality(modality)  # its own (a, m) must be valid too

    def debiased(self, modality: str) -> bool:
        """Whether a query of `modality` meets single items with the corpus's dominant
        directions removed (`ops.abtt`)."""
        return modality in self.abtt

    def for_modality(self, modality: str) -> QueryMix:
        """The mix a query of `modality` is ranked with (its own a and m, if any)."""
        over = self.modalities.get(modality)
        return replace(self, modalities={}, **over) if over else self

    @property
    def plain(self) -> bool:
        """The model's plain general cosine (no set-level term, learned part as trained)."""
        return self.nearest == 0.0 and self.learned == 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> QueryMix:
        """From `to_dict`; None (state written before the mix existed): the plain cosine;
        a mix written before per-modality settings existed has none, one written before
        `abtt` existed removes no directions."""
        if d is None:
            return cls(nearest=0.0, learned=1.0, modalities={}, abtt=())
        return cls(**{k: d[k] for k in ("nearest", "m", "shortlist", "learned") if k in d},
                   modalities=dict(d.get("modalities") or {}), abtt=tuple(d.get("abtt") or ()))


IMBALANCE = 10  # the spread of culture sizes from which `imbalance_note` speaks


def imbalance_note(sizes: dict[str, dict[str, int]], mix: QueryMix) -> str | None:
    """What a user should know when, in a modality whose queries the nearest-items
    score ranks, the cultures that have items of it hold from n to IMBALANCE x n or
    more (sizes: modality -> {"min", "max"} over those cultures); None otherwise. The
    score is a maximum over a culture's items, so it grows with their number, and a
    one-item query is then drawn to big cultures (measured: benchmarks/RESULTS.md,
    the query score on an imbalanced corpus). Cultures differing only in which
    modalities they have are not imbalanced: each modality is ranked on its own."""
    uneven = [f"{m} items {v['min']} to {v['max']} ({v['max'] / v['min']:.0f}x)"
              for m, v in sorted(sizes.items())
              if mix.for_modality(m).nearest > 0 and v["min"] > 0
              and v["max"] >= IMBALANCE * v["min"]]
    if not uneven:
        return None
    return (f"cultures hold {'; '.join(uneven)} per culture: the service's query score "
            "reads each culture's nearest item, which favours cultures with many items; "
            "`query: {nearest: 0.0, modalities: {}}` in the train config ranks one-item "
            "queries by the culture means alone")


def nearest_item_scores(sims: np.ndarray, item_culture: np.ndarray, n_cultures: int,
                        m: int) -> np.ndarray:
    """(B, C): per query, each culture's mean cosine over its m most similar items.

    sims (B, K): the query's cosines to its K nearest corpus items; item_culture
    (B, K): their cultures (0..C-1; -1 = no item, e.g. an IVF search that came back
    short). A culture with fewer than m items in the shortlist has the missing ones
    counted at the shortlist's smallest cosine (no item outside the shortlist is
    closer), so with a shortlist of every item the score is exact."""
    sims = np.asarray(sims, np.float64)
    item_culture = np.asarray(item_culture, np.int64)
    if sims.shape != item_culture.shape or sims.ndim != 2:
        raise ValueError(f"sims {sims.shape} and item_culture {item_culture.shape} must be "
                         "the same (B, K)")
    out = np.empty((len(sims), n_cultures), np.float64)
    for i in range(len(sims)):
        ok = item_culture[i] >= 0
        s, c = sims[i, ok], item_culture[i, ok]
        floor = float(s.min()) if len(s) else 0.0
        out[i] = floor  # a culture with no item in the shortlist
        if not len(s):
            continue
        order = np.lexsort((-s, c))  # by culture, then most similar first
        s, c = s[order], c[order]
        top = (np.arange(len(c)) - np.searchsorted(c, c, side="left")) < m
        seen, inv = np.unique(c[top], return_inverse=True)  # only the shortlist's cultures
        total = np.bincount(inv, weights=s[top])
        count = np.bincount(inv)
        out[i, seen] = (total + (m - count) * floor) / m
    return out


def nearest_items(sims: np.ndarray, items: np.ndarray, item_culture: np.ndarray,
                  positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query and ranked culture, the culture's most similar item in the query's
    shortlist: what the nearest-items score read first (the answer's evidence).

    sims, items, item_culture (B, K): the shortlist's cosines (best first, as an index
    search returns them), item rows (-1: none) and cultures (-1: none); positions
    (B, k): the ranked cultures (-1: none). Returns (B, k) item rows (-1: the culture
    has no item in the shortlist) and their cosines (nan there)."""
    sims = np.asarray(sims, np.float64)
    items, item_culture = np.asarray(items, np.int64), np.asarray(item_culture, np.int64)
    positions = np.asarray(positions, np.int64)
    if not sims.shape == items.shape == item_culture.shape or sims.ndim != 2:
        raise ValueError(f"sims {sims.shape}, items {items.shape} and item_culture "
                         f"{item_culture.shape} must be the same (B, K)")
    if positions.ndim != 2 or len(positions) != len(sims):
        raise ValueError(f"positions {positions.shape} must be (B, k) with B = {len(sims)}")
    # the shortlist's best entry of each ranked culture, whatever its order
    match = ((item_culture[:, None, :] == positions[:, :, None]) & (positions[:, :, None] >= 0)
             & (items[:, None, :] >= 0))                                      # (B, k, K)
    score = np.where(match, sims[:, None, :], -np.inf)
    best = score.argmax(axis=2)
    found = match.any(axis=2)
    rows = np.where(found, np.take_along_axis(items[:, None, :].repeat(positions.shape[1], 1),
                                              best[:, :, None], axis=2)[:, :, 0], -1)
    cos = np.where(found, np.take_along_axis(score, best[:, :, None], axis=2)[:, :, 0], np.nan)
    return rows, cos


def mix_scores(raw_part: np.ndarray, learned_part: np.ndarray, nearest: np.ndarray | None,
               raw_weight: float, mix: QueryMix) -> np.ndarray:
    """(B, C) query scores (module docstring); nearest None: a = 0."""
    a = mix.nearest if nearest is not None else 0.0
    out = (1.0 - a) * np.asarray(raw_part, np.float64) + mix.learned * np.asarray(
        learned_part, np.float64)
    if a > 0:
        out = out + a * raw_weight * nearest
    return out
