"""Methods of `culturesim evaluate` that read a run's raw item vectors, not culture
vectors: the set-level similarities (`ops.setsim`: each culture as the set of its
items) and the theme-aware read-outs (`ops.readout`). Each gives one precomputed
(C, C) matrix for the general head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from culturesim_ray.report.gold_file import GENERAL
from culturesim_ray.report.method import Method


def readout_methods(x: np.ndarray, cultures: Sequence[str],
                    themes: Sequence[Sequence[str] | None] | None, label: str,
                    log: Callable[[str], None] = print) -> list[Method]:
    """The theme-aware read-outs of the raw items (`ops.readout`), general head:
    the cosine of theme-centred culture means, and its second-order similarity.
    None when the items carry fewer than two themes (nothing to centre on)."""
    import torch

    from culturesim_ray.ops import readout

    groups, names_g = readout.theme_groups(list(themes) if themes is not None
                                           else [None] * len(cultures))
    if len(names_g) < 2:
        log("evaluate: items carry fewer than two themes; theme-centred read-outs left out")
        return []
    names = sorted(set(cultures))
    pos = {c: i for i, c in enumerate(names)}
    labels = torch.tensor([pos[c] for c in cultures], dtype=torch.long)
    means = readout.theme_centred_means(torch.from_numpy(np.array(x, dtype=np.float32)), labels,
                                        len(names), groups)
    cos = (means @ means.T).numpy()
    out = [Method(f"{label} + theme-centred means, cosine", "readout", {},
                  similarity="readout:theme_centred", matrices={GENERAL: (names, cos)})]
    if len(names) >= 4:
        so = readout.second_order(torch.from_numpy(cos)).numpy()
        out.append(Method(f"{label} + theme-centred means, second order", "readout", {},
                          similarity="readout:theme_second_order",
                          matrices={GENERAL: (names, so)}))
    return out


def set_level_methods(x: np.ndarray, cultures: Sequence[str], label: str) -> list[Method]:
    """One method per set-level similarity (`ops.setsim`) over the items' culture sets,
    general head: each culture compared as the set of its item vectors, not its mean."""
    import torch

    from culturesim_ray.ops import setsim

    names = sorted(set(cultures))
    pos = {c: i for i, c in enumerate(names)}
    labels = torch.tensor([pos[c] for c in cultures], dtype=torch.long)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a writable copy
    out = []
    for name in setsim.SET_NAMES:
        m = setsim.set_similarity(name, xt, labels, len(names)).numpy()
        out.append(Method(f"{label} + set:{name}", "set", {},
                          similarity=f"set:{name}", matrices={GENERAL: (names, m)}))
    return out
