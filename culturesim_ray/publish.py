"""Publishing a local folder whole (standard library only: the melody LSTM's
saver uses it, and it runs where only torch is installed, `benchmarks/gpu_check.py`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def publish_dir(path: str | Path) -> Iterator[Path]:
    """A local folder whose files appear at `path` all together or not at all:
    the caller writes into the yielded hidden sibling (".NAME.<uuid>.tmp"); on a
    clean exit its files are fsynced and it is renamed to `path` (an existing
    `path` is moved aside first and removed after), so a reader finds the old
    folder, the new one, or, for the instant between two renames, none: never a
    mix. On an error the sibling is removed and `path` is left as it was."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    tmp = final.parent / f".{final.name}.{tag}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = final.parent / f".{final.name}.{tag}.old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
