"""A shared image-text space: the frozen image encoder's features projected into
the text encoder's space, trained contrastively (CLIP's symmetric InfoNCE).

Radford et al. 2021 (CLIP), with both towers frozen except for a projection of
the image features (LiT, Zhai et al. 2022, locks the image tower instead; here
the text tower is the one kept, so text vectors of a run need no change).

- `ImageProjection`: (n, 1280) EfficientNet features -> (n, 384) L2-normalised
  vectors in MiniLM's space; linear (`hidden` = 0) or Linear-GELU-Linear.
- `clip_loss`: symmetric InfoNCE over a batch of matched pairs.
- `train_alignment`: the loop (AdamW, cosine schedule, learnable temperature).
- `save_alignment` / `load_alignment`: DIR/align.pt (state dict, loaded with
  `weights_only=True`) + DIR/align.json (the `AlignConfig` and provenance).
- `AlignedImageEncoder`: the registry's "efficientnet-aligned" image encoder.

Pure torch/numpy: no ray, no device chosen here (the device follows the data).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from culturesim_ray.encoders.base import EncodeResult, encode_uris

WEIGHTS, CONFIG = "align.pt", "align.json"
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100 (temperature >= 0.01)


@dataclass(frozen=True)
class AlignConfig:
    """steps: optimiser steps (default 200); lr: AdamW peak learning rate (1e-3,
    cosine decay, 5 % warm-up); weight_decay (1e-2, on the map's weights only);
    temperature: initial softmax temperature, learnt (0.07 as CLIP); batch: pairs
    per step (256; the whole set when smaller); seed (0); hidden: 0 = a linear map,
    > 0 = two layers with this width (default 0); in_dim / out_dim: image feature
    and text vector dimensions (1280, 384); image_encoder / text_encoder: the
    registry names the features came from (the text space the map lands in)."""

    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-2
    temperature: float = 0.07
    batch: int = 256
    seed: int = 0
    hidden: int = 0
    in_dim: int = 1280
    out_dim: int = 384
    image_encoder: str = "efficientnet"
    text_encoder: str = "minilm"

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "in_dim", "out_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden < 0 or not self.lr > 0 or not 0 < self.temperature < 1:
            raise ValueError(f"AlignConfig: hidden >= 0, lr > 0, 0 < temperature < 1; got "
                             f"{self.hidden}, {self.lr}, {self.temperature}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignConfig:
        """From a saved mapping; an unknown or missing-typed field is a ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AlignConfig field(s) {unknown}")
        return cls(**data)


class ImageProjection(nn.Module):
    """(n, in_dim) image features -> (n, out_dim) unit vectors in the text space,
    with the learnable logit scale log(1 / temperature) of the contrastive loss."""

    def __init__(self, cfg: AlignConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.GELU(),
                                                nn.Linear(cfg.hidden, cfg.out_dim))
        else:
            self.net = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)  # (n, out_dim)


def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of matched rows: image (n, d) and text (n, d) unit vectors,
    row i of each a positive pair, every other row of the batch a negative."""
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * image @ text.T  # (n, n): image i vs text j
    labels = torch.arange(len(image), device=image.device)
    return 0.5 * (nn.functional.cross_entropy(logits, labels)
                  + nn.functional.cross_entropy(logits.T, labels))


def train_alignment(image_feats: np.ndarray | Tensor, text_vecs: np.ndarray | Tensor,
                    cfg: AlignConfig | None = None) -> tuple[ImageProjection, list[float]]:
    """Fit an `ImageProjection` on matched pairs: image_feats (n, in_dim), text_vecs
    (n, out_dim) (L2-normalised here). Returns the model (eval mode) and the loss
    per step. Deterministic for a given seed on one device."""
    cfg = cfg or AlignConfig()
    x = torch.as_tensor(np.asarray(image_feats, dtype=np.float32))
    t = nn.functional.normalize(torch.as_tensor(np.asarray(text_vecs, dtype=np.float32)), dim=-1)
    if len(x) != len(t) or len(x) < 2:
        raise ValueError(f"need >= 2 matched pairs, got {len(x)} images and {len(t)} texts")
    if x.shape[1] != cfg.in_dim or t.shape[1] != cfg.out_dim:
        raise ValueError(f"features {tuple(x.shape)} / texts {tuple(t.shape)} do not match "
                         f"in_dim {cfg.in_dim} / out_dim {cfg.out_dim}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ImageProjection(cfg)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    batch = min(cfg.batch, len(x))
    order, pos, losses = torch.randperm(len(x), generator=gen), 0, []
    model.train()
    for _ in range(cfg.steps):
        if pos + batch > len(x):  # a fresh permutation per epoch; no short last batch
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = clip_loss(model(x[idx]), t[idx], model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


def save_alignment(model: ImageProjection, out: str, meta: dict[str, Any] | None = None) -> str:
    """Write DIR/align.pt (state dict) and DIR/align.json ({"config": ..., "meta": ...});
    the JSON last, so a directory with it holds a whole alignment."""
    os.makedirs(out, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
               os.path.join(out, WEIGHTS))
    tmp = os.path.join(out, CONFIG + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"config": asdict(model.cfg), "meta": meta or {}}, fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(out, CONFIG))
    return out


def read_alignment_config(path: str) -> tuple[AlignConfig, dict[str, Any]]:
    """(config, meta) of the alignment directory `path`; a ValueError when it is none."""
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{path}: not an alignment (no {CONFIG}; "
                                f"write one with `culturesim align --out {path}`)")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            data = json.load(fh)
        return AlignConfig.from_dict(data["config"]), dict(data.get("meta", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{cfg_path}: not an alignment config: {exc}") from None


def load_alignment(path: str, device: str = "cpu") -> ImageProjection:
    """The projection saved in `path` (weights only, never unpickled code); a file
    that is not a matching state dict is a ValueError naming it."""
    cfg, _ = read_alignment_config(path)
    model = ImageProjection(cfg)
    weights = os.path.join(path, WEIGHTS)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # unpickling refused, wrong keys or shapes, a truncated file
        raise ValueError(f"{weights}: not the weights of this alignment: "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from None
    return model.to(device).eval()


def shares_text_space(align_path: str, text_encoder: str, text_model: str | None) -> bool:
    """Whether image vectors aligned by `align_path` live in the space of the text
    encoder `text_encoder` (the packaged weights: adapted ones, text_model, move it)."""
    cfg, _ = read_alignment_config(align_path)
    return cfg.text_encoder == text_encoder and not text_model


class AlignedImageEncoder:
    """EfficientNet-Lite0 features through a trained `ImageProjection`: 384-d,
    L2-normalised image vectors in the text encoder's space.

    image_align: the alignment directory (`culturesim align --out DIR`).
    device, storage_options, weights_path: as `EfficientNetEncoder`.
    """

    name = "efficientnet-aligned"
    modality = "image"
    normalized = True

    def __init__(self, image_align: str, device: str = "cpu",
                 storage_options: dict | None = None, weights_path: str | None = None,
                 **_: object) -> None:
        from culturesim_ray.encoders.image import EfficientNetEncoder

        self.projection = load_alignment(image_align, device)
        self.base = EfficientNetEncoder(device, storage_options, weights_path)
        if self.projection.cfg.in_dim != self.base.dim:
            raise ValueError(f"{image_align}: aligns {self.projection.cfg.in_dim}-d features, "
                             f"the image encoder gives {self.base.dim}-d")
        self.dim = self.projection.cfg.out_dim
        self.storage_options = self.base.storage_options

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        return encode_uris(self, inputs, self.storage_options, what="image ")

    @torch.inference_mode()
    def encode_bytes(self, datas: Sequence[bytes | None],
                     names: Sequence[str] | None = None) -> EncodeResult:
        base = self.base.encode_bytes(datas, names)
        out = np.full((len(base.vectors), self.dim), np.nan, dtype=np.float32)
        ok = [i for i, e in enumerate(base.errors) if e is None and datas[i] is not None]
        if ok:
            device = next(self.projection.parameters()).device
            x = torch.from_numpy(base.vectors[ok]).to(device)
            out[ok] = self.projection(x).float().cpu().numpy()
        return EncodeResult(out, base.errors)
