"""Tables a user gives, read one way: corpora, gold, relations, item lists,
culture attributes and caption pairs.

Parquet, JSONL (or a `.json` file holding one array), CSV/TSV with the delimiter
its header shows, and Excel workbooks (`.xlsx`, the first sheet); text in UTF-8 or
UTF-16 with its mark. Every row gets `_source_row` (`file:line`, `file#row`) so
an error or a quarantined row names where it came from, and a relative `uri` is
resolved against the file's folder. A file that cannot be read at all is a
`CorpusFormatError` naming the file (and line).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray.config import S3Config
from culturesim_ray.io import CORPUS_SUFFIXES, filesystem_for, is_s3
from culturesim_ray.uris import resolve_uri

_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a UTF-16 surrogate


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read at all (not one bad row: a bad file)."""


def list_corpus_files(path: str, s3: S3Config | None = None) -> list[str]:
    """The corpus files at `path`: the file itself, or the corpus files in a directory."""
    fs, p = filesystem_for(path, s3)
    if not fs.exists(p):
        raise FileNotFoundError(f"corpus not found: {path}")
    if fs.isdir(p):
        files = sorted(
            f for f in fs.find(p) if f.lower().endswith(CORPUS_SUFFIXES)
            and not posixpath.basename(f).startswith(("_", ".", "~$"))  # ~$: Excel's lock file
        )
        if not files:
            raise CorpusFormatError(
                f"{path}: directory holds no corpus file ({', '.join(CORPUS_SUFFIXES)})"
            )
        prefix = "s3://" if is_s3(path) else ""
        return [prefix + f for f in files]
    return [path]


def _decoded_lines(fh: Any, name: str) -> Iterator[str]:
    """Text lines of a binary stream: UTF-8 (with or without a byte-order mark), or
    UTF-16 with its mark (what Excel's "Unicode Text" writes). A line that does not
    decode names its number, the byte at fault and the cure."""
    head = fh.read(2)
    fh.seek(0)
    if head in (b"\xff\xfe", b"\xfe\xff"):
        lines = io.TextIOWrapper(fh, encoding="utf-16", newline="")
        lineno = 0
        try:
            for line in lines:
                lineno += 1
                yield line
        except UnicodeDecodeError as exc:
            raise CorpusFormatError(f"{name}:{lineno + 1}: not UTF-16 text after its "
                                    f"byte-order mark ({exc.reason})") from exc
        finally:  # the caller owns fh and closes it: the wrapper lets go of it open,
            if not fh.closed:  # and has nothing to let go of once the caller closed it
                lines.detach()
        return
    for lineno, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start:exc.start + 1].hex()
            raise CorpusFormatError(
                f"{name}:{lineno}: not UTF-8 text (byte 0x{byte} at position {exc.start + 1} "
                "of the line); save the file as UTF-8 (Excel: \"CSV UTF-8\")") from exc


def _iter_jsonl(fh: Iterable[bytes], name: str) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(_decoded_lines(fh, name), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusFormatError(f"{name}:{lineno}: not valid JSON ({exc.msg})") from exc
        except (ValueError, RecursionError) as exc:  # an int of > 4300 digits, deep nesting
            raise CorpusFormatError(f"{name}:{lineno}: not JSON this reader takes "
                                    f"({str(exc)[:120] or 'nested too deeply'})") from exc
        if _SURROGATE.search(line):
            _check_encodable(obj, f"{name}:{lineno}")
        if not isinstance(obj, dict):
            raise CorpusFormatError(
                f"{name}:{lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        obj["_source_row"] = f"{name}:{lineno}"
        yield obj


CSV_DELIMITERS = (",", ";", "\t", "|")  # the comma wins a tie


def csv_delimiter(header: str) -> str:
    """The delimiter of a CSV file from its header line: of `CSV_DELIMITERS`, the one
    that splits it into the most columns (Excel writes `;` where the comma is the
    decimal mark, and tab in "Unicode Text"); a one-column header keeps the comma."""
    def columns(delimiter: str) -> int:
        return len(next(csv.reader([header], delimiter=delimiter), []))

    return max(CSV_DELIMITERS, key=lambda d: (columns(d), -CSV_DELIMITERS.index(d)))


def _starts_with_bracket(fh: Any) -> bool:
    """Whether a JSON file holds one array (`[{...}, ...]`, as `json.dump` and pandas'
    `to_json(orient="records")` write) rather than one object per line."""
    head = fh.read(4096)
    fh.seek(0)
    utf16 = head[:2] in (b"\xff\xfe", b"\xfe\xff")
    return head.decode("utf-16" if utf16 else "utf-8-sig", errors="ignore").lstrip()[:1] == "["


def _iter_json_array(fh: Any, name: str) -> Iterator[dict[str, Any]]:
    """The objects of a file holding one JSON array, each named `file#index` (the
    whole file is parsed at once: a large corpus streams as JSONL, one per line)."""
    text = "".join(_decoded_lines(fh, name))
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorpusFormatError(f"{name}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except (ValueError, RecursionError) as exc:
        raise CorpusFormatError(f"{name}: not JSON this reader takes ({str(exc)[:120]})") from exc
    if not isinstance(items, list):
        raise CorpusFormatError(f"{name}: expected a JSON array of objects")
    surrogates = _SURROGATE.search(text) is not None
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise CorpusFormatError(f"{name}#{i}: expected a JSON object, got {type(obj).__name__}")
        if surrogates:
            _check_encodable(obj, f"{name}#{i}")
        obj["_source_row"] = f"{name}#{i}"
        yield obj


def _check_encodable(obj: dict[str, Any], where: str) -> None:
    """A JSON object whose strings hold a lone UTF-16 surrogate escape (valid JSON,
    but no text) is a CorpusFormatError naming where it is."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CorpusFormatError(f"{where}: not valid JSON text (a lone surrogate escape, "
                                f"{exc.reason})") from exc


def _iter_csv(fh: Any, name: str) -> Iterator[dict[str, Any]]:
    lines = _decoded_lines(fh, name)
    header = next(lines, None)
    if header is None or not header.strip():
        raise CorpusFormatError(f"{name}:1: CSV file has no header row")
    reader = csv.DictReader(itertools.chain([header], lines), delimiter=csv_delimiter(header))
    try:
        for rec in reader:
            # line_num is the physical line just read (header is line 1)
            if None in rec:
                raise CorpusFormatError(
                    f"{name}:{reader.line_num}: more fields than the header has"
                )
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in rec.items()}
            row["_source_row"] = f"{name}:{reader.line_num}"
            yield row
    except csv.Error as exc:
        raise CorpusFormatError(f"{name}:{reader.line_num}: malformed CSV ({exc})") from exc


def _iter_xlsx(fh: Any, name: str) -> Iterator[dict[str, Any]]:
    """The rows of an Excel workbook's first sheet (a header row, then one row per
    record; the other sheets are not read), streamed; each named `file:row` with the
    row number Excel shows. Cells come as Excel holds them: text, numbers (a whole
    number as an int), dates; an empty cell is missing."""
    import zipfile

    import openpyxl

    try:
        book = openpyxl.load_workbook(fh, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise CorpusFormatError(f"{name}: not a readable .xlsx workbook ({exc})") from exc
    try:
        sheet = book.worksheets[0]
        lines = sheet.iter_rows(values_only=True)
        header = next(lines, None)
        if header is None or all(h is None for h in header):
            raise CorpusFormatError(f"{name}:1: the first sheet has no header row")
        columns = [str(h).strip() if h is not None else "" for h in header]
        while columns and not columns[-1]:
            columns.pop()  # a sheet's header row often runs on in blank cells
        for number, values in enumerate(lines, start=2):
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue  # a blank row
            if any(v is not None for v in values[len(columns):]):
                raise CorpusFormatError(f"{name}:{number}: more fields than the header has")
            # as the CSV reader keys them: a blank header (a blank corner, pandas'
            # index column) is the key ""
            row: dict[str, Any] = {c: (v if v != "" else None)
                                   for c, v in zip(columns, values, strict=False)}
            row["_source_row"] = f"{name}:{number}"
            yield row
    finally:
        book.close()


def _iter_parquet(fh: Any, name: str, chunk_rows: int) -> Iterator[dict[str, Any]]:
    try:
        pf = pq.ParquetFile(fh)
        i = 0
        for batch in pf.iter_batches(batch_size=chunk_rows):
            for row in batch.to_pylist():
                row["_source_row"] = f"{name}#{i}"
                i += 1
                yield row
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorpusFormatError(f"{name}: not a readable Parquet file ({exc})") from exc


def iter_corpus_file(file: str, s3: S3Config | None = None,
                     chunk_rows: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """The rows of one corpus file in chunks of at most `chunk_rows`, streamed
    (memory bounded by one chunk). Each row gets `_source_row` ("file:line" for
    JSONL/CSV, "file#row" for Parquet) and a relative `uri` is resolved against the
    file's folder. A file that cannot be parsed raises `CorpusFormatError` naming
    the file (and line)."""
    fs, p = filesystem_for(file, s3)
    lower = p.lower()
    base = posixpath.dirname(file) if is_s3(file) else str(Path(p).parent)
    with fs.open(p, "rb") as fh:
        if lower.endswith((".parquet", ".pq")):
            rows = _iter_parquet(fh, file, chunk_rows)
        elif lower.endswith((".csv", ".tsv")):
            rows = _iter_csv(fh, file)
        elif lower.endswith(".xlsx"):
            rows = _iter_xlsx(fh, file)
        elif _starts_with_bracket(fh):
            rows = _iter_json_array(fh, file)
        else:
            rows = _iter_jsonl(fh, file)
        chunk: list[dict[str, Any]] = []
        for row in rows:
            key = "uri" if "uri" in row else _key_like(row, "uri")  # `URI` in a spreadsheet
            uri = row.get(key) if key is not None else None
            if isinstance(uri, str) and uri.strip():
                row[key] = resolve_uri(uri.strip(), base)
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def iter_corpus_rows(path: str, s3: S3Config | None = None,
                     fields: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row of the corpus at `path` as a dict, in file order, streamed (memory
    bounded by one chunk of `iter_corpus_file`); with `fields`, each row's keys as
    that contract names them (`contract_keys`)."""
    for file in list_corpus_files(path, s3):
        for chunk in iter_corpus_file(file, s3):
            yield from (chunk if fields is None else (contract_keys(r, fields) for r in chunk))


def read_corpus_rows(path: str, s3: S3Config | None = None,
                     fields: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """`iter_corpus_rows` as a list (in memory: for small corpora, relations and
    gold; the embed job streams `iter_corpus_file`)."""
    return list(iter_corpus_rows(path, s3, fields))


def field_name(key: str) -> str:
    """A column name as contracts compare them: without case or surrounding spaces."""
    return key.strip().lower()


def contract_keys(row: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """The row with its keys as a contract's `fields` name them: a spreadsheet's
    `Culture` or ` item_id ` is `culture`, `item_id` (a key the row also has exactly
    wins); other keys as they are. The row itself when no key needs it (one pass)."""
    if all(k in fields or not isinstance(k, str) or field_name(k) not in fields for k in row):
        return row
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = field_name(k) if isinstance(k, str) else k
        if key in fields and key != k:
            if key not in row:  # the exact name is there too: it wins
                out[key] = v
        else:
            out[k] = v
    return out


def _key_like(row: dict[str, Any], field: str) -> str | None:
    """The row's key that names `field` but for case and spacing (`contract_keys`)."""
    return next((k for k in row if isinstance(k, str) and field_name(k) == field), None)
