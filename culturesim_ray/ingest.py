"""The corpus contract as batch functions (pure: no ray), the steps of the embed
job's streaming ingest (`pipeline/embed.py` only maps them over Ray Data):

    corpus file -> read_validated (per-row rules, in chunks)
                -> [hash shuffle on item_id, with the ids already written]
                -> resolve_partition (duplicates, resume)
                -> fetch_uris (image/sequence bytes, in a CPU stage)
                -> encoder

Every row travels as one `STAGED_SCHEMA` table row whose `_status` says what it
is: "good" (passed the per-row rules), "written" (an id the output already
holds), then after `resolve_partition` "todo" (to embed), "done" (embedded by
an earlier run) or "bad" (quarantined: `_field`, `_reason`, `_row_json`).
`_order` is a global position (file index, row in file), so "first" means the
same thing whichever worker sees the rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from culturesim_ray.schema import (
    CORPUS_FIELDS,
    CORPUS_SCHEMA,
    QUARANTINE_SCHEMA,
    BadRow,
    check_row,
    duplicate_reason,
)
from culturesim_ray.uris import UriRoots, missing_file

ROWS_PER_FILE_BITS = 40  # _order = file index << 40 | row position in the file

STAGED_SCHEMA = pa.schema([
    *CORPUS_SCHEMA,
    ("_order", pa.int64()),
    ("_source_row", pa.string()),
    ("_status", pa.string()),
    ("_field", pa.string()),
    ("_reason", pa.string()),
    ("_row_json", pa.string()),
])


def order_key(file_index: int, position: int) -> int:
    return (file_index << ROWS_PER_FILE_BITS) | position


def _empty_staged(n: int) -> dict[str, list[Any]]:
    return {name: [None] * n for name in STAGED_SCHEMA.names}


def read_validated(rows: Sequence[dict[str, Any]], file_index: int, first_position: int,
                   uri_roots: UriRoots | None) -> pa.Table:
    """One chunk of a corpus file's rows checked against the per-row rules:
    good rows normalised to the corpus fields, bad rows as given with field and
    reason, both as STAGED_SCHEMA rows ordered by `_order`."""
    cols = _empty_staged(len(rows))
    for i, row in enumerate(rows):
        pos = first_position + i
        cols["_order"][i] = order_key(file_index, pos)
        result = check_row(row, pos, uri_roots)
        if isinstance(result, BadRow):
            rec = result.record()
            cols["item_id"][i] = rec["item_id"]
            cols["_source_row"][i] = rec["source_row"]
            cols["_status"][i] = "bad"
            cols["_field"][i] = rec["field"]
            cols["_reason"][i] = rec["reason"]
            cols["_row_json"][i] = rec["row_json"]
            continue
        for name in CORPUS_FIELDS:
            cols[name][i] = result.get(name)
        cols["_source_row"][i] = str(result["_source_row"])
        cols["_status"][i] = "good"
    return pa.table(cols, schema=STAGED_SCHEMA)


def written_rows(item_ids: pa.Array, modalities: pa.Array, errors: pa.Array) -> pa.Table:
    """Ids an earlier run already wrote (with their error, if it failed) as
    STAGED_SCHEMA rows of status "written"; `_reason` holds the error."""
    n = len(item_ids)
    cols = _empty_staged(n)
    table = pa.table(cols, schema=STAGED_SCHEMA)
    table = table.set_column(0, "item_id", pa.array(item_ids, pa.string()))
    table = table.set_column(table.schema.get_field_index("modality"), "modality",
                             pa.array(modalities, pa.string()))
    table = table.set_column(table.schema.get_field_index("_status"), "_status",
                             pa.array(["written"] * n, pa.string()))
    return table.set_column(table.schema.get_field_index("_reason"), "_reason",
                            pa.array(errors, pa.string()))


def clean_record(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """The quarantine record of a row that passed validation but failed later
    (its file, its encoder): the row as normalised, and `reason` ("field: text")."""
    field, _, text = reason.partition(": ")
    given = {k: row.get(k) for k in CORPUS_FIELDS}
    given["_source_row"] = row.get("_source_row")
    return BadRow(given, field or "row", text or reason).record()


def resolve_partition(table: pa.Table) -> pa.Table:
    """Duplicates and resume over one hash partition of `item_id` (every row of an
    id, and its written twin, are in the same partition).

    The first good row of an id by `_order` is kept; later ones become bad rows
    naming the first's source. A kept row already written for its modality is
    "done" (or "bad" with the written error if it failed then); otherwise "todo".
    Rows of status "written" are consumed here and not passed on."""
    status = table.column("_status").to_pylist()
    written: dict[tuple[str, str], str | None] = {}
    w_ids = [i for i, s in enumerate(status) if s == "written"]
    if w_ids:
        wt = table.take(pa.array(w_ids, pa.int64()))
        for item_id, modality, err in zip(wt.column("item_id").to_pylist(),
                                          wt.column("modality").to_pylist(),
                                          wt.column("_reason").to_pylist(), strict=True):
            written[(item_id, modality)] = err
    keep = [i for i, s in enumerate(status) if s != "written"]
    table = table.take(pa.array(keep, pa.int64()))
    if table.num_rows == 0:
        return table
    table = table.sort_by("_order")
    rows = table.to_pylist()
    first: dict[str, str] = {}
    for row in rows:
        if row["_status"] != "good":
            continue
        item_id = row["item_id"]
        if item_id in first:
            rec = BadRow(row, "item_id", duplicate_reason(item_id, first[item_id])).record()
            row.update(_status="bad", _field="item_id", _reason=rec["reason"],
                       _row_json=_given_json(row))
            continue
        first[item_id] = row["_source_row"]
        key = (item_id, row["modality"])
        if key not in written:
            row["_status"] = "todo"
        elif written[key] is None:
            row["_status"] = "done"
        else:
            rec = clean_record(row, written[key])
            row.update(_status="bad", _field=rec["field"], _reason=rec["reason"],
                       _row_json=rec["row_json"])
    return pa.Table.from_pylist(rows, schema=STAGED_SCHEMA)


def _given_json(row: dict[str, Any]) -> str:
    given = {k: row.get(k) for k in CORPUS_FIELDS}
    return json.dumps(given, default=str, ensure_ascii=False, sort_keys=True)


def select(table: pa.Table, status: str | Sequence[str], modality: str | None = None) -> pa.Table:
    """The rows of `table` with this status (or one of these) and modality."""
    wanted = [status] if isinstance(status, str) else list(status)
    mask = pc.is_in(table.column("_status"), pa.array(wanted, pa.string()))
    if modality is not None:
        mask = pc.and_(mask, pc.equal(table.column("modality"), modality))
    return table.filter(mask)


def quarantine_of_staged(table: pa.Table) -> pa.Table:
    """The bad rows of a STAGED_SCHEMA table as quarantine records."""
    bad = select(table, "bad")
    return pa.table({
        "source_row": bad.column("_source_row"),
        "item_id": bad.column("item_id"),
        "row_json": bad.column("_row_json"),
        "field": bad.column("_field"),
        "reason": bad.column("_reason"),
    }, schema=QUARANTINE_SCHEMA)


def quarantine_of_encoded(table: pa.Table) -> pa.Table:
    """The rows an encoder (or the fetch stage) failed on, from an embeddings
    table that carries `source_row`, `row_json` and `error`, as quarantine records."""
    failed = table.filter(pc.is_valid(table.column("error")))
    reasons = failed.column("error").to_pylist()
    return pa.table({
        "source_row": failed.column("source_row"),
        "item_id": failed.column("item_id"),
        "row_json": failed.column("row_json"),
        "field": pa.array([r.partition(": ")[0] or "row" for r in reasons], pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }, schema=QUARANTINE_SCHEMA)


def missing_reason(uri: str) -> str:
    return f"uri: {missing_file(uri)}"


def fetch_uris(table: pa.Table, read: Any, check_uris: bool = True) -> pa.Table:
    """The bytes of every row's file in a `data` column, and an `error` column:
    a missing file is the row's error ("uri: file not found or not readable"),
    any other failure of `read` (an outage) raises and fails the job."""
    uris = table.column("uri").to_pylist()
    datas: list[bytes | None] = []
    errors: list[str | None] = []
    for uri in uris:
        try:
            datas.append(read(uri))
            errors.append(None)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            datas.append(None)
            errors.append(missing_reason(uri) if check_uris
                          else f"uri: cannot read {uri}: {type(exc).__name__}: {exc}")
    return table.append_column("data", pa.array(datas, pa.binary())).append_column(
        "error", pa.array(errors, pa.string()))


def sample_hash(item_ids: Sequence[str], key: str = "sample") -> np.ndarray:
    """A keyed 63-bit hash per id (uniform, independent of row order): the rows with
    the smallest values are a deterministic sample of any size."""
    out = np.empty(len(item_ids), dtype=np.int64)
    for i, item_id in enumerate(item_ids):
        h = hashlib.blake2b(item_id.encode(), digest_size=8, key=key.encode()).digest()
        out[i] = int.from_bytes(h, "big") >> 1
    return out


def split_by_key(table: pa.Table, parts: int, key: str = "item_id") -> list[pa.Table]:
    """`table` split into `parts` tables by a stable hash of `key` (crc32, the same
    in every process), so every row of one key lands in the same part; a null key
    goes to part 0."""
    import zlib

    ids = table.column(key).to_pylist()
    which = np.fromiter(((zlib.crc32(i.encode()) % parts) if i is not None else 0 for i in ids),
                        dtype=np.int64, count=len(ids))
    return [table.filter(pa.array(which == p)) for p in range(parts)]


def status_counts(table: pa.Table) -> list[tuple[str, str | None, str | None, int]]:
    """(status, modality, field, rows) for every combination present in `table`."""
    from collections import Counter

    c = Counter(zip(table.column("_status").to_pylist(), table.column("modality").to_pylist(),
                    table.column("_field").to_pylist(), strict=True))
    return [(*key, n) for key, n in c.items()]


def first_row(table: pa.Table) -> dict[str, Any] | None:
    """The row with the smallest `_order`, or None for an empty table."""
    if table.num_rows == 0:
        return None
    i = int(pc.index(table.column("_order"), pc.min(table.column("_order"))).as_py())
    return table.slice(i, 1).to_pylist()[0]


def culture_counts(table: pa.Table) -> list[tuple[str, str, int]]:
    """(culture, modality, rows) of the usable rows (status todo or done) of `table`."""
    from collections import Counter

    usable = select(table, ["todo", "done"])
    c = Counter(zip(usable.column("culture").to_pylist(), usable.column("modality").to_pylist(),
                    strict=True))
    return [(*key, n) for key, n in c.items()]


def first_bad(table: pa.Table, n: int) -> list[tuple[int, str]]:
    """(order, 'SOURCE_ROW: REASON') of the first `n` bad rows of `table`."""
    bad = select(table, "bad")
    if bad.num_rows == 0:
        return []
    idx = pc.sort_indices(bad.column("_order")).slice(0, n)
    first = bad.take(idx)
    return [(o, f"{s}: {r}") for o, s, r in zip(first.column("_order").to_pylist(),
                                                 first.column("_source_row").to_pylist(),
                                                 first.column("_reason").to_pylist(), strict=True)]


def missing_files(table: pa.Table, existing: Any,
                  n: int) -> tuple[list[tuple[str, str, int]], list[tuple[int, str]]]:
    """The rows to embed whose file is missing, found without reading the files:
    ([(modality, culture, rows)], the first `n` as (order, 'SOURCE_ROW: REASON')), with
    `existing(uris)` the subset of uris that name readable files (`io.existing_uris`)."""
    from collections import Counter

    files = table.filter(pc.and_(pc.equal(table.column("_status"), "todo"),
                                 pc.is_in(table.column("modality"),
                                          pa.array(["image", "sequence"], pa.string()))))
    found = existing(files.column("uri").to_pylist())
    missing = [i for i, u in enumerate(files.column("uri").to_pylist()) if u not in found]
    gone = files.take(pa.array(missing, pa.int64()))
    per = Counter(zip(gone.column("modality").to_pylist(), gone.column("culture").to_pylist(),
                      strict=True))
    first = sorted(zip(gone.column("_order").to_pylist(), gone.column("_source_row").to_pylist(),
                       gone.column("uri").to_pylist(), strict=True))[:n]
    return [(*k, c) for k, c in per.items()], [(o, f"{s}: {missing_reason(u)}")
                                                for o, s, u in first]
