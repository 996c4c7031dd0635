"""Symbolic music -> key-independent event tokens (SPEC E1, sequence modality).

A melody is read with music21 (ABC, MusicXML, MIDI; bytes from a local path or
s3://), reduced to its top line (a chord counts as its highest note), and
written as tokens that do not depend on the key:

- the first note: `n+0_<dur>`; every later note: `n<interval>_<dur>` with the
  interval in semitones from the previous note, clamped to +-12;
- a rest: `r_<dur>`;
- `<dur>` is the duration in quarter notes snapped to the nearest of
  DURATIONS.

`Vocabulary` maps tokens to ids (0 pad, 1 unknown, 2 begin, 3 end) and is
saved as JSON next to the model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

DURATIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
MAX_INTERVAL = 12
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)

Event = tuple[int | None, float]  # (midi pitch or None for a rest, quarter length)


class MusicParseError(ValueError):
    """The music file could not be parsed (message from the parser)."""


def _format(name: str) -> str | None:
    lower = name.lower()
    for suffix, fmt in ((".abc", "abc"), (".mid", "midi"), (".midi", "midi"),
                        (".musicxml", "musicxml"), (".xml", "musicxml"), (".mxl", "musicxml")):
        if lower.endswith(suffix):
            return fmt
    return None


def parse_events(data: bytes | str, name: str = "melody.abc") -> list[Event]:
    """(pitch, duration) events of the top line of one piece; raises MusicParseError."""
    from music21 import converter

    fmt = _format(name)
    if fmt is None:
        raise MusicParseError(f"unknown music format for {name!r} (expected .abc, .mid, .musicxml)")
    try:
        if fmt == "midi":
            raw = data if isinstance(data, bytes) else data.encode("latin-1")
            score = converter.parse(raw, format="midi")
        else:
            text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
            score = converter.parse(text, format=fmt)
    except Exception as exc:  # music21 raises many types; the message is what matters
        raise MusicParseError(f"{type(exc).__name__}: {exc}") from exc
    events: list[Event] = []
    for el in score.flatten().notesAndRests:
        ql = float(el.quarterLength)
        if ql <= 0:
            continue  # grace notes
        if el.isRest:
            events.append((None, ql))
        elif el.isChord:
            events.append((max(p.midi for p in el.pitches), ql))
        else:
            events.append((el.pitch.midi, ql))
    return events


def snap_duration(ql: float) -> float:
    return min(DURATIONS, key=lambda d: abs(d - ql))


def _dur(d: float) -> str:
    return f"{d:g}"


def tokenize(events: Sequence[Event]) -> list[str]:
    tokens, prev = [], None
    for pitch, ql in events:
        d = _dur(snap_duration(ql))
        if pitch is None:
            tokens.append(f"r_{d}")
            continue
        step = 0 if prev is None else max(-MAX_INTERVAL, min(MAX_INTERVAL, pitch - prev))
        tokens.append(f"n{step:+d}_{d}")
        prev = pitch
    return tokens


def detokenize(tokens: Iterable[str], start_pitch: int = 60) -> list[Event]:
    """Tokens back to events, the first note at `start_pitch` (specials skipped)."""
    events: list[Event] = []
    pitch = None
    for tok in tokens:
        if tok in SPECIALS:
            continue
        kind, _, d = tok.partition("_")
        ql = float(d)
        if kind == "r":
            events.append((None, ql))
            continue
        step = int(kind[1:])
        pitch = start_pitch if pitch is None and not events else (pitch or start_pitch) + step
        events.append((pitch, ql))
    return events


class Vocabulary:
    def __init__(self, tokens: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        return cls.from_counts(counts, min_count)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_count: int = 1) -> Vocabulary:
        """The vocabulary of token counts summed elsewhere (e.g. per partition):
        the same as `build` over the sequences counted, most frequent first."""
        return cls(sorted((t for t, c in counts.items() if c >= min_count),
                          key=lambda t: (-counts[t], t)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [BOS] + [self.stoi.get(t, UNK) for t in tokens] + [EOS]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.itos[len(SPECIALS):]}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(json.loads(Path(path).read_text())["tokens"])
