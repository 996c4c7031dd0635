"""`GET /v1/cultures/{id}/neighbors`: a culture's precomputed top-k neighbours per
theme, read from the all-pairs output (`artifacts.ArrowNeighbors`), with the
culture and theme read as a user types them (`names.resolver`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from culturesim_ray.names import resolver
from culturesim_ray.serving.artifacts import ArrowNeighbors
from culturesim_ray.serving.errors import QueryError


class NeighborTable(ArrowNeighbors):
    """A culture's precomputed top-k neighbours per theme (the all-pairs output)."""

    @cached_property
    def _meaning(self) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
        """(culture, theme) resolvers, built on first use: one pass over the names."""
        return resolver(self.cultures), resolver(self.themes)

    def resolve(self, culture: str, theme: str = "general") -> tuple[str, str]:
        """The table's culture and theme a request names, as written or but for case,
        accents, spacing or punctuation (`greek` is `Greek`)."""
        of_culture, of_theme = self._meaning
        run_theme = of_theme(theme)
        if run_theme is None:
            raise QueryError("theme", f"unknown theme {theme!r} "
                             f"(the all-pairs output has: {', '.join(self.themes)})", 422)
        run_culture = of_culture(culture)
        if run_culture is None:
            raise QueryError("culture_id", f"unknown culture {culture!r} (GET /v1/cultures "
                             f"lists the {len(self.cultures)} cultures)", 404)
        return run_culture, run_theme

    def answer(self, culture: str, theme: str = "general", k: int = 10) -> dict[str, Any]:
        """The endpoint's answer: the culture and theme as the run names them and the
        first k neighbour rows (`ArrowNeighbors.rows`)."""
        culture, theme = self.resolve(culture, theme)
        rows = self.rows(theme, culture, k)
        if rows is None:
            raise QueryError("culture_id", f"no {theme} neighbours of {culture!r} in the "
                             "all-pairs output", 404)
        return {"culture": culture, "theme": theme, "neighbors": rows}
