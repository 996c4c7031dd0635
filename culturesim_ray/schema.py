"""The corpus contract (ARCHITECTURE.md) and row validation.

`validate_rows` splits raw rows into good rows (normalised to the corpus
schema) and bad rows, each bad row kept as given plus a `reason` that names
the field at fault. Nothing is dropped: len(good) + len(bad) == len(rows).
A row's `uri` is checked against `culturesim_ray.uris.UriRoots`, the allowlist of
places it may point into.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from culturesim_ray.tables import contract_keys
from culturesim_ray.uris import UriRoots, missing_file

MODALITIES = ("text", "image", "sequence")

CORPUS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("culture", pa.string()),
        ("modality", pa.string()),
        ("text", pa.string()),
        ("uri", pa.string()),
        ("lang", pa.string()),
        ("era_start", pa.int64()),
        ("era_end", pa.int64()),
        ("themes", pa.list_(pa.string())),
        ("artifact_id", pa.string()),
        ("source", pa.string()),
    ]
)
CORPUS_FIELDS = tuple(CORPUS_SCHEMA.names)
REQUIRED_FIELDS = ("item_id", "culture", "modality")

# the quarantine keeps every row as given, values rendered as JSON text so rows
# of any (broken) shape fit one schema
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_row", pa.string()),
        ("item_id", pa.string()),
        ("row_json", pa.string()),
        ("field", pa.string()),
        ("reason", pa.string()),
    ]
)


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("item_id", pa.string()),
            ("culture", pa.string()),
            ("modality", pa.string()),
            ("encoder", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


class StrictModeError(ValueError):
    """Raised by `--strict` runs on the first bad row."""


@dataclass
class BadRow:
    row: dict[str, Any]
    field: str
    reason: str

    def record(self) -> dict[str, Any]:
        given = {k: v for k, v in self.row.items() if not k.startswith("_")}
        return {
            "source_row": self.row.get("_source_row"),
            "item_id": _as_text(self.row.get("item_id")),
            "row_json": json.dumps(given, default=str, ensure_ascii=False, sort_keys=True),
            "field": self.field,
            "reason": f"{self.field}: {self.reason}",
        }


@dataclass
class Validated:
    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def good_table(self) -> pa.Table:
        return pa.Table.from_pylist(
            [{k: r.get(k) for k in CORPUS_FIELDS} for r in self.good], schema=CORPUS_SCHEMA
        )

    def bad_table(self) -> pa.Table:
        return pa.Table.from_pylist([b.record() for b in self.bad], schema=QUARANTINE_SCHEMA)

    def reasons(self) -> dict[str, int]:
        """How many rows were quarantined for each field."""
        out: dict[str, int] = {}
        for b in self.bad:
            out[b.field] = out.get(b.field, 0) + 1
        return dict(sorted(out.items()))


def _as_text(v: Any) -> str | None:
    return None if v is None else str(v)


def _type_name(v: Any) -> str:
    return type(v).__name__


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _check_str(row: dict[str, Any], name: str, required: bool) -> tuple[str | None, str | None]:
    v = row.get(name)
    if _is_missing(v):
        return None, ("missing" if required else None)
    if not isinstance(v, str):
        return None, f"wrong type: expected a string, got {_type_name(v)} {v!r}"
    if required and not v.strip():
        return None, "empty"
    return v, None


def id_text(v: Any) -> Any:
    """An item id as the corpus contract keeps it: an integer (an int64 Parquet column,
    a JSON number) as its decimal string; anything else unchanged (a float or a bool
    stays a wrong type: is 12.0 "12" or "12.0"?)."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _check_id(row: dict[str, Any]) -> tuple[str | None, str | None]:
    return _check_str({"item_id": id_text(row.get("item_id"))}, "item_id", required=True)


# a missing value as R's write.csv ("NA"), spreadsheets and databases write one
_NO_YEAR = frozenset({"", "na", "n/a", "nan", "null", "none"})


def _check_int(row: dict[str, Any], name: str) -> tuple[int | None, str | None]:
    v = row.get(name)
    if _is_missing(v) or (isinstance(v, str) and v.strip().lower() in _NO_YEAR):
        return None, None
    if isinstance(v, bool):
        return None, f"wrong type: expected an integer year, got bool {v!r}"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    elif isinstance(v, str):
        # "1800", and "1800.0" as pandas writes an integer column that has gaps
        whole = re.fullmatch(r"\s*([+-]?\d+)(?:\.0*)?\s*", v)
        v = int(whole.group(1)) if whole else v
    if isinstance(v, int):
        if abs(v) >= 2 ** 63:  # what an int64 column holds
            return None, f"out of range: {str(v)[:40]} is no year"
        return v, None
    return None, f"wrong type: expected an integer year, got {_type_name(v)} {str(v)[:200]!r}"


def _check_themes(row: dict[str, Any]) -> tuple[list[str], str | None]:
    v = row.get("themes")
    if _is_missing(v) or v == "":
        return [], None
    if isinstance(v, str):
        # CSV carries themes as a JSON list or "a;b;c" ("a, b" and "a|b" as people write them)
        s = v.strip()
        if s.startswith("["):
            try:
                v = json.loads(s)
            except (ValueError, RecursionError):  # JSONDecodeError, huge ints, deep nesting
                v = _python_list(s)  # ['food', 'art']: pandas' to_csv of a list column
                if v is None:
                    return [], f"not a JSON list: {s[:200]!r}"
        else:
            v = [t for t in (p.strip() for p in re.split(r"[;,|]", s)) if t]
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        return [], f"wrong type: expected a list of strings, got {_type_name(v)}"
    bad = [t for t in v if not isinstance(t, str) or not t.strip()]
    if bad:
        return [], f"every theme must be a non-empty string, got {bad[0]!r}"
    return [t.strip().lower() for t in v], None


def _python_list(s: str) -> list[str] | None:
    """A list of strings written as Python writes one (`['a', "b's"]`, what pandas'
    `to_csv` gives a list column), read as a literal (no code runs); None otherwise."""
    import ast

    if len(s) > 100_000:
        return None
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return v if isinstance(v, list) and all(isinstance(t, str) for t in v) else None


_FIELD_SET = frozenset(CORPUS_FIELDS)


def corpus_keys(row: dict[str, Any]) -> dict[str, Any]:
    """A corpus row with its keys as the contract names them (`Text` is `text`:
    `tables.contract_keys`); what every reader of raw corpus rows looks up fields in."""
    return contract_keys(row, _FIELD_SET)


def check_row(row: dict[str, Any], idx: int,
              uri_roots: UriRoots | None = None) -> dict[str, Any] | BadRow:
    """One row against the per-row rules of the corpus contract: the clean row
    (normalised, with `_source_row` and `_idx`) or the BadRow saying which field
    is at fault. Duplicates and file existence need other rows or storage and are
    checked by the callers (`validate_rows`, the embed job)."""
    clean: dict[str, Any] = {"_source_row": row.get("_source_row", f"row {idx}"), "_idx": idx}
    as_given = row
    row = corpus_keys(row)

    def reject(fld: str, reason: str) -> BadRow:
        given = (as_given if "_source_row" in as_given
                 else {**as_given, "_source_row": clean["_source_row"]})
        return BadRow(given, fld, reason)

    for name in ("item_id", "culture", "modality"):
        val, problem = (_check_id(row) if name == "item_id"
                        else _check_str(row, name, required=True))
        if problem:
            return reject(name, problem)
        clean[name] = val.strip()
    clean["modality"] = clean["modality"].lower()  # `Text`, `IMAGE` as spreadsheets write them
    if clean["modality"] not in MODALITIES:
        return reject("modality", f"unknown value {clean['modality']!r} "
                      f"(expected one of {', '.join(MODALITIES)})")
    for name in ("text", "uri", "lang", "artifact_id", "source"):
        val, problem = _check_str(row, name, required=False)
        if problem:
            return reject(name, problem)
        clean[name] = val
    for name in ("era_start", "era_end"):
        val, problem = _check_int(row, name)
        if problem:
            return reject(name, problem)
        clean[name] = val
    if clean["era_start"] is not None and clean["era_end"] is not None \
            and clean["era_end"] < clean["era_start"]:
        return reject("era_end", f"{clean['era_end']} is before era_start {clean['era_start']}")
    themes, problem = _check_themes(row)
    if problem:
        return reject("themes", problem)
    clean["themes"] = themes
    if clean["modality"] == "text":
        if not clean["text"] or not clean["text"].strip():
            return reject("text", "empty for a text item")
    elif not clean["uri"] or not clean["uri"].strip():
        return reject("uri", f"missing for a {clean['modality']} item")
    elif uri_roots is not None and not uri_roots.allows(clean["uri"]):
        return reject("uri", uri_roots.outside(clean["uri"]))
    return clean


def duplicate_reason(item_id: str, first_source: str) -> str:
    return f"duplicate {item_id!r}, first seen at {first_source}"


def validate_rows(
    rows: Sequence[dict[str, Any]],
    uri_exists: Callable[[Iterable[str]], set[str]] | None = None,
    strict: bool = False,
    uri_roots: UriRoots | None = None,
) -> Validated:
    """Check every row against the corpus contract (in memory: the embed job runs
    the same rules as a distributed pipeline, `culturesim_ray.ingest`).

    uri_exists: given the uris of image/sequence rows, returns the set that
      exist and can be opened; None skips the check (the encoder still
      quarantines unreadable files when it decodes them).
    strict: raise `StrictModeError` naming the first bad row instead.
    uri_roots: image/sequence rows whose uri lies outside these roots are
      quarantined (field uri) before any file is touched; None skips the check
      (the embed job always passes the corpus's roots).
    """
    out = Validated()
    seen: dict[str, str] = {}
    pending_uri: list[dict[str, Any]] = []

    def keep_bad(bad: BadRow) -> None:
        if strict:
            raise StrictModeError(f"row {bad.row.get('_source_row')}: {bad.field}: {bad.reason}")
        out.bad.append(bad)

    for idx, row in enumerate(rows):
        clean = check_row(row, idx, uri_roots)
        if isinstance(clean, BadRow):
            keep_bad(clean)
            continue
        if clean["item_id"] in seen:
            keep_bad(BadRow(row if "_source_row" in row else {**row, "_source_row": clean["_source_row"]},
                            "item_id", duplicate_reason(clean["item_id"], seen[clean["item_id"]])))
            continue
        seen[clean["item_id"]] = str(row.get("_source_row", clean["_source_row"]))
        if clean["modality"] != "text" and uri_exists is not None:
            pending_uri.append(clean)
        else:
            out.good.append(clean)

    if pending_uri:
        found = uri_exists(r["uri"] for r in pending_uri)
        for clean in pending_uri:
            if clean["uri"] in found:
                out.good.append(clean)
            else:
                keep_bad(BadRow(clean, "uri", missing_file(clean["uri"])))
    out.good.sort(key=lambda r: r["_idx"])  # corpus order
    return out
