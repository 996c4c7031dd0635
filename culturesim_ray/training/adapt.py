"""Domain adaptation of a BERT text encoder: continued masked-LM pretraining.

The masking follows BERT (Devlin et al. 2019, sec. 3.1): `mask_rate` of the
real tokens (never [CLS], [SEP] or padding) are chosen; of those 80% become
[MASK], 10% a random token, 10% stay; the loss is cross-entropy on the chosen
positions only. Texts longer than `max_length` are cut into consecutive windows
so no text is lost to truncation.

all-MiniLM-L6-v2 ships as a bare `BertModel` (no MLM head). `mlm_model` then
adds BertForMaskedLM's head initialised from the word embeddings: the decoder
is tied to them, its bias 0, and the head's transform starts as the identity,
so the first logits are LayerNorm(gelu(h)) . E^T rather than noise.

Pure torch/transformers: no ray; the device follows the batch, chosen by the caller.
`pipeline/adapt.py` runs `mlm_step` on Ray Train workers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from culturesim_ray.encoders.text import collate_windows


@dataclass(frozen=True)
class AdaptConfig:
    """Continued MLM pretraining.

    max_steps: optimiser steps per worker (default 200); mask_rate: share of
    real tokens masked (default 0.15); lr: AdamW peak learning rate (default
    5e-5, linear warm-up over `warmup` of the steps, then linear decay to 0);
    batch_size: windows per step and worker (default 16); max_length: tokens
    per window incl. [CLS]/[SEP] (default 128); weight_decay: AdamW (default
    0.01); seed: masking, sampling and head init (default 0); checkpoint_every:
    steps between checkpoints (default 50; the last step is always one).
    """

    max_steps: int = 200
    mask_rate: float = 0.15
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be >= 1")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int,
                mask_rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. input_ids (b, t) long; special (b, t) bool: positions never
    chosen (CLS, SEP, padding). Returns (masked ids (b, t), labels (b, t)) with
    labels -100 where no prediction is asked. Each row with a real token gets at
    least one chosen position, so a short window always contributes to the loss."""
    probs = torch.full(input_ids.shape, mask_rate)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probs) & ~special
    real = ~special
    empty = real.any(1) & ~chosen.any(1)  # (b,) rows with tokens but nothing chosen
    if empty.any():
        noise = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0)
        pick = noise.argmax(1)  # (b,) a random real position
        rows = empty.nonzero().squeeze(1)
        chosen[rows, pick[rows]] = True
    labels = input_ids.masked_fill(~chosen, -100)
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    out = input_ids.clone()
    out[to_mask] = mask_id
    randoms = torch.randint(vocab_size, input_ids.shape, generator=generator)
    out[to_random] = randoms[to_random]
    return out, labels


def token_windows(tokenizer: Any, texts: Iterable[str], max_length: int) -> list[list[int]]:
    """Each text's word-piece ids cut into windows of `max_length - 2` (room for
    [CLS] and [SEP]); windows, not truncation, so a long text is read whole."""
    width = max_length - 2
    out: list[list[int]] = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            continue
        ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        out.extend(ids[i:i + width] for i in range(0, len(ids), width))
    return out


collate = collate_windows  # [CLS] w [SEP] + padding, as the encoder reads windows


class MaskedLM(torch.nn.Module):
    """BERT encoder `bert` + BertForMaskedLM's head `cls`; forward returns the
    cross-entropy of the masked positions only, so the (positions x vocabulary)
    projection is computed for ~15% of the tokens, not all (state_dict keys are
    BertForMaskedLM's)."""

    def __init__(self, mlm: Any) -> None:
        super().__init__()
        self.bert, self.cls, self.config = mlm.bert, mlm.cls, mlm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids,
                           attention_mask=attention_mask).last_hidden_state  # (b, t, h)
        chosen = labels != -100  # (b, t)
        logits = self.cls(hidden[chosen])  # (n_masked, vocab)
        return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


def mlm_model(path: str, seed: int = 0) -> MaskedLM:
    """The `MaskedLM` of the BERT weights at `path`; a missing MLM head is
    initialised from the word embeddings (module docstring)."""
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing-head notice is expected
    try:
        model, info = BertForMaskedLM.from_pretrained(path, local_files_only=True,
                                                      output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    head = model.cls.predictions
    missing = set(info.get("missing_keys", ()))
    if any(k.startswith("cls.") for k in missing):
        with torch.no_grad():
            head.transform.dense.weight.copy_(torch.eye(model.config.hidden_size))
            head.transform.dense.bias.zero_()
            head.transform.LayerNorm.reset_parameters()
            head.bias.zero_()
    emb = model.bert.embeddings.word_embeddings.weight
    if head.decoder.weight.data_ptr() != emb.data_ptr():  # untied config: copy instead
        with torch.no_grad():
            head.decoder.weight.copy_(emb)
    return MaskedLM(model)


def mlm_loss(model: Any, batch: dict[str, torch.Tensor], mask_id: int, mask_rate: float,
             generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the masked positions of one collated batch (scalar)."""
    cfg = model.module.config if hasattr(model, "module") else model.config
    ids, labels = mask_tokens(batch["input_ids"].cpu(), batch["special"].cpu(), mask_id,
                              cfg.vocab_size, mask_rate, generator)
    device = batch["input_ids"].device
    return model(ids.to(device), batch["attention_mask"], labels.to(device))


def lr_at(step: int, cfg: AdaptConfig) -> float:
    """Linear warm-up over `warmup * max_steps`, then linear decay to 0."""
    warm = max(1, math.ceil(cfg.warmup * cfg.max_steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - warm))


def optimizer(model: Any, cfg: AdaptConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def mlm_step(model: Any, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor], step: int,
             cfg: AdaptConfig, mask_id: int, generator: torch.Generator) -> float:
    """One optimiser step at schedule position `step`; the loss before the step."""
    model.train()
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss = mlm_loss(model, batch, mask_id, cfg.mask_rate, generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def sample_windows(windows: Sequence[Sequence[int]], batch_size: int,
                   rng: random.Random) -> list[Sequence[int]]:
    """`batch_size` windows drawn without replacement (with, when there are fewer)."""
    if len(windows) >= batch_size:
        return rng.sample(list(windows), batch_size)
    return [windows[rng.randrange(len(windows))] for _ in range(batch_size)]


def save_encoder(model: Any, tokenizer: Any, base_path: str, out_dir: str | Path,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write the adapted encoder as a plain `BertModel` + tokenizer into out_dir
    (what `MiniLMEncoder(text_model=out_dir)` loads). The base model's pooler,
    which MLM training never touches, is kept so the directory loads without
    freshly initialised weights."""
    import json

    from transformers import AutoModel

    inner = model.module if hasattr(model, "module") else model
    base = AutoModel.from_pretrained(base_path, local_files_only=True)
    missing, unexpected = base.load_state_dict(inner.bert.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"adapted weights do not fit {base_path}: missing {missing}, "
                         f"unexpected {unexpected}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if meta is not None:
        (out / "adapt.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
