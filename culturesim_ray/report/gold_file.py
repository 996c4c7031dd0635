"""Gold files for `culturesim evaluate`: read (CSV, JSONL or Parquet) and checked
row by row (`validate_gold`), into a `GoldSet` of (culture_a, culture_b, score,
theme) pairs; `culturesim_ray.report.evaluate` scores methods against it.

Two layouts are read: pairs (one row per pair: culture_a, culture_b, score
[, theme]; the score column may instead be named `distance` or `similarity`,
which then says the gold's kind) and a square culture x culture matrix (a
first column of culture names and one column per culture, as published
cultural-distance tables come; blank cells, e.g. of a triangular matrix, are
skipped; a zero diagonal says the matrix holds distances). Gold that scores
a pair differently in its two directions is read as the mean of the two, as
the culture map is symmetric."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturesim_ray.names import listed, name_key, resolver
from culturesim_ray.report.stats import GOLD_KINDS

GENERAL = "general"  # the theme of a pair that names none


@dataclass
class GoldSet:
    pairs: list[tuple[str, str, float, str]]  # (a, b, score, theme), a < b
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    kind: str = "similarity"  # or "distance": bigger = less similar
    kind_from: str = ""  # why the kind is what it is, when the file said it
    renamed: dict[str, str] = field(default_factory=dict)  # gold name -> the run's
    # (a, b, theme) -> (score of a -> b, score of b -> a) where the two differ; the pair's
    # score in `pairs` is their mean
    asymmetric: dict[tuple[str, str, str], tuple[float, float]] = field(default_factory=dict)

    def renamed_note(self, shown: int = 4) -> str:
        """'' or one line naming the gold's culture names read as the run's."""
        if not self.renamed:
            return ""
        some = listed([f"{a!r} -> {b!r}" for a, b in self.renamed.items()], shown)
        return (f"{len(self.renamed)} gold culture name(s) read as the run's, ignoring case, "
                f"accents, spacing and punctuation: {some}")

    def asymmetric_note(self, shown: int = 3) -> str:
        """'' or one line saying which pairs the gold scores differently in their two
        directions, each scored by the mean of the two."""
        if not self.asymmetric:
            return ""
        some = listed([f"({a}, {b}) {ab:g} / ({b}, {a}) {ba:g}"
                       for (a, b, _), (ab, ba) in self.asymmetric.items()], shown)
        return (f"{len(self.asymmetric)} gold pair(s) are scored differently in their two "
                f"directions (asymmetric gold; the culture map is symmetric, so each is "
                f"scored by the mean of its two): {some}")

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
    from culturesim_ray import tables

    try:
        return tables.read_corpus_rows(str(path))
    except tables.CorpusFormatError as exc:
        raise GoldError(f"gold file {exc}") from None  # the one line the CLI prints
    except FileNotFoundError:
        raise GoldError(f"gold file not found: {path}") from None


def _did_you_mean(name: str, known: set[str]) -> str:
    """' (did you mean 'X'?)' for the run's culture closest to a gold name it lacks
    (the same name but for case, accents, spacing or punctuation, every one when
    several, or a close spelling), else ''."""
    import difflib

    close = sorted(k for k in known if name_key(k) == name_key(name))
    close = close or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


SCORE_NAMES = {"score": None, "distance": "distance", "similarity": "similarity"}
GOLD_FIELDS = frozenset({"culture_a", "culture_b", "theme", *SCORE_NAMES})


def _score_column(columns: Sequence[str]) -> str | None:
    """The column holding the score: `score`, else one named `distance` or
    `similarity` (which names the gold's kind)."""
    named = [c for c in SCORE_NAMES if c in columns]
    if len(named) > 1 and "score" not in named:
        raise GoldError(f"both {' and '.join(named)} columns: name the one to use `score`")
    return named[0] if named else None


def _matrix_pairs(rows: Sequence[dict[str, Any]], columns: list[str],
                  source: str) -> tuple[list[dict[str, Any]], bool] | None:
    """A square culture x culture matrix (a first column of names, then one
    column per culture) as pair rows, one per pair, each naming its cell (the
    diagonal left out; two cells of a pair that differ are an error); with
    whether its diagonal is all zero beside positive cells (a distance matrix).
    None when the rows are not such a matrix."""
    if len(columns) < 3 or not rows:
        return None
    label, names = columns[0], [c.strip() for c in columns[1:]]
    labels = [str(r.get(label) if r.get(label) is not None else "").strip() for r in rows]
    overlap = set(names) & set(labels)
    if len(overlap) < max(2, len(names) // 2):
        return None  # not a matrix: the caller names the columns a gold file needs
    if set(names) != set(labels) or len(set(labels)) != len(labels):
        rows_only = sorted(set(labels) - set(names))
        cols_only = sorted(set(names) - set(labels))
        again = sorted(x for x, n in Counter(labels).items() if n > 1)
        raise GoldError(f"{source}: read as a culture x culture matrix (first column "
                        f"{label!r}), but its rows and columns name different cultures: "
                        f"rows only {rows_only}, columns only {cols_only}"
                        + (f", rows named twice {again}" if again else ""))
    cells: dict[tuple[str, str], Any] = {}
    for row, a in zip(rows, labels, strict=True):
        for col, b in zip(columns[1:], names, strict=True):
            value = row.get(col)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                cells[(a, b)] = value  # blank: a triangular matrix leaves one half so
    diagonal = [_number(v) for (a, b), v in cells.items() if a == b]
    out = []
    for (a, b), value in cells.items():
        if a == b or ((b, a) in cells and b < a):
            continue  # the diagonal, and a pair's second cell (checked against its first)
        twin = cells.get((b, a))
        x, y = _number(value), _number(twin)
        if twin is not None and x is not None and y is not None and not math.isclose(
                x, y, rel_tol=1e-9, abs_tol=1e-12):  # asymmetric: validate_gold takes the mean
            out.append({"culture_a": b, "culture_b": a, "score": twin,
                        "_where": f"row {b!r}, column {a!r}"})
        elif twin is not None and y is None:  # the unreadable one, for validate_gold to name
            a, b, value = b, a, twin
        out.append({"culture_a": a, "culture_b": b, "score": value,
                    "_where": f"row {a!r}, column {b!r}"})
    zero = (bool(diagonal) and all(v == 0 for v in diagonal)
            and any((_number(r["score"]) or 0) > 0 for r in out))
    return out, zero


def gold_score(value: Any) -> float:
    """A gold score as a spreadsheet may write it: a number, or a percentage (`45%`
    is 0.45). Anything else raises ValueError whose text is a hint for the user
    ('' when there is none): a comma read as a decimal comma or thousands
    separator is not guessed, the user is asked which."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        pass
    text = str(value).strip()
    if text.endswith("%"):
        try:
            return float(text[:-1]) / 100
        except ValueError:
            pass
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3}){2,}", text):
        hint = f" (a thousands separator? write {text.replace(',', '')})"
    elif re.fullmatch(r"[+-]?\d{1,3},\d{3}", text):
        hint = (f" (a thousands separator or a decimal comma? write {text.replace(',', '')}"
                f" or {text.replace(',', '.')})")
    elif re.fullmatch(r"[+-]?\d*,\d+", text):
        hint = f" (a decimal comma? write {text.replace(',', '.')})"
    else:
        hint = ""
    raise ValueError(hint)


def _number(value: Any) -> float | None:
    try:
        return gold_score(value)
    except ValueError:
        return None


def validate_gold(rows: Sequence[dict[str, Any]], cultures: Sequence[str],
                  strict: bool = False, source: str = "gold",
                  gold_kind: str | None = None,
                  themes: Sequence[str] | None = None) -> GoldSet:
    """Check every row; rows naming a culture the run does not have are skipped
    and counted (an error with `strict`), as are self-pairs and a pair given again
    with the same score (in either order: a square gold matrix written out row by
    row). A pair scored in both directions with different scores (asymmetric
    gold: a -> b and b -> a) is scored by their mean and listed in `asymmetric`.
    Missing fields, non-numeric or non-finite scores and a pair given again in
    the same direction with another score are errors naming the row (or cell).
    gold_kind ("similarity" or "distance"; None: what the file says, a `distance`
    column or a matrix with a zero diagonal, else similarity) is recorded; the
    scores are kept as read. themes: the run's heads (general and its themes);
    a gold theme is read as the one it names but for case, accents or spacing
    (`Food` for `food`), and pairs of a theme the run lacks are skipped like
    unknown cultures (None: themes are not checked)."""
    if gold_kind is not None and gold_kind not in GOLD_KINDS:
        raise GoldError(f"{source}: gold kind must be one of {GOLD_KINDS}, got {gold_kind!r}")
    from culturesim_ray.tables import contract_keys

    in_file = list(dict.fromkeys(k for r in rows for k in r if k != "_source_row"))
    rows = [contract_keys(r, GOLD_FIELDS) for r in rows]  # `Culture_A`, ` Score`
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "_source_row"))
    said, kind_from = None, ""
    matrix = (_matrix_pairs(rows, columns, source)
              if "culture_a" not in columns and "culture_b" not in columns else None)
    if matrix is not None:
        rows, zero_diagonal = matrix
        if zero_diagonal:
            said, kind_from = "distance", "a matrix with a zero diagonal"
    elif rows:
        try:
            score = _score_column(columns)
        except GoldError as exc:
            raise GoldError(f"{source}: {exc}") from None
        if score is not None and score != "score":
            said, kind_from = SCORE_NAMES[score], f"its score column is named {score!r}"
            if gold_kind is not None and gold_kind != said:
                raise GoldError(f"{source}: the score column is named {score!r} but the gold "
                                f"kind given is {gold_kind!r}")
            rows = [{**r, "score": r.get(score)} for r in rows]
            columns = [("score" if c == score else c) for c in columns]
    absent = [f for f in ("culture_a", "culture_b", "score") if f not in columns]
    if rows and absent and matrix is None:  # a whole column, not one row: say what the file has
        plural = "s" if len(absent) > 1 else ""
        raise GoldError(f"{source}: no {', '.join(absent)} column{plural} (the file has "
                        f"{', '.join(in_file)}; a gold file has culture_a, culture_b, score "
                        f"and optionally theme, or is a square culture x culture matrix)")
    kind = gold_kind or said or "similarity"
    if gold_kind is not None:
        kind_from = ""  # given, not read from the file
    known = set(cultures)
    meaning = resolver(known)
    renamed: dict[str, str] = {}

    def resolve(name: str) -> str:
        """The run's culture a gold name means (`names.resolver`), else the name."""
        run_name = meaning(name)
        if run_name is not None and run_name != name:
            renamed[name] = run_name
        return run_name if run_name is not None else name

    theme_of = resolver([GENERAL, *(themes or [])]) if themes is not None else None
    seen: dict[tuple[str, str, str], tuple[str, float, bool, int]] = {}
    asymmetric: dict[tuple[str, str, str], tuple[float, float]] = {}
    pairs, skipped = [], defaultdict(int)
    for i, row in enumerate(rows):
        where = f"{source}: {row.get('_where') or f'row {i + 1}'}"
        for f in ("culture_a", "culture_b", "score"):
            if row.get(f) in (None, ""):
                raise GoldError(f"{where}: field {f!r} is missing or empty")
        a, b = resolve(str(row["culture_a"]).strip()), resolve(str(row["culture_b"]).strip())
        try:
            score = gold_score(row["score"])
        except ValueError as exc:
            raise GoldError(f"{where}: field 'score' is not a number: {row['score']!r}"
                            f"{exc}") from None
        if not math.isfinite(score):
            raise GoldError(f"{where}: field 'score' is not finite: {row['score']!r}")
        theme = str(row.get("theme") or GENERAL).strip() or GENERAL
        if theme_of is not None:
            run_theme = theme_of(theme)
            if run_theme is None:
                why = (f"theme {theme!r}, which the run does not have (its heads: "
                       f"{', '.join(sorted({GENERAL, *themes}))})")
                if strict:
                    raise GoldError(f"{where}: {why}")
                skipped[why] += 1
                continue
            theme = run_theme
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
        forward = a < b
        a, b = sorted((a, b))
        key = (a, b, theme)
        if key in seen:
            first, first_score, first_forward, at = seen[key]
            given = [first_score, *asymmetric.get(key, (first_score,) * 2)]
            if any(math.isclose(score, s, rel_tol=1e-9, abs_tol=1e-12) for s in given):
                skipped["the same pair again, with the same score"] += 1
                continue  # a square matrix names every pair twice: (A, B) and (B, A)
            if forward != first_forward and key not in asymmetric:
                # the other direction, scored otherwise: the map is symmetric, take the mean
                asymmetric[key] = (first_score, score) if first_forward else (score, first_score)
                pairs[at] = (a, b, (first_score + score) / 2, theme)
                continue
            raise GoldError(f"{where}: duplicate pair ({a}, {b}, theme {theme}) with score "
                            f"{score!r} (first at {first}, score {first_score!r})")
        seen[key] = (where.removeprefix(f"{source}: "), score, forward, len(pairs))
        pairs.append((a, b, score, theme))
    if not pairs:
        raise GoldError(f"{source}: no usable gold pairs (skipped: {dict(skipped) or 'none'})")
    return GoldSet(pairs, dict(skipped), kind, kind_from, renamed, asymmetric)
