"""Symbolic music -> key-independent event tokens (SPEC E1, sequence modality).

A melody is read with music21 (ABC, MusicXML plain or compressed, MIDI, Humdrum
**kern; bytes from a local path or s3://), reduced to its melody (the highest
part, a chord as its highest note: `melody_events`), and written as tokens that
do not depend on the key:

- the first note: `n+0_<dur>`; every later note: `n<interval>_<dur>` with the
  interval in semitones from the previous note, clamped to +-12;
- a rest: `r_<dur>`;
- `<dur>` is the duration in quarter notes snapped to the nearest of
  DURATIONS.

`Vocabulary` maps tokens to ids (0 pad, 1 unknown, 2 begin, 3 end) and is
saved as JSON next to the model.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from xml.etree import ElementTree

DURATIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
MAX_INTERVAL = 12
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)

Event = tuple[int | None, float]  # (midi pitch or None for a rest, quarter length)


class MusicParseError(ValueError):
    """The music file could not be parsed (message from the parser)."""


FORMATS = ((".abc", "abc"), (".mid", "midi"), (".midi", "midi"), (".musicxml", "musicxml"),
           (".xml", "musicxml"), (".mxl", "musicxml"), (".krn", "humdrum"))
"""File suffix -> music21 format: what a corpus uri or a query's format may name."""


def _format(name: str) -> str | None:
    lower = name.lower()
    for suffix, fmt in FORMATS:
        if lower.endswith(suffix):
            return fmt
    return None


def _musicxml_text(data: bytes | str) -> str:
    """MusicXML as text; compressed MusicXML (.mxl: a zip) unpacked, its score being
    the root file META-INF/container.xml names (else its first .xml/.musicxml)."""
    if isinstance(data, str):
        return data
    if not data.startswith(b"PK"):
        return data.decode("utf-8", errors="replace")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        root = None
        if "META-INF/container.xml" in names:
            found = ElementTree.fromstring(zf.read("META-INF/container.xml")).find(".//{*}rootfile")
            root = found.get("full-path") if found is not None else None
        if root not in names:
            root = next((n for n in names if not n.startswith("META-INF/")
                         and n.lower().endswith((".xml", ".musicxml"))), None)
        if root is None:
            raise ValueError("compressed MusicXML without a score file")
        return zf.read(root).decode("utf-8", errors="replace")


def _pitch(el) -> int | None:  # noqa: ANN001 (a music21 note, chord or rest)
    """The MIDI pitch a note or chord adds to the line (a chord: its highest note);
    None for a rest or an unpitched (percussion) note or chord."""
    if el.isRest:
        return None
    notes = el.notes if el.isChord else [el]
    pitches = [n.pitch.midi for n in notes if getattr(n, "pitch", None) is not None]
    return max(pitches) if pitches else None


def _line(part) -> list[Event]:  # noqa: ANN001 (a music21 stream)
    """One part's top line in time order: at each onset its highest pitched note (a
    chord counts as its highest note, notes of several voices at one onset as the
    highest), unless a higher note is still sounding (an inner voice moving under a
    held melody note is not melody); an onset with no pitched note is a rest; grace
    notes are skipped."""
    onsets: dict[float, Event] = {}
    for el in part.flatten().notesAndRests:
        ql = float(el.quarterLength)
        if ql <= 0:
            continue  # grace notes, chord symbols
        at = float(el.offset)
        pitch = _pitch(el)
        held = onsets.get(at)
        if held is None or (pitch is not None and (held[0] is None or pitch > held[0])):
            onsets[at] = (pitch, ql)
    line: list[Event] = []
    top, until = None, float("-inf")
    for at in sorted(onsets):
        pitch, ql = onsets[at]
        if at < until and (pitch is None or (top is not None and pitch < top)):
            continue
        line.append((pitch, ql))
        top, until = pitch, at + ql
    return line


def melody_events(score) -> list[Event]:  # noqa: ANN001 (a music21 Score, Part or Opus)
    """The melody of a parsed piece as (pitch, duration) events.

    The melody is one part: of the parts with pitched notes, the one whose notes
    are highest on average (the violin over the bass, the right hand over the left,
    never a drum track), read by `_line`. A collection of several pieces (an ABC
    file with several X: tunes) gives its pieces' melodies one after another."""
    pieces = list(score.scores) if hasattr(score, "scores") and len(score.scores) else [score]
    events: list[Event] = []
    for piece in pieces:
        parts = list(getattr(piece, "parts", [])) or [piece]
        lines = [_line(p) for p in parts]
        best = max(range(len(lines)), key=lambda i: (_mean_pitch(lines[i]), -i))
        if _mean_pitch(lines[best]) > float("-inf"):
            events.extend(lines[best])
    return events


def _mean_pitch(line: list[Event]) -> float:
    pitched = [p for p, _ in line if p is not None]
    return sum(pitched) / len(pitched) if pitched else float("-inf")


def parse_events(data: bytes | str, name: str = "melody.abc") -> list[Event]:
    """(pitch, duration) events of the melody of one file (`melody_events`);
    raises MusicParseError when the file cannot be read."""
    from music21 import converter

    fmt = _format(name)
    if fmt is None:
        known = ", ".join(sorted({s for s, _ in FORMATS}))
        raise MusicParseError(f"unknown music format for {name!r} (expected {known})")
    try:
        if fmt == "midi":
            raw = data if isinstance(data, bytes) else data.encode("latin-1")
            score = converter.parse(raw, format="midi")
        elif fmt == "musicxml":
            score = converter.parse(_musicxml_text(data), format=fmt)
        else:
            text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
            score = converter.parse(text, format=fmt)
        return melody_events(score)
    except Exception as exc:  # music21 raises many types; the message is what matters
        raise MusicParseError(f"{type(exc).__name__}: {exc}") from exc


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
        return cls.parse(Path(path).read_bytes())

    @classmethod
    def parse(cls, text: str | bytes) -> Vocabulary:
        """The vocabulary `save` wrote, from its file's contents."""
        return cls(json.loads(text)["tokens"])
