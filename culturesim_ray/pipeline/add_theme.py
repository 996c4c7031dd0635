"""`culturesim add-theme`: a new theme head trained on a finished run's frozen
backbone, exported where all-pairs, the report and the service read it.

One Ray task (a GPU one with `use_gpu`) runs the pure steps of
`training.add_theme` against the train run's store and model, then writes the
model with the new head (model.pt, model_config.json: temporary names, then
renamed) and the same export task as `culturesim train` writes the culture
embeddings (every head, the new one included) and the serving state, and
refits the theme gate over every theme (`serving.gate`: the gate's rows are
one classifier, so a new theme changes them all). The train manifest records
each added theme and the new gate's report. A rerun after a failure picks the
store's new theme up again; a theme the model already has is refused.

    ray job submit --working-dir . -- culturesim add-theme runs/demo --theme cuisine
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from culturesim_ray import io, tables
from culturesim_ray.layout import TrainLayout


def read_item_ids(path: str) -> list[str]:
    """Item ids from a text file (one per line; '#' comments), or the `item_id`
    column of a table the corpus reader takes (CSV or TSV with any of its
    delimiters, JSONL, Parquet)."""
    if path.lower().endswith(io.CORPUS_SUFFIXES):
        rows = tables.read_corpus_rows(path, fields=frozenset({"item_id"}))
        if rows and all("item_id" not in r for r in rows):
            columns = [c for c in rows[0] if c != "_source_row"]
            raise ValueError(f"{path}: no item_id column (columns: {columns})")
        return [str(r["item_id"]) for r in rows if r.get("item_id") is not None]
    with open(path, encoding="utf-8") as fh:
        return [s for line in fh if (s := line.strip()) and not s.startswith("#")]


def _task(train_root: str, theme: str, item_ids: list[str] | None, steps: int, seed: int,
          use_gpu: bool) -> dict[str, Any]:
    import torch

    from culturesim_ray.runs import load_fusion_model
    from culturesim_ray.training import add_theme as at
    from culturesim_ray.training.config import merge_train_config
    from culturesim_ray.training.store import open_store

    layout = TrainLayout(train_root)
    model = load_fusion_model(train_root)
    if theme in model.cfg.themes:
        raise at.ThemeError(f"the model of {train_root} has a {theme!r} head already")
    store_meta = io.read_json(os.path.join(layout.store, "store.json"))
    member = at.theme_members(layout.store, theme, item_ids)
    if theme in store_meta["themes"]:  # an earlier attempt extended the store, then failed
        if store_meta["themes"][-1] != theme:
            raise at.ThemeError(f"theme {theme!r} is in the store but not the model")
        facts = {"items": int(member.sum()), "resumed": True}
    else:
        facts = at.extend_store(layout.store, theme, member)
    manifest = io.read_json(layout.manifest)
    base = {k: v for k, v in manifest["config"].items() if k != "model_config"}
    cfg = merge_train_config(base, {"stages": [[1, 1]], "steps_per_epoch": steps,
                                    "seed": seed, "use_gpu": use_gpu})
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    grown = at.with_theme(model, theme, seed).to(device)
    pos = at.train_theme(grown, open_store(layout.store, "train"), cfg, theme, device)
    state = at.merged_state(original, grown.cpu(), theme)
    tmp = layout.model + ".tmp"
    torch.save(state, tmp)
    with open(layout.model_config + ".tmp", "w") as fh:
        json.dump({**io.read_json(layout.model_config), "themes": grown.cfg.themes}, fh)
    os.replace(tmp, layout.model)
    os.replace(layout.model_config + ".tmp", layout.model_config)
    return {**facts, "steps": pos.step,
            "loss": pos.history[-1]["loss"] if pos.history else None}


def run_add_theme(run: str, theme: str, items: str | None = None, steps: int = 100,
                  seed: int = 0, use_gpu: bool = False, log: Any = print) -> dict[str, Any]:
    """Add the theme `theme` to the train run of `run` (a run root or its train/);
    items: a file of the theme's item ids (default: the items tagged `theme`).
    Returns what the train manifest records for it."""
    import ray

    from culturesim_ray import io
    from culturesim_ray.pipeline.ray_env import init_ray
    from culturesim_ray.pipeline.train import _export_task

    io.require_local(run, "add-theme: run directory", "it rewrites the local train run")

    if not theme or not theme.strip() or theme != theme.strip():
        raise ValueError(f"--theme {theme!r}: a theme name is a non-empty word")
    if steps < 1:
        raise ValueError(f"--steps {steps}: at least 1")
    root = Path(run).absolute()
    train_root = root if (root / "model.pt").exists() else root / "train"
    layout = TrainLayout(str(train_root))
    for path in (layout.model, layout.manifest, os.path.join(layout.store, "store.json")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: {run} holds no finished train run "
                                    f"(expected RUN/train/ or a train directory)")
    if theme in io.read_json(layout.model_config).get("themes", []) or theme == "general":
        raise ValueError(f"the model of {train_root} has a {theme!r} head already")
    item_ids = read_item_ids(items) if items else None
    started = time.time()
    init_ray()
    gpus = 1 if use_gpu else 0
    facts = ray.get(ray.remote(num_cpus=1, num_gpus=gpus)(_task).remote(
        str(train_root), theme, item_ids, steps, seed, use_gpu))
    log(f"add-theme: {theme!r} head trained {facts['steps']} steps on "
        f"{facts['items']} items; exporting every head")
    # the gate is refitted over every theme, the new one included (`serving.gate`)
    exported = ray.get(ray.remote(num_cpus=1)(_export_task).remote(layout.store,
                                                                   str(train_root)))
    record = {"theme": theme, "items_file": items, "seconds": round(time.time() - started, 3),
              **facts}
    manifest = io.read_json(layout.manifest)
    manifest["config"]["model_config"]["themes"] = [*manifest["config"]["model_config"]
                                                    .get("themes", []), theme]
    manifest["gate"] = exported["gate"]
    manifest.setdefault("added_themes", []).append(record)
    io.write_json(manifest, layout.manifest)
    log(f"add-theme: culture embeddings with {theme!r} -> {layout.culture_embeddings}; "
        f"run `culturesim allpairs {train_root}` and redeploy the service to serve it")
    return record
