"""What `report.evaluate` scores: a `Method` (its culture vectors per head, or
precomputed culture x culture matrices). Its own module so the methods built from
raw items (`report.item_methods`) and the evaluation that scores them both import
it, neither the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from culturesim_ray.report.stats import Matrix

Vectors = tuple[list[str], np.ndarray]  # cultures, (C, d)


@dataclass
class Method:
    """A method to score: per head, culture vectors (compared under `similarity`)
    or a precomputed (cultures, (C, C)) similarity matrix, used when given."""

    name: str
    kind: str  # "model", "baseline", "similarity", "set", "readout"
    vectors: dict[str, Vectors] = field(default_factory=dict)  # head -> vectors
    similarity: str = "cosine"
    matrices: dict[str, Matrix] | None = None  # head -> (cultures, (C, C))

    def heads(self) -> set[str]:
        """The heads (general, themes) this method scores."""
        return {*self.vectors, *(self.matrices or {})}

    def cultures(self) -> set[str]:
        return {c for v in (*self.vectors.values(), *(self.matrices or {}).values())
                for c in v[0]}


def vector_matrix(vectors: Vectors, sim: Callable[[Any, Any], Any]) -> Matrix:
    """(cultures, (C, C) float64) similarity matrix of the vectors under `sim`."""
    import torch

    cultures, x = vectors
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return list(cultures), sim(t, t).double().numpy()
