"""Which cultures a report shows when a run has more than a page can hold. Pure.

A run of 100,000 cultures cannot be one readable page (nor one a browser opens:
the figures and tables grow with every culture). Above `max_cultures` the
report shows a selection: seed cultures (the ones the user names, else
`representatives`: the culture nearest each k-means centre of the general
embeddings, so every region of the map has one) and each seed's nearest
neighbours from the all-pairs output, so the network shows each seed's
neighbourhood. Every culture's neighbours stay in pairs.parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from culturesim_ray.names import resolver


@dataclass
class Selection:
    cultures: list[str]  # sorted
    seeds: list[str]  # sorted
    total: int  # cultures in the run
    how: str  # one sentence for the report's introduction ('' when every culture is shown)

    @property
    def partial(self) -> bool:
        """A selection (not every culture of the run, or cultures named)."""
        return bool(self.how)


def representatives(names: Sequence[str], vectors: np.ndarray, m: int, seed: int = 0
                    ) -> list[str]:
    """m cultures that stand for the map (sorted): k-means with m centres over the
    L2-normalised rows (cosine), and per centre, in turn, the culture nearest it not
    taken yet."""
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(vectors, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if m >= len(names):
        return sorted(names)
    km = MiniBatchKMeans(n_clusters=m, random_state=seed, n_init=1, batch_size=4096).fit(x)
    centres = km.cluster_centers_ / np.maximum(
        np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    taken: set[int] = set()
    for c in range(m):
        order = np.argsort(-(x @ centres[c]), kind="stable")
        taken.add(int(next(i for i in order if int(i) not in taken)))
    return sorted(names[i] for i in taken)


def resolve_names(wanted: Sequence[str], names: Sequence[str]) -> list[str]:
    """The run's cultures that `wanted` names (as written, or but for case, accents,
    spacing or punctuation); a name the run lacks is a ValueError naming it."""
    meaning = resolver(names)
    found = {w: meaning(w) for w in wanted}
    missing = [w for w, n in found.items() if n is None]
    if missing:
        raise ValueError(f"report --cultures: the run has no culture {', '.join(map(repr, missing[:5]))}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return sorted({n for n in found.values() if n is not None})


def choose(names: Sequence[str], vectors: np.ndarray, neighbours: dict[str, list[str]],
           max_cultures: int, wanted: Sequence[str] | None = None, k: int = 3) -> Selection:
    """The cultures to show: every one when there are at most `max_cultures` and none
    is named; else seeds (`wanted`, else `representatives`, max_cultures // (k + 1)
    of them) and each seed's first k `neighbours` (culture -> nearest first), seeds
    first, up to max_cultures."""
    if max_cultures < 4:
        raise ValueError(f"report --max-cultures must be at least 4, got {max_cultures}")
    total = len(names)
    if not wanted and total <= max_cultures:
        return Selection(sorted(names), [], total, "")
    if wanted:
        seeds = resolve_names(wanted, names)
        why = f"the {len(seeds)} culture(s) named by --cultures"
    else:
        seeds = representatives(names, vectors, max(1, max_cultures // (k + 1)))
        why = (f"{len(seeds)} cultures that stand for the map's regions (k-means over the "
               f"general embeddings, the culture nearest each centre)")
    chosen = list(dict.fromkeys(seeds))[:max_cultures]
    for s in seeds:
        for n in neighbours.get(s, [])[:k]:
            if len(chosen) >= max_cultures:
                break
            if n not in chosen:
                chosen.append(n)
    how = (f"The run has {total:,} cultures; this report shows {len(chosen):,}: {why} and "
           f"each one's {k} nearest neighbours (--max-cultures {max_cultures}). Every "
           f"culture's neighbours are in pairs.parquet; --cultures names the ones to show.")
    return Selection(sorted(chosen), sorted(seeds), total, how)
