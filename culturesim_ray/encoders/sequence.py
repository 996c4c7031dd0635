"""Sequence encoder: an LSTM next-token model over melody tokens (SPEC E1, E2).

`MelodyLSTM`: embedding -> `torch.nn.LSTM` -> linear head over the vocabulary,
trained to predict the next token (`train_melody_lstm`, a plain loop around
the pure `train_step`). Its sequence embedding is the mean of the top
layer's hidden states h_t over the real (non-padding) steps, L2-normalised —
the mean uses every step of the tune, where the last state leans on its
ending.

`SequenceEncoder` is the encoder the embed job uses: it loads a saved model
directory (`lstm.pt` with `torch.load(weights_only=True)`, `vocab.json`,
`config.json`) and runs the frozen inference form `LSTMInference`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from culturesim_ray.encoders.base import EncodeResult, encode_uris, read_uri
from culturesim_ray.encoders.lstm_inference import LSTMInference
from culturesim_ray.encoders.music import (
    BOS,
    PAD,
    MusicParseError,
    Vocabulary,
    parse_events,
    tokenize,
)


@dataclass
class LSTMConfig:
    """embed_dim (default 64), hidden (default 128), layers (default 2)."""

    vocab_size: int
    embed_dim: int = 64
    hidden: int = 128
    layers: int = 2


class MelodyLSTM(nn.Module):
    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> next-token logits (B, T, V)."""
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


def pad_batch(seqs: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> Tensor:
    t = max(len(s) for s in seqs)
    out = torch.full((len(seqs), t), PAD, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def train_step(model: MelodyLSTM, opt: torch.optim.Optimizer, batch: Tensor) -> float:
    """One next-token step on a padded (B, T) batch; returns the mean cross-entropy."""
    model.train()
    logits = model(batch[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       batch[:, 1:].reshape(-1), ignore_index=PAD)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


MAX_TRAIN_LEN = 256  # ids a training melody is cut to (BOS + 254 tokens + the next)


def training_sequences(sequences: Sequence[Sequence[int]], max_len: int = MAX_TRAIN_LEN
                       ) -> list[list[int]]:
    """What both training loops (this module's plain one, Ray Train's workers) train
    on: each id sequence cut to `max_len` (the batch is as long as its longest
    sequence, and backpropagation runs through every step of it), and those
    without a token (< 3 ids: BOS, EOS) left out."""
    return [list(s[:max_len]) for s in sequences if len(s) >= 3]


def train_melody_lstm(sequences: Sequence[Sequence[int]], cfg: LSTMConfig, epochs: int = 10,
                      batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                      max_len: int = MAX_TRAIN_LEN, device: torch.device | str = "cpu",
                      ) -> tuple[MelodyLSTM, list[float]]:
    """Plain training loop (the same `train_step` Ray Train calls per worker), on
    `device`; the model comes back on the CPU, in eval mode."""
    seqs = training_sequences(sequences, max_len)
    if not seqs:
        raise ValueError("no sequences to train the melody LSTM on (each needs a token)")
    rng = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MelodyLSTM(cfg)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        rng.shuffle(seqs)
        total, n = 0.0, 0
        for i in range(0, len(seqs), batch_size):
            total += train_step(model, opt, pad_batch(seqs[i:i + batch_size], device))
            n += 1
        losses.append(total / max(n, 1))
    return model.cpu().eval(), losses


MODEL_FILES = ("vocab.json", "config.json", "lstm.pt")  # a model folder's, the weights last


def save_model(model: MelodyLSTM, vocab: Vocabulary, path: str | Path) -> Path:
    """The model folder (lstm.pt, vocab.json, config.json), published whole
    (`io.publish_dir`): a process killed while saving leaves the folder as it was."""
    from culturesim_ray.publish import publish_dir

    with publish_dir(path) as d:
        torch.save(model.state_dict(), d / "lstm.pt")
        vocab.save(d / "vocab.json")
        (d / "config.json").write_text(json.dumps(asdict(model.cfg)))
    return Path(path)


def load_model(path: str | Path, storage_options: dict | None = None) -> tuple[MelodyLSTM, Vocabulary]:
    """Load a saved model directory, local or s3://, read straight into memory
    (nothing is left behind on a worker's disk)."""
    import io

    root = str(path).rstrip("/")
    cfg = LSTMConfig(**json.loads(read_uri(f"{root}/config.json", storage_options)))
    model = MelodyLSTM(cfg)
    model.load_state_dict(torch.load(io.BytesIO(read_uri(f"{root}/lstm.pt", storage_options)),
                                     map_location="cpu", weights_only=True))
    return model.eval(), Vocabulary.parse(read_uri(f"{root}/vocab.json", storage_options))


def read_tokens(uri: str, storage_options: dict | None = None) -> list[str]:
    """Tokens of the music file at `uri`; MusicParseError / ValueError name what is wrong."""
    tokens = tokenize(parse_events(read_uri(uri, storage_options), uri))
    if not any(t.startswith("n") for t in tokens):
        raise ValueError("empty sequence (no notes)")
    return tokens


class SequenceEncoder:
    """Melody files -> mean LSTM hidden state, L2-normalised (dim = hidden size)."""

    name = "lstm"
    modality = "sequence"
    normalized = True

    def __init__(self, model_path: str, device: str = "cpu", storage_options: dict | None = None,
                 max_len: int = 512, **_: object) -> None:
        model, self.vocab = load_model(model_path, storage_options)
        self.device = torch.device(device)
        model = model.to(self.device)
        self.embedding = model.embed.weight.detach()
        self.lstm = LSTMInference(model.lstm)
        self.dim = model.cfg.hidden
        self.max_len = max_len
        self.storage_options = storage_options or {}

    def embed_ids(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        ids = pad_batch([s[: self.max_len] for s in seqs], self.device)  # (B, T)
        out, _ = self.lstm(self.embedding[ids])  # (B, T, H)
        mask = (ids != PAD).unsqueeze(-1).to(out.dtype)
        mean = (out * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return nn.functional.normalize(mean, dim=-1).float().cpu().numpy()

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        return encode_uris(self, inputs, self.storage_options, what="")

    @torch.inference_mode()
    def encode_bytes(self, datas: Sequence[bytes | None],
                     names: Sequence[str] | None = None) -> EncodeResult:
        """Melody files given as bytes (None: nothing to encode, error left to the
        caller), `names` their uris (the suffix says the format); a file that does
        not parse is that item's error."""
        names = list(names) if names is not None else [f"melody {i}.abc" for i in range(len(datas))]
        return self._embed_files(datas, names,
                                 lambda uri, exc: f"uri: cannot parse music {uri}: {exc}",
                                 lambda uri, exc: f"uri: {exc} in {uri}")

    @torch.inference_mode()
    def encode_sources(self, sources: Sequence[str | bytes], fmt: str = "abc") -> EncodeResult:
        """Melodies given as file contents (ABC text by default; fmt names the
        format the way a file suffix would: abc, musicxml, mid)."""
        return self._embed_files(sources, [f"query.{fmt}"] * len(sources),
                                 lambda _uri, exc: f"cannot parse music: {exc}",
                                 lambda _uri, exc: str(exc))

    def _embed_files(self, datas: Sequence[str | bytes | None], uris: Sequence[str],
                     parse_error: Callable[[str, Exception], str],
                     other_error: Callable[[str, Exception], str]) -> EncodeResult:
        """Each file's contents (None: skipped, a NaN row without error) parsed as the
        format its uri's suffix names, tokenised and embedded in one batch; a file
        that does not parse, or has no note, gets its error from parse_error /
        other_error(uri, exception)."""
        out = np.full((len(datas), self.dim), np.nan, dtype=np.float32)
        errors: list[str | None] = [None] * len(datas)
        ok, seqs = [], []
        for i, (data, uri) in enumerate(zip(datas, uris, strict=True)):
            if data is None:
                continue
            try:
                tokens = tokenize(parse_events(data, uri))
                if not any(t.startswith("n") for t in tokens):
                    raise ValueError("empty sequence (no notes)")
                seqs.append(self.vocab.encode(tokens))
                ok.append(i)
            except MusicParseError as exc:
                errors[i] = parse_error(uri, exc)
            except ValueError as exc:
                errors[i] = other_error(uri, exc)
        if seqs:
            out[ok] = self.embed_ids(seqs)
        return EncodeResult(out, errors)


def sample_continuation(model: MelodyLSTM, vocab: Vocabulary, seed_tokens: Sequence[str],
                        steps: int = 32, temperature: float = 1.0,
                        seed: int = 0) -> list[str]:
    """Continue a melody token by token with the inference form: greedy when
    temperature is 0, else sampled from softmax(logits / temperature)."""
    if temperature < 0 or math.isnan(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    inf = LSTMInference(model.lstm)
    emb = model.embed.weight.detach()
    head_w, head_b = model.head.weight.detach(), model.head.bias.detach()
    g = torch.Generator().manual_seed(seed)
    ids = [BOS] + [vocab.stoi.get(t, 1) for t in seed_tokens]
    state = None
    h = None
    for i in ids:  # feed the seed, carrying the state
        h, state = inf.step(emb[i].unsqueeze(0), state)
    out: list[str] = []
    for _ in range(steps):
        logits = torch.addmm(head_b, h, head_w.T)[0]
        logits[:4] = float("-inf")  # no specials in the continuation
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g))
        out.append(vocab.itos[nxt])
        h, state = inf.step(emb[nxt].unsqueeze(0), state)
    return out
