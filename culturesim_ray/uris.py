"""Where a corpus row's file may be: how a uri is resolved against the corpus file
naming it (`resolve_uri`), the allowlist of places it may point into (`UriRoots`),
and the reason a missing file is given (`missing_file`)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from culturesim_ray.io import CORPUS_SUFFIXES, is_s3

WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\data\x.png, D:/x.png: no path here


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


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


READ_SCHEMES = {"file": "local", "s3": "s3", "s3a": "s3"}  # uri scheme -> where it reads


def _split_uri(uri: str) -> tuple[str, str] | None:
    """(kind, canonical path) of a uri: ("local", realpath) or ("s3", "bucket/key"
    normalised); None for anything else (other schemes, fsspec "a::b" chains), which
    no root admits (a NUL byte too: no file has that name)."""
    if "::" in uri or "\x00" in uri:
        return None
    m = _SCHEME.match(uri)
    if m is None:
        if "://" in uri:
            return None
        return "local", os.path.realpath(uri)
    scheme, rest = m.group(1).lower(), m.group(2)
    if READ_SCHEMES.get(scheme) == "local":
        return "local", os.path.realpath(rest)
    if READ_SCHEMES.get(scheme) == "s3":
        return "s3", posixpath.normpath(rest).strip("/")
    return None


@dataclass(frozen=True)
class UriRoots:
    """Where the files of corpus rows may live: under the corpus root (the folder
    of the corpus file, or the corpus folder) or under one of `extra` (local paths
    or s3:// prefixes; `EmbedConfig.uri_roots`). Local paths are compared after
    `os.path.realpath`, so `..` and symlinks count where they lead; s3:// keys
    after normalising `..`. Relative uris are taken relative to the corpus root."""

    corpus: str
    extra: tuple[str, ...] = ()

    @classmethod
    def of(cls, corpus: str, extra: Iterable[str] = ()) -> UriRoots:
        """The roots of the corpus at `corpus` (a file or a folder, local or s3://)."""
        corpus = str(corpus)
        split = _split_uri(corpus if _SCHEME.match(corpus) else os.path.expanduser(corpus))
        if split is None:
            raise ValueError(f"corpus {corpus!r}: only local paths and s3:// are read")
        kind, path = split
        if kind == "s3":
            is_file = path.lower().endswith(CORPUS_SUFFIXES)
            root = "s3://" + (posixpath.dirname(path) if is_file else path)
        else:
            root = path if os.path.isdir(path) else os.path.dirname(path)
        return cls(root, tuple(str(r) for r in extra))

    @cached_property
    def _roots(self) -> list[tuple[str, str]]:
        out = []
        for r in (self.corpus, *self.extra):
            split = _split_uri(r if _SCHEME.match(r) else os.path.expanduser(r))
            if split is not None:
                out.append(split)
        return out

    def resolve(self, uri: str) -> tuple[str, str] | None:
        """(kind, path) of the file the uri reads; relative uris join the corpus root."""
        if "://" not in uri and not os.path.isabs(uri):
            uri = (self.corpus.rstrip("/") + "/" + uri if _SCHEME.match(self.corpus)
                   else os.path.join(self.corpus, uri))
        return _split_uri(uri)

    def allows(self, uri: str) -> bool:
        target = self.resolve(uri)
        if target is None:
            return False
        kind, path = target
        for rkind, root in self._roots:
            if rkind != kind:
                continue
            if kind == "local" and os.path.commonpath([path, root]) == root:
                return True
            if kind == "s3" and (path == root or path.startswith(root + "/")):
                return True
        return False

    def outside(self, uri: str) -> str:
        """The quarantine reason of a uri that `allows` refuses."""
        m = _SCHEME.match(uri)
        if m is not None and m.group(1).lower() not in READ_SCHEMES:
            return (f"{uri}: {m.group(1).lower()}:// is not read (only local paths and s3://; "
                    "fetch the files first and point the uris at the copies)")
        target = self.resolve(uri)
        shown = None if target is None else (
            "s3://" + target[1] if target[0] == "s3" else target[1])
        where = f" (resolves to {shown})" if shown and shown != uri else ""
        return (f"{uri}{where} is outside the allowed roots (corpus folder {self.corpus}; "
                f"uri_roots [{', '.join(self.extra)}]; --uri-root DIR adds one)")


def missing_file(uri: str) -> str:
    """Why a row's file is missing (without the field's name), with the cure when
    the uri is a Windows drive path (no such path exists where the job runs)."""
    hint = (" (a Windows drive path: write it relative to the corpus file, or copy the "
            "files where the job runs)" if WINDOWS_DRIVE.match(uri) else "")
    return f"file not found or not readable: {uri}{hint}"
