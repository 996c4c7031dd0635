"""Gold files for `culturesim evaluate`: read (CSV, JSONL or Parquet) and checked
row by row (`validate_gold`), into a `GoldSet` of (culture_a, culture_b, score,
theme) pairs; `culturesim_ray.report.evaluate` scores methods against it."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturesim_ray.report.stats import GOLD_KINDS

GENERAL = "general"  # the theme of a pair that names none


@dataclass
class GoldSet:
    pairs: list[tuple[str, str, float, str]]  # (a, b, score, theme), a < b
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    kind: str = "similarity"  # or "distance": bigger = less similar

    def by_theme(self) -> dict[str, list[tuple[str, str, float]]]:
        out: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
        for a, b, s, t in self.pairs:
            out[t].append((a, b, s))
        return dict(out)


class GoldError(ValueError):
    """A gold file that cannot be used; the message names the row and field."""


def read_gold_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV, JSONL or Parquet gold file (the corpus reader's: a file it
    cannot parse is a GoldError naming the file and line)."""
    from culturesim_ray import io

    try:
        return io.read_corpus_rows(str(path))
    except io.CorpusFormatError as exc:
        raise GoldError(f"gold file {exc}") from None  # the one line the CLI prints
    except FileNotFoundError:
        raise GoldError(f"gold file not found: {path}") from None


def _did_you_mean(name: str, known: set[str]) -> str:
    """' (did you mean 'X'?)' for the run's culture closest to a gold name it lacks
    (the same name in other case, or a close spelling), else ''."""
    import difflib

    folded = {k.casefold(): k for k in known}
    close = ([folded[name.casefold()]] if name.casefold() in folded
             else difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8))
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_gold(rows: Sequence[dict[str, Any]], cultures: Sequence[str],
                  strict: bool = False, source: str = "gold",
                  gold_kind: str = "similarity") -> GoldSet:
    """Check every row; rows naming a culture the run does not have are skipped
    and counted (an error with `strict`), as are self-pairs and a pair given again
    with the same score (in either order: a square gold matrix written out row by
    row). Missing fields, non-numeric or non-finite scores and a pair given again
    with another score are errors naming the row.
    gold_kind ("similarity" or "distance") is recorded; the scores are kept as read."""
    if gold_kind not in GOLD_KINDS:
        raise GoldError(f"{source}: gold kind must be one of {GOLD_KINDS}, got {gold_kind!r}")
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "_source_row"))
    absent = [f for f in ("culture_a", "culture_b", "score") if f not in columns]
    if rows and absent:  # a whole column, not one row: say what the file has
        plural = "s" if len(absent) > 1 else ""
        raise GoldError(f"{source}: no {', '.join(absent)} column{plural} (the file has "
                        f"{', '.join(columns)}; a gold file has culture_a, culture_b, score "
                        f"and optionally theme)")
    known = set(cultures)
    seen: dict[tuple[str, str, str], tuple[int, float]] = {}
    pairs, skipped = [], defaultdict(int)
    for i, row in enumerate(rows):
        where = f"{source}: row {i + 1}"
        for f in ("culture_a", "culture_b", "score"):
            if row.get(f) in (None, ""):
                raise GoldError(f"{where}: field {f!r} is missing or empty")
        a, b = str(row["culture_a"]).strip(), str(row["culture_b"]).strip()
        try:
            score = float(row["score"])
        except (TypeError, ValueError, OverflowError):
            raise GoldError(f"{where}: field 'score' is not a number: {row['score']!r}") from None
        if not math.isfinite(score):
            raise GoldError(f"{where}: field 'score' is not finite: {row['score']!r}")
        theme = str(row.get("theme") or GENERAL).strip() or GENERAL
        if a == b:  # the diagonal of a square gold matrix written out row by row
            if a not in known and strict:
                raise GoldError(f"{where}: unknown culture {a!r}{_did_you_mean(a, known)}")
            skipped["self pair (a culture with itself)"] += 1
            continue
        unknown = [c for c in (a, b) if c not in known]
        if unknown:
            hint = _did_you_mean(unknown[0], known)
            if strict:
                raise GoldError(f"{where}: unknown culture(s) {unknown} (the run has "
                                f"{len(known)} cultures){hint}")
            skipped[f"unknown culture {unknown[0]!r}{hint}"] += 1
            continue
        a, b = sorted((a, b))
        key = (a, b, theme)
        if key in seen:
            first, first_score = seen[key]
            if math.isclose(score, first_score, rel_tol=1e-9, abs_tol=1e-12):
                skipped["the same pair again, with the same score"] += 1
                continue  # a square matrix names every pair twice: (A, B) and (B, A)
            raise GoldError(f"{where}: duplicate pair ({a}, {b}, theme {theme}) with score "
                            f"{score!r} (first at row {first}, score {first_score!r})")
        seen[key] = (i + 1, score)
        pairs.append((a, b, score, theme))
    if not pairs:
        raise GoldError(f"{source}: no usable gold pairs (skipped: {dict(skipped) or 'none'})")
    return GoldSet(pairs, dict(skipped), gold_kind)
