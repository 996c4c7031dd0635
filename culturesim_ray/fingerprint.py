"""Fingerprints of the settings that shape an output (pure: no I/O).

A job records, next to what it writes, every setting that changes the bytes
it writes (the encoder, its model files' hash, max_length, ...). A rerun into
the same place compares its own fingerprint with the recorded one: equal, it
resumes; different, it is refused with the fields that differ named, unless
the caller asked to overwrite. Outputs of two settings are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any


class SettingsMismatchError(ValueError):
    """A rerun into an output written with other settings."""


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able value (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_digest(path: str) -> str:
    """The hash of a model file or of every file under a model directory (names,
    sizes and contents; read in 1 MiB chunks)."""
    h = hashlib.sha256()
    if os.path.isfile(path):
        paths = [path]
        base = os.path.dirname(path)
    else:
        base = path
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for p in paths:
        h.update(os.path.relpath(p, base).encode())
        h.update(str(os.path.getsize(p)).encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def differing(recorded: Mapping[str, Any], current: Mapping[str, Any],
              prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (present on one side only counts)."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differing(a, b, prefix=name + ".")
        elif a != b:
            out.append(name)
    return out


def describe(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """'field: old -> new' for each differing field, joined by '; ' (a field one side
    lacks: 'not recorded', e.g. a setting an earlier version did not have)."""
    parts = []
    for name in differing(recorded, current):
        a: Any = recorded
        b: Any = current
        for key in name.split("."):
            a = a.get(key, _ABSENT) if isinstance(a, Mapping) else _ABSENT
            b = b.get(key, _ABSENT) if isinstance(b, Mapping) else _ABSENT
        parts.append(f"{name}: {_shown(a, 'not recorded (an earlier version)')} -> "
                     f"{_shown(b, 'none')}")
    return "; ".join(parts)


_ABSENT = object()


def _shown(value: Any, absent: str) -> str:
    return absent if value is _ABSENT else repr(value)


def check(recorded: Mapping[str, Any] | None, current: Mapping[str, Any], where: str,
          overwrite: bool = False) -> bool:
    """True when `where` holds output of other settings that `overwrite` allows to
    replace; False when there is nothing recorded or the settings agree. Raises
    SettingsMismatchError naming the differing fields otherwise."""
    if recorded is None or not differing(recorded, current):
        return False
    if overwrite:
        return True
    raise SettingsMismatchError(
        f"{where} was written with other settings ({describe(recorded, current)}); "
        "rerun with --overwrite to replace it, or write to another --out")
