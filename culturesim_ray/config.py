"""Typed configuration, one model per component.

Configs are loaded from YAML only at entry points (`cli.py`, `jobs/*.py`) and
written into every manifest, so an output always says how it was made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from culturesim_ray.encoders import registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class S3Config(_Strict):
    """Where s3:// paths live. Empty fields fall back to the usual AWS variables
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)."""

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for `s3fs.S3FileSystem`."""
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(
            "AWS_ENDPOINT_URL_S3"
        )
        opts: dict[str, Any] = {}
        if self.key or self.secret:
            opts["key"] = self.key
            opts["secret"] = self.secret
        client_kwargs: dict[str, Any] = {}
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get(
            "AWS_DEFAULT_REGION"
        )
        if region:
            client_kwargs["region_name"] = region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        return opts


class EmbedConfig(_Strict):
    """The Ray Data embedding job (SPEC J1, E1).

    text_encoder: auto (default), minilm, e5, muse or tfidf. auto: the embed job
      checks a sample of the texts against MiniLM's English vocabulary
      (`encoders.coverage`) and embeds with minilm, or with e5 (multilingual)
      when at least a fifth of the sample is poorly covered; a run keeps the
      encoder it chose (recorded in its fingerprint and manifest), and
      text_model (adapted MiniLM weights) or image_align mean minilm.
    image_encoder: efficientnet (EfficientNet-Lite0 pooled features).
    sequence_encoder: lstm (melody LSTM, mean hidden state). sequence_model: a
      saved model directory; when unset, one is trained on the corpus's own
      melodies first (lstm_epochs, default 15) and saved under OUT/models/lstm;
      lstm_workers > 0 trains it with Ray Train on that many workers (DDP,
      each on its shard of the sample), 0 (default) in a plain loop in one Ray
      task (a node's CPUs, its GPU when the cluster has one), never on the driver.
    num_actors: encoder actors in the pool (default 2); each holds one model.
    batch_size: rows per `map_batches` call (default 64).
    num_cpus_per_actor: logical CPUs reserved per actor (default 1.0; keep it
      below the machine's CPUs / num_actors so the read task can still run).
    num_gpus_per_actor: GPUs per actor (default unset: 1 when the cluster has
      GPUs, else 0).
    min_actors: the pool starts with an actor per batch of the rows to embed, up to
      num_actors, and may shrink to min_actors (default 1) when it idles.
    read_chunk_rows: rows per chunk a corpus file is read and validated in
      (default 10,000): what one read task holds at a time.
    tfidf_sample: texts the TF-IDF LSA projection is fitted on (default
      20,000; the document frequencies count every text).
    lstm_sample: melodies the corpus-trained LSTM is trained on at most
      (default 20,000).
    blocks: input blocks the corpus is split into (default 0 = 4 per actor).
    strict: any bad row is an error instead of a quarantined row.
    tfidf_dim: dense TF-IDF dimension after the LSA projection (default 256).
    max_length: tokens per forward window of transformer text encoders (default 256).
    max_windows: windows of max_length tokens MiniLM reads of a longer text, pooled
      over all their tokens (default 16, about 4,000 tokens; 1 = cut at max_length).
    text_model: a directory of adapted MiniLM weights (`culturesim adapt --out
      DIR`) the minilm encoder loads instead of the packaged ones (default
      unset). Recorded with the run, so serving loads the same weights.
    image_align: an alignment directory (`culturesim align --out DIR`): image
      vectors are then the image encoder's features projected into the text
      encoder's space (384-d, L2-normalised; image_encoder efficientnet becomes
      efficientnet-aligned), so text and image items share one space (default
      unset). Recorded with the run (its digest in the fingerprint); serving
      loads the same alignment.
    rows_per_file: at most this many rows per output Parquet file (default
      5000): the unit a crashed run redoes.
    uri_roots: extra places image/sequence uris may point into, besides the
      corpus root (the corpus file's folder, or the corpus folder): local
      paths (relative ones to the working directory) or s3:// prefixes
      (default none). A uri resolving elsewhere (`..`, symlinks, absolute
      paths) is quarantined unread.
    """

    text_encoder: str = registry.AUTO
    image_encoder: str = registry.DEFAULTS["image"]
    sequence_encoder: str = registry.DEFAULTS["sequence"]
    sequence_model: str | None = None
    lstm_epochs: int = Field(15, ge=1)
    lstm_workers: int = Field(0, ge=0)
    num_actors: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    num_cpus_per_actor: float = Field(1.0, gt=0)
    num_gpus_per_actor: float | None = Field(None, ge=0)
    min_actors: int = Field(1, ge=1)
    read_chunk_rows: int = Field(10_000, ge=1)
    tfidf_sample: int = Field(20_000, ge=2)
    lstm_sample: int = Field(20_000, ge=1)
    blocks: int = Field(0, ge=0)
    strict: bool = False
    tfidf_dim: int = Field(256, ge=2)
    max_length: int = Field(256, ge=8)
    max_windows: int = Field(16, ge=1)
    text_model: str | None = None
    image_align: str | None = None
    rows_per_file: int = Field(5000, ge=1)
    check_uris: bool = True
    uri_roots: list[str] = Field(default_factory=list)
    s3: S3Config = Field(default_factory=S3Config)

    @field_validator("text_encoder", "image_encoder", "sequence_encoder")
    @classmethod
    def _registered(cls, v: str, info: Any) -> str:
        if v == registry.AUTO and info.field_name == "text_encoder":
            return v
        registry.get(v, info.field_name.removesuffix("_encoder"))  # ValueError names the known
        return v

    def encoder(self, modality: str) -> str:
        """The encoder name this config uses for `modality` (a text encoder `auto`
        is an error here: the embed job resolves it first, `with_text_encoder`)."""
        name = getattr(self, f"{modality}_encoder")
        if name == registry.AUTO:
            raise ValueError("text_encoder 'auto' is resolved by the embed job before use")
        return name

    def with_text_encoder(self, name: str) -> EmbedConfig:
        """This config with text_encoder set to `name` (what `auto` resolved to)."""
        return self.model_copy(update={"text_encoder": registry.get(name, "text").name})

    @property
    def auto_text_encoder_fixed(self) -> str | None:
        """What `auto` must be without looking at the texts: minilm when adapted MiniLM
        weights (text_model) or an image -> text alignment (built on MiniLM's space)
        are set; None otherwise (or when the encoder is given)."""
        if self.text_encoder != registry.AUTO:
            return None
        return registry.DEFAULTS["text"] if (self.text_model or self.image_align) else None

    @model_validator(mode="after")
    def _text_model_needs_minilm(self) -> EmbedConfig:
        if self.text_encoder == registry.AUTO:
            return self
        if self.text_model and "text_model" not in registry.get(self.text_encoder).settings:
            raise ValueError(f"text_model applies to encoders built from BERT weights "
                             f"(minilm), not {self.text_encoder!r}")
        return self

    @model_validator(mode="after")
    def _image_align_needs_an_aligned_encoder(self) -> EmbedConfig:
        if self.image_align and "image_align" not in registry.get(self.image_encoder).settings:
            if self.image_encoder not in registry.ALIGNED:
                raise ValueError(f"image_align: {self.image_encoder!r} has no aligned form")
            self.image_encoder = registry.ALIGNED[self.image_encoder]
        if not self.image_align and "image_align" in registry.get(self.image_encoder).settings:
            raise ValueError(f"image encoder {self.image_encoder!r} needs image_align "
                             f"(an alignment directory: culturesim align --out DIR)")
        return self

    @field_validator("uri_roots")
    @classmethod
    def _local_or_s3(cls, v: list[str]) -> list[str]:
        for r in v:
            if not r.strip():
                raise ValueError("uri_roots: an empty entry would be the working directory")
            if "://" in r and not r.startswith(("s3://", "s3a://")):
                raise ValueError(f"uri_roots: {r!r} is neither a local path nor s3://")
        return v

    @field_validator("num_cpus_per_actor")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v == float("inf"):
            raise ValueError("num_cpus_per_actor must be finite")
        return v


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping. A file that is not
    UTF-8 YAML, or not a mapping keyed by names, is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a YAML file this reader takes: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else 'nested too deeply'}"
                         ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ValueError(f"{path}: every top-level key must be a name, got {odd[0]!r}")
    return data


class AllPairsConfig(_Strict):
    """The all-pairs theme-similarity job (SPEC J2, J3).

    similarity: a name from `ops.similarity.NAMES` (default cosine), or a
      set-level one from `ops.setsim.SET_NAMES` (mmd, energy, sliced_wasserstein,
      confusion, centered_cosine), which compares cultures' item sets and so
      needs item-level input.
    set_options: keyword options of that set-level similarity (e.g. sigma,
      n_proj, seed, temperature); set_block: items per tile in it (default
      2048; peak memory ~ set_block^2 + set_block * C + C^2 float64).
    k: neighbours kept per culture and head (default None: 10, clamped to
      N - 1 when the input has fewer cultures; an explicit k above N - 1 is an error).
    block_rows: rows per Ray task / block (default 1024); block_cols: columns
      per score block inside a task (default 16384). Memory per task is
      block_rows * block_cols floats, whatever N is.
    pooling: mean | median over a culture's item vectors.
    modality: which modality's embeddings to pool (default text).
    min_items: items a culture needs in a head to get a vector (default 1).
    dense_limit: write dense matrices when N <= this (default 2000).
    prefilter: off | on | auto (auto: on when N >= prefilter_min).
    nlist / nprobe: k-means clusters (0 = 4 sqrt(N)) and clusters probed per block.
    recall_sample: rows on which pre-filtered recall@k is measured against exact.
    alpha: theme -> weight of S_total = sum_i alpha_i S_i (default: equal over themes).
    heads: only these heads (default: all).
    metric: a metric file written by `culturesim fit-metric` (local path): the
      general head is compared by its blend z(cosine) + b z(metric), standardised
      over this input's culture pairs (`ops.metric.DimensionMetric`), so the whole
      map follows the gold the metric was fitted on; needs an embed run of the
      metric's encoder and modality as input, similarity cosine and mean pooling.
    """

    DEFAULT_K: ClassVar[int] = 10

    similarity: str = "cosine"
    set_options: dict[str, Any] = Field(default_factory=dict)
    set_block: int = Field(2048, ge=1)
    k: int | None = Field(None, ge=1)
    block_rows: int = Field(1024, ge=1)
    block_cols: int = Field(16384, ge=1)
    pooling: Literal["mean", "median"] = "mean"
    modality: Literal["text", "image", "sequence"] = "text"
    min_items: int = Field(1, ge=1)
    dense_limit: int = Field(2000, ge=0)
    prefilter: Literal["off", "on", "auto"] = "auto"
    prefilter_min: int = Field(20000, ge=1)
    nlist: int = Field(0, ge=0)
    nprobe: int = Field(8, ge=1)
    recall_sample: int = Field(1000, ge=1)
    alpha: dict[str, float] = Field(default_factory=dict)
    heads: list[str] | None = None
    metric: str | None = None
    num_cpus_per_task: float = Field(1.0, gt=0)
    s3: S3Config = Field(default_factory=S3Config)

    @field_validator("similarity")
    @classmethod
    def _known_similarity(cls, v: str) -> str:
        from culturesim_ray.ops.setsim import SET_NAMES
        from culturesim_ray.ops.similarity import NAMES

        known = [n for n in NAMES if n != "learned"] + list(SET_NAMES)
        if v not in known:
            raise ValueError(f"unknown similarity {v!r}; known: {', '.join(known)}")
        return v

    @property
    def set_level(self) -> bool:
        """Whether `similarity` compares item sets (ops.setsim) rather than culture vectors."""
        from culturesim_ray.ops.setsim import SET_NAMES

        return self.similarity in SET_NAMES

    @model_validator(mode="after")
    def _set_level_settings(self) -> AllPairsConfig:
        if not self.set_level:
            if self.set_options:
                raise ValueError(f"set_options {sorted(self.set_options)} only apply to the "
                                 f"set-level similarities, not {self.similarity!r}")
            return self
        import inspect

        from culturesim_ray.ops.setsim import REGISTRY

        params = inspect.signature(REGISTRY[self.similarity]).parameters
        known = [p for p in params if p not in ("x", "labels", "n_sets", "block")]
        unknown = sorted(set(self.set_options) - set(known))
        if unknown:
            raise ValueError(f"{self.similarity}: unknown set_options {', '.join(unknown)}; "
                             f"known: {', '.join(known) or 'none'}")
        if self.prefilter == "on":
            raise ValueError(f"prefilter: on applies to vector similarities; {self.similarity!r} "
                             f"compares item sets (set prefilter: off or auto)")
        return self

    @field_validator("alpha")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {t: a for t, a in v.items() if not a >= 0}
        if bad:
            raise ValueError(f"alpha weights must be >= 0, got {bad}")
        return v
