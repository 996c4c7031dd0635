"""What `report.evaluate` scores: a `Method` (its culture vectors per head, or
precomputed culture x culture matrices). Its own module so the methods built from
raw items (`report.item_methods`) and the evaluation that scores them both import
it, neither the other."""

from __future__ import annotations

from dataclasses import dataclass, field

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
