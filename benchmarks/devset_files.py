"""What every dev set's builder ends with (`benchmarks/devsets.py`, `devset_folk.py`,
`devset_mixed.py`): its description file and the summary `devsets.build` returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def finish(out: Path, meta: dict[str, Any], corpus: Path, gold: Path,
           cultures: list[str]) -> dict[str, Any]:
    """Write out/devset.json (`meta`) and return what every dev set's build returns:
    name, corpus, gold, meta (paths as str), gold_kind, modality (what the raw
    baseline reads), cultures."""
    meta_path = out / "devset.json"
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"name": meta["name"], "corpus": str(corpus), "gold": str(gold),
            "meta": str(meta_path), "gold_kind": meta["gold_kind"],
            "modality": meta.get("modality", "text"), "cultures": cultures}
