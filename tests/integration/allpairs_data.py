"""Item tables and a log collector for the all-pairs job tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def quiet(*_a, **_k):
    return None


def item_table(n_cultures=30, per=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_cultures, d))
    rows = []
    for c in range(n_cultures):
        for j in range(per):
            rows.append({"item_id": f"c{c}-{j}", "culture": f"culture-{c:03d}",
                         "vector": (centers[c] + 0.5 * rng.normal(size=d)).astype(np.float32).tolist(),
                         "themes": ["music"] if j % 2 else ["craft", "music"]})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("item_id", pa.string()), ("culture", pa.string()),
        ("vector", pa.list_(pa.float32(), d)), ("themes", pa.list_(pa.string()))]))


class Log(list):
    def __call__(self, msg, *_a, **_k):
        self.append(str(msg))
