"""Reading a finished run back (pure: no ray): embeddings, the encoders the
embed run used, and the trained fusion model. The jobs write these outputs;
serving, reports and evaluation read them through here.

Run directory layout (what `culturesim demo --out RUN` writes; each part can
also live elsewhere and be named on its own):

    RUN/embed/       embeddings/<modality>/*.parquet, manifest.json, models/
    RUN/train/       model.pt (state dict), model_config.json, culture_embeddings.parquet
    RUN/allpairs/    pairs.parquet, matrices/, manifest.json
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from culturesim_ray import io
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.schema import MODALITIES
from culturesim_ray.vectors import as_matrix


def read_embeddings(out: str, modality: str | None = None,
                    cfg: EmbedConfig | None = None,
                    columns: list[str] | None = None,
                    cultures: Collection[str] | None = None) -> dict[str, pa.Table]:
    """The embedded rows of an embed run, per modality (rows with an error left out);
    columns: only these (and item_id, the sort key), e.g. ["culture"] without the vectors
    (source_row, the corpus row an item came from, only when named here); cultures:
    only the items of these (the others are not read)."""
    cfg = cfg or EmbedConfig()
    result = {}
    from culturesim_ray.layout import EmbedLayout

    for m in [modality] if modality else MODALITIES:
        fs, p = io.filesystem_for(EmbedLayout(out).embeddings(m), cfg.s3)
        if not fs.exists(p) or not any(f.endswith(".parquet") for f in fs.find(p)):
            continue
        table = pq.read_table(p, filesystem=io.arrow_filesystem(fs), columns=(
            list(dict.fromkeys(["item_id", *columns, "error"])) if columns else None),
            filters=(pc.field("culture").isin(sorted(cultures)) if cultures is not None
                     else None))
        table = table.filter(pc.is_null(table.column("error")))
        table = table.drop_columns([c for c in ("error", "source_row", "row_json")
                                    if c in table.column_names and c not in (columns or ())])
        result[m] = table.sort_by("item_id")
    return result


def iter_embeddings(out: str, modality: str, columns: list[str],
                    cultures: Collection[str] | None = None, cfg: EmbedConfig | None = None,
                    batch_rows: int = 16_384) -> Iterator[pa.RecordBatch]:
    """`read_embeddings`'s rows of one modality as record batches of `columns` (those
    the files have), file by file in the files' sorted order (the same order on
    every call), so a caller holds one batch at a time; nothing when the run has no
    such embeddings."""
    cfg = cfg or EmbedConfig()
    fs, p = io.filesystem_for(EmbedLayout(out).embeddings(modality), cfg.s3)
    if not fs.exists(p) or not any(f.endswith(".parquet") for f in fs.find(p)):
        return
    keep = pc.is_null(pc.field("error"))
    if cultures is not None:
        keep = keep & pc.field("culture").isin(sorted(cultures))
    data = ds.dataset(p, filesystem=io.arrow_filesystem(fs), format="parquet")
    columns = [c for c in columns if c in data.schema.names]
    # decoded in this thread, a batch at a time: pyarrow's threaded scan runs ahead of a
    # slower consumer and holds many decoded batches (RESULTS.md, session 32)
    yield from data.to_batches(columns=columns, filter=keep, batch_size=batch_rows,
                               batch_readahead=1, fragment_readahead=1, use_threads=False)


def culture_means(out: str, modality: str, cultures: Collection[str] | None = None,
                  cfg: EmbedConfig | None = None) -> tuple[list[str], np.ndarray]:
    """The raw culture means of one modality (items L2-normalised, then averaged:
    `ops.pooling.pool`'s general head), streamed: memory grows with the cultures,
    not the items. cultures: these alone (the others are not read)."""
    from culturesim_ray.ops.pooling import RunningMeans

    acc = RunningMeans()
    for batch in iter_embeddings(out, modality, ["culture", "vector"], cultures, cfg):
        acc.add(as_matrix(batch.column("vector"), f"{out} ({modality} embeddings)"),
                batch.column("culture").to_pylist())
    return acc.result()


def read_quarantine(out: str, cfg: EmbedConfig | None = None) -> pa.Table:
    """Every quarantined row of an embed run (OUT/quarantine/, the Parquet files the
    workers wrote; OUT/quarantine.parquet of older runs), ordered by source row."""
    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.schema import QUARANTINE_SCHEMA

    cfg = cfg or EmbedConfig()
    layout = EmbedLayout(out)
    for path in (layout.quarantine, layout.legacy_quarantine):
        fs, p = io.filesystem_for(path, cfg.s3)
        if not fs.exists(p):
            continue
        files = [f for f in fs.find(p) if f.endswith(".parquet")] if fs.isdir(p) else [p]
        if not files:
            break
        tables = []
        for f in sorted(files):
            with fs.open(f, "rb") as fh:
                tables.append(pq.read_table(fh).cast(QUARANTINE_SCHEMA))
        table = pa.concat_tables(tables)
        table = table.group_by(table.column_names, use_threads=False).aggregate([])  # retried twins
        return table.take(pc.sort_indices(table, [("source_row", "ascending"),
                                                  ("item_id", "ascending")]))
    return QUARANTINE_SCHEMA.empty_table()


def quarantine_example(out: str, cfg: EmbedConfig | None = None) -> str | None:
    """'SOURCE_ROW: REASON' of one quarantined row of an embed run (the first of the
    first quarantine file: one row read, however large the quarantine), or None."""
    from culturesim_ray.layout import EmbedLayout

    cfg = cfg or EmbedConfig()
    fs, p = io.filesystem_for(EmbedLayout(out).quarantine, cfg.s3)
    if not fs.exists(p):
        return None
    for f in sorted(f for f in fs.find(p) if f.endswith(".parquet")):
        with fs.open(f, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=1,
                                                         columns=["source_row", "reason"]):
                if batch.num_rows:
                    row = batch.to_pylist()[0]
                    return f"{row['source_row']}: {row['reason']}"
    return None


def embed_manifest(embed_dir: str) -> dict[str, Any]:
    from culturesim_ray.layout import EmbedLayout

    path = EmbedLayout(embed_dir).manifest
    if not io.exists(path):
        raise FileNotFoundError(f"{path}: not an embed run (no manifest.json)")
    return io.read_json(path)


def embed_notes(embed_dir: str) -> list[str]:
    """What the embed run told its user (its manifest's notes, e.g. texts its encoder
    cannot read), for the jobs that read the run to say again."""
    return [f"the embed run {embed_dir}: {n}" for n in embed_manifest(embed_dir).get("notes", [])]


def run_encoder_kwargs(embed_dir: str, modality: str) -> tuple[str, dict[str, Any]]:
    """(encoder name, constructor kwargs) that rebuild the encoder `modality` was
    embedded with in this run, so a query lands in the same space as the corpus."""
    manifest = embed_manifest(embed_dir)
    enc = manifest.get("encoders", {}).get(modality)
    if enc is None:
        raise ValueError(f"the embed run {embed_dir} has no {modality!r} items "
                         f"(modalities: {sorted(manifest.get('encoders', {}))})")
    cfg = EmbedConfig(**manifest["config"])
    name = enc["name"]
    spec = registry.get(name)
    state = None
    if spec.state is not None:  # the state the embed job fitted, or the one it was given
        layout = EmbedLayout(embed_dir)
        state = layout.tfidf if modality == "text" else (cfg.sequence_model or layout.lstm)
    return name, registry.encoder_kwargs(name, cfg, state)


def train_relations(train_dir: str | Path) -> str | None:
    """The relations file a train run's graphs were built with (None: none, or no manifest)."""
    from culturesim_ray.layout import TrainLayout

    path = TrainLayout(str(train_dir)).manifest
    if not io.exists(path):
        return None
    return io.read_json(path).get("config", {}).get("relations")


def load_fusion_model(train_dir: str | Path, device: str = "cpu") -> Any:
    """The trained CultureSim model of a train run (weights only, never unpickled code)."""
    import torch

    from culturesim_ray.layout import TrainLayout
    from culturesim_ray.models.culturesim import CultureSim, CultureSimConfig

    layout = TrainLayout(str(train_dir))
    for path in (layout.model, layout.model_config):
        if not io.exists(path):
            raise FileNotFoundError(f"{path}: not a finished train run")
    cfg = CultureSimConfig(**io.read_json(layout.model_config))
    model = CultureSim(cfg)
    fs, p = io.filesystem_for(layout.model)
    with fs.open(p, "rb") as fh:
        model.load_state_dict(torch.load(fh, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def raw_slots(train_dir: str | Path) -> dict[str, tuple[int, int]] | None:
    """modality -> (start, stop) columns of the general embedding's raw residual
    (`models.culturesim`), or None when the model has none."""
    from culturesim_ray.layout import TrainLayout
    from culturesim_ray.models.culturesim import CultureSimConfig

    cfg = CultureSimConfig(**io.read_json(TrainLayout(str(train_dir)).model_config))
    if cfg.raw_weight <= 0:
        return None
    return cfg.slots()


def read_map_whitening(train_dir: str, model_config: dict[str, Any],
                       s3: Any = None) -> dict[str, Any] | None:
    """modality -> (d, d) float32 whitening of a train run's culture map
    (`map_whitening.npz`, `ops.whiten`), or None when the run's `model_config` (its
    model_config.json, as the caller read it) has no `map_whiten` (runs trained
    before it). A run whose config has it but whose file is missing is a
    FileNotFoundError naming the file."""
    import io as _io

    from culturesim_ray.layout import TrainLayout
    from culturesim_ray.models.culturesim import CultureSimConfig

    cfg = CultureSimConfig(**model_config)
    if cfg.map_whiten <= 0 or cfg.raw_weight <= 0:
        return None
    layout = TrainLayout(str(train_dir))
    path = layout.map_whitening
    if not io.exists(path, s3):
        raise FileNotFoundError(f"{path}: the culture map's whitening of this train run "
                                f"(map_whiten={cfg.map_whiten:g}) is missing; train again, "
                                "or copy the whole train directory")
    fs, p = io.filesystem_for(path, s3)
    with fs.open(p, "rb") as fh:
        data = np.load(_io.BytesIO(fh.read()))
        return {m: np.asarray(data[m], dtype=np.float32) for m in data.files}


def write_map_whitening(mats: dict[str, Any], path: str, s3: Any = None) -> None:
    """Write `read_map_whitening`'s file: one (d, d) float32 array per modality."""
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **{m: np.asarray(t, dtype=np.float32) for m, t in mats.items()})
    with io.atomic_open(path, s3) as fh:
        fh.write(buf.getvalue())


def general_similarity(model_config: dict[str, Any], vectors: Any,
                       whitening: dict[str, Any] | None = None) -> Any:
    """How a train run's general culture embeddings (C, d) are compared, given its
    model_config.json: the `ops.modality_cosine.ModalityCosine` of the model's raw slots
    with its learned part at `map_learned` of its trained weight (or at the weight
    that gives it `map_learned_share` of the raw term's spread) and each modality's
    raw slot read through `whitening` (`read_map_whitening`; None: plainly), fitted
    on `vectors`, when the learned part is reweighted, the raw slots are whitened, or
    the raw residual spans two or more modalities and the cultures' modality shares
    differ; else "cosine" (the same similarity then)."""
    import torch

    from culturesim_ray.models.culturesim import CultureSimConfig
    from culturesim_ray.ops.modality_cosine import ModalityCosine

    cfg = CultureSimConfig(**model_config)
    plain = cfg.map_learned == 1.0 and not cfg.map_learned_share and not whitening
    if cfg.raw_weight <= 0 or (len(cfg.in_dims) < 2 and plain):
        return "cosine"
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    slots = cfg.slots()
    mats = None
    if whitening:
        missing = sorted(set(slots) - set(whitening))
        if missing:
            raise ValueError(f"map whitening: no matrix for modality(ies) {missing}")
        mats = [torch.from_numpy(np.ascontiguousarray(whitening[m], dtype=np.float32))
                for m in slots]
    sim = ModalityCosine(list(slots.values()), learned=cfg.map_learned, whitening=mats,
                         learned_share=cfg.map_learned_share)
    norms = sim.slot_norms(x)
    if plain and bool(torch.allclose(norms, norms[:1].expand_as(norms), atol=1e-6)):
        return "cosine"  # every culture has the same modalities at the same shares
    return sim.fit(x)


def head_similarity(model_config: dict[str, Any], head: str, vectors: Any,
                    whitening: dict[str, Any] | None = None) -> Any:
    """`general_similarity` for any head whose culture embeddings carry the raw slots
    (the general head; a theme head when the run's `theme_raw`); else "cosine"."""
    from culturesim_ray.models.culturesim import CultureSimConfig

    if not CultureSimConfig(**model_config).has_raw(head):
        return "cosine"
    return general_similarity(model_config, vectors, whitening)


def read_culture_embeddings(path: str | Path) -> dict[str, tuple[list[str], Any]]:
    """culture_embeddings.parquet -> head -> (cultures, (C, d) float32 array), cultures sorted."""

    table = io.read_table(str(path))
    out: dict[str, tuple[list[str], Any]] = {}
    for head in sorted(set(table.column("head").to_pylist())):
        t = table.filter(pc.equal(table.column("head"), head)).sort_by("culture")
        out[head] = (t.column("culture").to_pylist(), as_matrix(t.column("vector"), str(path)))
    return out
