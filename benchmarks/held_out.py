"""Held-out items -> culture, for `benchmarks/truth.py` (and `query_mix.py`,
`train.py`): the items `culturesim train` never trained on, their page titles and
their themes, answered through the model's query path (as the service answers)
and by the raw nearest culture mean, both over the training items only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from culturesim_ray.ops.query_score import QueryMix  # noqa: E402


def hit_rates(pos: np.ndarray, truth: np.ndarray, prefix: str) -> dict[str, float]:
    """Top-1/3/5 hit rates of ranked culture indices pos (n, >= 5) against truth (n,)."""
    return {f"{prefix}_top{k}": float(np.mean((pos[:, :k] == truth[:, None]).any(1)))
            for k in (1, 3, 5)}


def raw_scores(data: Any, modality: str, q: np.ndarray) -> np.ndarray:
    """(n, C) cosines of query vectors q (n, d) to the raw culture means of `data`'s
    `modality` items (the baseline every retrieval row is compared with)."""
    import torch

    g = data.graphs[modality]
    x = torch.nn.functional.normalize(g.x, dim=1)
    means = torch.zeros(len(data.cultures), x.shape[1]).index_add_(0, g.culture, x)
    means = torch.nn.functional.normalize(means, dim=1).numpy()
    return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ means.T


def model_query_path(model: Any, data: Any) -> tuple[Any, Any]:
    """(FusionPredictor, Retriever) of a trained model over `data`'s graphs and the
    model's culture vectors of `data`: what the service ranks a query with."""
    import pyarrow.compute as pc

    from culturesim_ray.serving.predictor import FusionPredictor, Retriever
    from culturesim_ray.training.export import export_culture_embeddings

    model.eval()
    emb = export_culture_embeddings(model, data)
    general = emb.filter(pc.equal(emb.column("head"), "general"))
    vec = np.stack(general.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    order = [general.column("culture").to_pylist().index(c) for c in data.cultures]
    slots = model.cfg.slots() if model.cfg.raw_weight > 0 else None
    retriever = Retriever(data.cultures, vec[order], slots=slots)
    return FusionPredictor(model, data.graphs, cultures=data.cultures), retriever


def query_retrieval(model: Any, data: Any, q: np.ndarray, truth: np.ndarray,
                    modality: str = "text", raw_only: bool = False,
                    mix: QueryMix | None = None) -> dict[str, Any]:
    """Top-1/3/5 of query vectors q (n, d) of `modality` whose cultures are `truth`
    (indices into data.cultures): the model's query path over `data`'s graphs (as the
    service answers, with the query mix `mix`; None: the plain general cosine) vs the
    raw nearest mean of `data`'s items (only that: raw_only), and model - raw at top-1
    and top-3 with a paired 95% bootstrap interval over the queries."""
    import torch

    from culturesim_ray.report.ranking import paired_rate_difference
    from culturesim_ray.serving.predictor import QueryRanker

    raw_pos = np.argsort(-raw_scores(data, modality, q), axis=1)[:, :5]
    out: dict[str, Any] = {"items": int(len(q)), **hit_rates(raw_pos, truth, "raw")}
    if raw_only:
        return out
    fusion, retriever = model_query_path(model, data)
    ranker = QueryRanker(fusion, retriever, mix if mix is not None else QueryMix.from_dict(None))
    with torch.inference_mode():
        _, model_pos = ranker.topk(fusion.fuse(modality, q), modality, modality, q, 5)
    model_pos = np.asarray(model_pos)
    out.update(hit_rates(model_pos, truth, "model"))
    for k in (1, 3):
        out[f"model_minus_raw_top{k}"] = paired_rate_difference(
            (model_pos[:, :k] == truth[:, None]).any(1), (raw_pos[:, :k] == truth[:, None]).any(1))
    return out


def table_queries(table: Any, cultures: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d) float32, culture indices (n,)) of an embeddings table."""
    from culturesim_ray.vectors import as_matrix

    q = as_matrix(table.column("vector"))
    return q, np.array([cultures.index(c) for c in table.column("culture").to_pylist()])


def load_held_out(run: Path) -> tuple[Any, Any, Any, Any, QueryMix]:
    """(the embed tables, the held-out items' table, the model, the training items'
    TrainingData, the run's query mix) of a truth run."""
    from culturesim_ray import io, runs
    from culturesim_ray.training.data import build_training_data, drop_items

    tables = runs.read_embeddings(str(run / "embed"))
    held = io.read_table(str(run / "train" / "holdout.parquet"))
    model = runs.load_fusion_model(run / "train")
    data = build_training_data(drop_items(tables, set(held.column("item_id").to_pylist())),
                               themes=model.cfg.themes)
    manifest = run / "train" / "serving" / "manifest.json"
    mix = QueryMix.from_dict(json.loads(manifest.read_text()).get("query_mix")
                             if manifest.exists() else None)
    return tables, held, model, data, mix


def held_out_table(tables: Any, held: Any, modality: str) -> Any:
    """The embed table rows of `modality` held out of training (None: none)."""
    import pyarrow.compute as pc

    if modality not in tables:
        return None
    t = tables[modality].filter(pc.is_in(tables[modality].column("item_id"),
                                         value_set=held.column("item_id")))
    return t if t.num_rows else None


def held_out_items(tables: Any, held: Any, data: Any, modality: str
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors, culture indices into data.cultures) of the held-out items of
    `modality`; None when there are none."""
    t = held_out_table(tables, held, modality)
    return None if t is None else table_queries(t, data.cultures)


def held_out_retrieval(run: Path, modality: str = "text") -> dict[str, Any]:
    """`query_retrieval` of the held-out items (RUN/train/holdout.parquet) of
    `modality`, over the graph and culture vectors of the training items only."""
    tables, held, model, data, mix = load_held_out(run)
    queries = held_out_items(tables, held, data, modality)
    if queries is None:
        return {}
    return query_retrieval(model, data, *queries, modality, mix=mix)


def source_title(source: str | None) -> str | None:
    """The page title of a `source` of the form "site:lang:Title" (the dev sets' and
    the demo's "wikipedia:en:Nile"); None for any other form."""
    parts = (source or "").split(":", 2)
    return parts[2].strip() or None if len(parts) == 3 and parts[0] and parts[1] else None


def title_queries(run: Path, tables: Any, held: Any, data: Any
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors, culture indices) of the page titles of the held-out text items of a
    truth run, encoded by the run's text encoder as the service encodes a query;
    None when the run has no held-out titled texts."""
    from culturesim_ray import io
    from culturesim_ray.serving.query_encoders import QueryEncoders

    t = held_out_table(tables, held, "text")
    if t is None:
        return None
    corpus = io.read_table(str(run / "corpus" / "corpus.parquet"), columns=["item_id", "source"])
    title = {i: source_title(s) for i, s in zip(corpus.column("item_id").to_pylist(),
                                                corpus.column("source").to_pylist(), strict=True)}
    rows = [(title[i], c) for i, c in zip(t.column("item_id").to_pylist(),
                                          t.column("culture").to_pylist(), strict=True)
            if title.get(i)]
    if not rows:
        return None
    q = np.asarray(QueryEncoders(str(run / "embed"), precision="float32")
                   .encode("text", [r[0] for r in rows]).vectors, np.float32)
    return q, np.array([data.cultures.index(c) for _, c in rows])


def held_out_titles(run: Path) -> dict[str, Any]:
    """Short queries: the page titles of the held-out text items ("Afonso I of
    Portugal", "Nowruz"), ranked by `query_retrieval` over the training items only.
    The sanity suite's kind of query (a few words naming a thing), hundreds of them,
    from sources the suite's author did not write. {} when there are none."""
    tables, held, model, data, mix = load_held_out(run)
    queries = title_queries(run, tables, held, data)
    return {} if queries is None else query_retrieval(model, data, *queries, "text", mix=mix)


def held_out_gate(run: Path) -> dict[str, Any]:
    """The theme gate (`serving.gate`) on the held-out items of every modality that
    carry one of the model's themes, fused as queries over the training items' graph
    (as `held_out_retrieval`): the share whose most likely theme is one of theirs,
    against always answering the training items' most common theme. {} for a model
    with fewer than two themes."""
    import torch

    from culturesim_ray import io, runs
    from culturesim_ray.ops.gate import accuracy, majority_accuracy, theme_targets
    from culturesim_ray.serving.predictor import FusionPredictor
    from culturesim_ray.training.data import build_training_data, drop_items

    model = runs.load_fusion_model(run / "train")
    themes = model.cfg.themes
    if model.theme_heads is None or len(themes) < 2:
        return {}
    tables = runs.read_embeddings(str(run / "embed"))
    held = set(io.read_table(str(run / "train" / "holdout.parquet")).column("item_id")
               .to_pylist())
    data = build_training_data(drop_items(tables, held), themes=themes)
    fusion = FusionPredictor(model, data.graphs, cultures=data.cultures)
    train_y = np.concatenate([theme_targets(g.themes.numpy())[1] for g in data.graphs.values()])
    probs, ys = [], []
    for m, t in tables.items():
        t = t.filter(np.array([i in held for i in t.column("item_id").to_pylist()], bool))
        if t.num_rows == 0 or m not in fusion.modalities:
            continue
        tags = np.array([[th in (row or []) for th in themes]
                         for row in t.column("themes").to_pylist()], bool).reshape(-1, len(themes))
        rows, y = theme_targets(tags)
        if not len(rows):
            continue
        q, _ = table_queries(t.take(rows), data.cultures)
        with torch.inference_mode():
            probs.append(model.theme_heads(fusion.fuse(m, q))[1].double().numpy())
        ys.append(y)
    if not ys:
        return {}
    p, y = np.concatenate(probs), np.concatenate(ys)
    return {"items": int(len(y)), "themes": len(themes), "accuracy": accuracy(p, y),
            "majority": majority_accuracy(train_y, y)}
