"""TrainConfig: every setting of a fusion-model training run, typed (pure).

One `merge_train_config(yaml_data, flags)` fills it for every entry point
(the CLI, jobs/train.py, the benchmarks, the tests): defaults, then the YAML
file's keys, then the flags that were given; an unknown key is an error
naming it and listing the known ones. Nested sections (`model`, `step`,
`stages_cfg`, `batch`, `query`) take a mapping; `stages` a list of [stage, epochs].
The merged config is saved as a dict in every checkpoint and manifest
(`to_dict`), and `from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from culturesim_ray.ops.query_score import QueryMix
from culturesim_ray.training.stages import StageConfig
from culturesim_ray.training.step import StepConfig

DEFAULT_STAGES = ((1, 4), (2, 3), (3, 3))  # (stage, epochs)


@dataclass(frozen=True)
class ModelSettings:
    """The fusion model's shape: branch conv ("sage", "gat", ...) and layers, hidden
    and output sizes, fusion variant and attention heads, dropout, graph ("homo" or
    "hetero"), raw_weight (the raw residual's weight in the general embedding; 0.9
    won on the dev sets of benchmarks/truth.py), map_learned (the learned part's
    weight in the culture map, culture against culture, as a share of its trained
    weight 1 - raw_weight: 0.1, as the query score's `QueryMix.learned`; over the
    five sets of benchmarks/truth.py and three training seeds the map agreed with the
    gold best with the learned part at 0.1 or less, and at 0.1 it barely moves with
    the seed: benchmarks/RESULTS.md), map_learned_share (where > 0, the learned
    part's weight in the culture map is fitted on the culture vectors so that its
    spread over culture pairs is this share of the raw term's, whatever the spread of
    the encoder's cosines: the learned part then moves the map as much on an encoder
    whose culture means all point one way (the melody LSTM's) as on text, where a
    fixed 0.1 let it outweigh the raw means; benchmarks/RESULTS.md), map_whiten (the culture map reads each
    modality's raw culture means in their within-culture-whitened geometry, shrunk
    towards the plain cosine by this factor, `ops.whiten`; 0: the plain cosine; it
    lifted the agreement with the gold on average over the gold columns of
    benchmarks/truth.py's sets: benchmarks/RESULTS.md), theme_raw (a theme's culture embedding carries
    the raw slots of the culture's items of that theme, so the culture map per theme
    compares the cultures' items of that theme, read like the general one; without
    them the theme heads' maps followed the general map, not their theme's items, and
    moved with the training seed: benchmarks/RESULTS.md)."""

    conv: str = "sage"
    layers: int = 2
    hidden: int = 128
    out: int = 64
    fusion: str = "attention"
    heads: int = 4
    dropout: float = 0.1
    graph: str = "homo"
    raw_weight: float = 0.9
    map_learned: float = 0.1
    map_learned_share: float = 0.05
    map_whiten: float = 30.0
    theme_raw: bool = True


@dataclass(frozen=True)
class BatchSettings:
    """A step's mini-batch per worker: batch_cultures culture slots, at most
    items_per_culture seed items each, fanouts: incoming neighbours sampled per
    node and hop (len = hops; -1 = all); k: neighbours per item in the kNN graph."""

    batch_cultures: int = 64
    items_per_culture: int = 32
    fanouts: tuple[int, ...] = (10, 5)
    k: int = 10


@dataclass(frozen=True)
class TrainConfig:
    """A training run. stages: (stage, epochs) with steps_per_epoch steps each;
    holdout: share of each culture's items never trained on (ids written for the
    retrieval benchmarks); val_fraction: share of the remaining items held out of
    training for early stopping (at most val_max_items); patience: validation
    checks without improvement before stage 3 stops; query: how the service ranks a
    one-item query (`ops.query_score.QueryMix`), written with the serving state."""

    model: ModelSettings = field(default_factory=ModelSettings)
    step: StepConfig = field(default_factory=StepConfig)
    stages_cfg: StageConfig = field(default_factory=StageConfig)
    batch: BatchSettings = field(default_factory=BatchSettings)
    query: QueryMix = field(default_factory=QueryMix)
    stages: tuple[tuple[int, int], ...] = DEFAULT_STAGES
    steps_per_epoch: int = 10
    queue_size: int = 256
    seed: int = 0
    patience: int = 2
    holdout: float = 0.2
    holdout_seed: int = 0
    val_fraction: float = 0.1
    val_max_items: int = 4096
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None
    max_failures: int = 2
    relations: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return merge_train_config(data)


_SECTIONS = {"model": ModelSettings, "step": StepConfig, "stages_cfg": StageConfig,
             "batch": BatchSettings, "query": QueryMix}
# flat flag names (as the CLI and run_train's keywords spell them) -> (section, field)
ALIASES = {"hidden": ("model", "hidden"), "out_dim": ("model", "out"),
           "graph": ("model", "graph"), "raw_weight": ("model", "raw_weight"),
           "map_learned": ("model", "map_learned"), "map_whiten": ("model", "map_whiten"),
           "map_learned_share": ("model", "map_learned_share"),
           "conv": ("model", "conv"), "layers": ("model", "layers"),
           "fusion": ("model", "fusion"), "batch_cultures": ("batch", "batch_cultures"),
           "items_per_culture": ("batch", "items_per_culture"),
           "fanouts": ("batch", "fanouts"), "k_graph": ("batch", "k")}


def _known(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _section(cls: type, base: Any, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"train config: {where} takes a mapping, got {values!r}")
    unknown = sorted(set(values) - set(_known(cls)))
    if unknown:
        raise ValueError(f"train config: unknown key(s) {unknown} in {where}; "
                         f"known: {_known(cls)}")
    if "fanouts" in values:
        values = {**values, "fanouts": tuple(int(f) for f in values["fanouts"])}
    return replace(base, **values)


def merge_train_config(*layers: dict[str, Any] | None) -> TrainConfig:
    """Defaults, then each layer in turn (YAML data, then flags; None = nothing given);
    keys: TrainConfig fields, nested sections as mappings, or the flat ALIASES."""
    cfg = TrainConfig()
    for layer in layers:
        if not layer:
            continue
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in layer.items():
            if value is None and key != "relations" and key != "cpus_per_worker":
                continue  # a flag that was not given
            if key in ALIASES:
                sec, name = ALIASES[key]
                nested.setdefault(sec, {})[name] = value
            elif key in _SECTIONS:
                nested.setdefault(key, {}).update(value if isinstance(value, dict) else
                                                  {"__bad__": value})
            elif key in _known(TrainConfig):
                top[key] = value
            else:
                raise ValueError(f"train config: unknown key {key!r}; known: "
                                 f"{_known(TrainConfig) + sorted(ALIASES)}")
        for sec, values in nested.items():
            if "__bad__" in values:
                raise ValueError(f"train config: {sec} takes a mapping, got {values['__bad__']!r}")
            top[sec] = _section(_SECTIONS[sec], getattr(cfg, sec), values, sec)
        if "stages" in top:
            top["stages"] = check_stages(top["stages"])
        cfg = replace(cfg, **top)
    return cfg


def check_stages(stages: Any) -> tuple[tuple[int, int], ...]:
    """[(stage, epochs), ...] with stages in 1..3 and positive epochs."""
    out = tuple((int(s), int(e)) for s, e in stages)
    for s, e in out:
        if s not in (1, 2, 3) or e < 1:
            raise ValueError(f"train config: stages must be (stage 1-3, epochs >= 1), got {out}")
    return out
