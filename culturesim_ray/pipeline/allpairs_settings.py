"""What shapes an all-pairs output: the similarity each head is compared by, as
the manifest records it, and the settings its fingerprint holds (a rerun with
other settings is refused, see `culturesim_ray.fingerprint`)."""

from __future__ import annotations

import posixpath
from typing import Any

from culturesim_ray import io
from culturesim_ray.allpairs_input import Heads, Source
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.layout import AllPairsLayout
from culturesim_ray.ops.pooling import GENERAL
from culturesim_ray.ops.set_pairs import set_options_used


def head_similarities(src: Source, heads: Heads, cfg: AllPairsConfig) -> dict[str, Any]:
    """{head: `ops.modality_cosine.ModalityCosine`} for each head of a train run's
    culture embeddings whose culture map is not the plain cosine (the general head,
    and the theme heads of a run with `theme_raw`: a learned part reweighted, or raw
    slots over modalities at uneven shares: `runs.head_similarity`, from the run's
    model_config.json), when the job compares by cosine; the other heads (and any
    other input) by `cfg.similarity`. `culturesim evaluate` scores the model the
    same way."""
    from culturesim_ray import runs

    if cfg.similarity != "cosine" or cfg.set_level or src.kind not in ("culture_file", "file"):
        return {}
    conf = io.join(posixpath.dirname(src.path), "model_config.json")
    if not io.exists(conf, cfg.s3):
        return {}
    model_config = io.read_json(conf, cfg.s3)
    whitening = runs.read_map_whitening(posixpath.dirname(src.path), model_config, cfg.s3)
    sims = {h: runs.head_similarity(model_config, h, v, whitening) for h, (_, v) in heads.items()}
    return {h: s for h, s in sims.items() if not isinstance(s, str)}


def read_job_metric(src: Source, cfg: AllPairsConfig) -> dict[str, Any] | None:
    """The metric file of a job with `cfg.metric`, checked against the job before
    anything is read: it weights the raw culture means of one encoder and modality,
    so the input must be an embed run of them, pooled by mean and compared by cosine
    (ValueError naming what does not fit); None without a metric."""
    if not cfg.metric:
        return None
    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.report.metric_file import check_fits, read_metric

    metric = read_metric(cfg.metric)
    what = f"--metric {cfg.metric}"
    if cfg.similarity != "cosine" or cfg.set_level:
        raise ValueError(f"{what}: the metric replaces the similarity of the general head; "
                         f"leave --similarity at cosine (got {cfg.similarity!r})")
    if src.kind != "embed_run":
        raise ValueError(f"{what}: it weights the raw culture means of an embed run (a run "
                         f"directory or its embed/); the input is {src.note or src.path}")
    if cfg.pooling != "mean":
        raise ValueError(f"{what}: it was fitted on mean-pooled culture vectors; drop "
                         f"--pooling {cfg.pooling}")
    if metric["modality"] != cfg.modality:
        raise ValueError(f"{what}: it weights {metric['modality']} means; pass --modality "
                         f"{metric['modality']} (the job reads {cfg.modality})")
    encoders = io.read_json(EmbedLayout(src.path).manifest, cfg.s3).get("encoders", {})
    check_fits(metric, encoders.get(cfg.modality, {}).get("name"), None, what)
    return metric


def metric_similarity(metric: dict[str, Any] | None, heads: Heads, cfg: AllPairsConfig
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """({"general": the metric as a fitted `ops.metric.DimensionMetric`}, what the
    manifest records of it) for the metric of `read_job_metric`; ({}, None) for None."""
    if metric is None:
        return {}, None
    from culturesim_ray.ops.metric import DimensionMetric
    from culturesim_ray.report.metric_file import check_fits

    what = f"--metric {cfg.metric}"
    if GENERAL not in heads:
        raise ValueError(f"{what}: it compares the general head, which --heads left out")
    cultures, means = heads[GENERAL]
    check_fits(metric, metric["encoder"], means.shape[1], what)  # the encoder: checked
    if len(cultures) < 2:
        raise ValueError(f"{what}: the general head has fewer than 2 cultures")
    sim = DimensionMetric(metric["weights"], metric["b"]).fit(means)
    record = {"file": str(cfg.metric), "b": metric["b"], "encoder": metric["encoder"],
              "modality": metric["modality"], "fitted_on": metric["fitted_on"],
              "leave_cultures_out": metric.get("leave_cultures_out")}
    return {GENERAL: sim}, record


def similarity_record(cfg: AllPairsConfig) -> dict[str, Any]:
    """The similarity as the manifest records it: name, kind and every option's value."""
    if not cfg.set_level:
        return {"name": cfg.similarity, "kind": "vector", "options": {}}
    return {"name": cfg.similarity, "kind": "set", "block": cfg.set_block,
            "options": set_options_used(cfg.similarity, cfg.set_options),
            "culture_embeddings": f"pooled {cfg.pooling} of L2-normalised items (not what the "
                                  "set-level similarity compared)"}


def input_version(src: Source, cfg: AllPairsConfig) -> dict[str, Any] | None:
    """A single input file's size and modification time (S3: its ETag), so a file
    rewritten in place (a retrained model's culture_embeddings.parquet) does not
    resume into blocks of the old one; None for directories."""
    if src.kind not in ("file", "culture_file"):
        return None
    fs, p = io.filesystem_for(src.path, cfg.s3)
    info = fs.info(p)
    return {"size": info.get("size"),
            "modified": str(info.get("mtime") or info.get("ETag") or info.get("LastModified"))}


def fingerprint_settings(cfg: AllPairsConfig, k: int, src: Source,
                         sims: dict[str, Any] | None = None,
                         combined_by_theme: bool = False) -> dict[str, Any]:
    """Every setting that shapes a finished block or matrix (the fingerprint). The
    input's version, the heads compared otherwise (`head_similarities`) and a
    combined head summed from those heads' own similarities (`combined_by_theme`)
    are recorded only where they apply, so outputs written before them still resume
    (and combined blocks of the older concatenated cosine do not)."""
    version = input_version(src, cfg)
    return {"input": src.path, **({"input_version": version} if version else {}),
            **({"head_similarity": {h: m.key for h, m in sims.items()}} if sims else {}),
            **({"combined": "sum of the theme heads' similarities"} if combined_by_theme
               else {}),
            "similarity": cfg.similarity,
            "set_options": set_options_used(cfg.similarity, cfg.set_options)
            if cfg.set_level else {}, "set_block": cfg.set_block if cfg.set_level else None,
            "k": k, "block_rows": cfg.block_rows, "pooling": cfg.pooling,
            "min_items": cfg.min_items, "modality": cfg.modality, "heads": cfg.heads,
            "alpha": cfg.alpha, "prefilter": cfg.prefilter, "prefilter_min": cfg.prefilter_min,
            "nlist": cfg.nlist, "nprobe": cfg.nprobe}


def recorded_settings(out: str, cfg: AllPairsConfig) -> dict[str, Any] | None:
    """The fingerprint an earlier run wrote into `out`, or None."""
    path = AllPairsLayout(out).fingerprint
    return io.read_json(path, cfg.s3) if io.exists(path, cfg.s3) else None
