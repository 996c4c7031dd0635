"""Does a text encoder's vocabulary cover a corpus's texts? (pure, no Ray)

An encoder with an English word-piece vocabulary (MiniLM, the default) still
returns a vector for a Russian, Arabic or Thai text, but it has cut the text
into single characters or unknown tokens first, and such a vector carries
little of the text's meaning. Nothing fails, so nothing would tell the user.
This module measures it on a sample: a text is *poorly covered* when its
tokens are mostly single characters (fewer than `MIN_CHARS_PER_TOKEN`
non-space characters a token: Latin-script languages stay above it, scripts
the vocabulary barely holds fall to about one) or more than `MAX_UNKNOWN` of
its tokens are the unknown token (Thai becomes one unknown token a word).
`benchmarks/text_coverage.py` checks that the languages this flags are those
whose texts MiniLM cannot match to their English counterparts (figures in
`benchmarks/RESULTS.md`).

`CoverageCount` sums the per-partition counts of the embed job; its `note`
is the sentence the job prints when a large share of the sample is poorly
covered (`NOTE_SHARE`).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_CHARS_PER_TOKEN = 1.5
MAX_UNKNOWN = 0.25
NOTE_SHARE = 0.2
PREFIX_CHARS = 512  # a text is judged on its first characters (enough for the rule)


def script_of(ch: str) -> str | None:
    """The script of a letter as Unicode names it (LATIN, CYRILLIC, CJK, HANGUL, ...);
    None for a character that is not a letter."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else None


def main_script(text: str) -> str | None:
    """The script most of a text's letters are written in (None: no letters)."""
    counts = Counter(s for s in map(script_of, text[:PREFIX_CHARS]) if s is not None)
    return counts.most_common(1)[0][0] if counts else None


def poorly_covered(texts: Sequence[str], tokenize: Callable[[list[str]], list[list[int]]],
                   unknown_id: int | None) -> list[bool]:
    """Per text: True when the vocabulary behind `tokenize` (texts -> token ids, no
    special tokens, no truncation) splits its first PREFIX_CHARS characters into
    mostly single characters or unknown tokens. A text without letters or tokens
    (digits, an empty string) is never poorly covered."""
    heads = [t[:PREFIX_CHARS] for t in texts]
    if not heads:
        return []
    out = []
    for head, ids in zip(heads, tokenize(heads), strict=True):
        chars = sum(not c.isspace() for c in head)
        if not ids or not any(c.isalpha() for c in head):
            out.append(False)
            continue
        unknown = sum(i == unknown_id for i in ids) if unknown_id is not None else 0
        out.append(chars / len(ids) < MIN_CHARS_PER_TOKEN or unknown / len(ids) > MAX_UNKNOWN)
    return out


def spread(n: int, k: int) -> list[int]:
    """Up to k of the positions 0..n-1, evenly spaced, first and last included (the
    partitions a sample is drawn from: a bounded number at any corpus size)."""
    if n <= 0 or k <= 0:
        return []
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


@dataclass
class CoverageCount:
    """How many texts were sampled, how many of them are poorly covered, and the
    main script of those (e.g. {"CYRILLIC": 40, "ARABIC": 12}); for an encoder that
    reads a text in windows (`lengths`, e.g. MiniLM's 254 tokens of text a window,
    16 windows at most), how many sampled texts need more than one window (`long`)
    and how many are longer than it reads (`cut`: their end is not read)."""

    encoder: str
    sampled: int = 0
    poor: int = 0
    scripts: Counter[str] = field(default_factory=Counter)
    long: int = 0
    cut: int = 0
    window: int = 0  # tokens of text per window (0: no length check)
    max_windows: int = 0

    @classmethod
    def of(cls, encoder: str, texts: Sequence[str], poor: Sequence[bool],
           lengths: tuple[Sequence[int], int, int] | None = None) -> CoverageCount:
        scripts = Counter(main_script(t) or "none" for t, p in zip(texts, poor, strict=True) if p)
        out = cls(encoder, len(texts), int(sum(poor)), scripts)
        if lengths is not None:
            tokens, out.window, out.max_windows = lengths
            out.long = sum(n > out.window for n in tokens)
            out.cut = sum(n > out.window * out.max_windows for n in tokens)
        return out

    @classmethod
    def merge(cls, encoder: str, parts: Iterable[CoverageCount]) -> CoverageCount:
        total = cls(encoder)
        for p in parts:
            total.sampled += p.sampled
            total.poor += p.poor
            total.scripts.update(p.scripts)
            total.long += p.long
            total.cut += p.cut
            total.window, total.max_windows = (max(total.window, p.window),
                                               max(total.max_windows, p.max_windows))
        return total

    @property
    def share(self) -> float:
        return self.poor / self.sampled if self.sampled else 0.0

    def record(self) -> dict[str, Any]:
        """The manifest's record."""
        out = {"encoder": self.encoder, "sampled": self.sampled, "poorly_covered": self.poor,
               "share": round(self.share, 4),
               "scripts": dict(self.scripts.most_common()),
               "rule": {"min_chars_per_token": MIN_CHARS_PER_TOKEN, "max_unknown": MAX_UNKNOWN}}
        if self.window:
            out["length"] = {"tokens_per_window": self.window, "max_windows": self.max_windows,
                             "longer_than_one_window": self.long,
                             "longer_than_read": self.cut}
        return out

    def length_note(self) -> str | None:
        """What the user should know when sampled texts are longer than the encoder
        reads (their ends are left out); None otherwise."""
        if not self.cut:
            return None
        read = self.window * self.max_windows
        return (f"{self.cut} of {self.sampled} sampled texts ({self.cut / self.sampled:.0%}) "
                f"are longer than the {read:,} tokens {self.encoder} reads of a text "
                f"({self.max_windows} windows of {self.window}); the rest of each is not read "
                f"(--max-windows N reads more, at a cost growing with N)")

    def note(self, alternatives: Sequence[str]) -> str | None:
        """What the user should know, when at least NOTE_SHARE of the sample is poorly
        covered (`alternatives`: the encoders that read these texts); None otherwise."""
        if not self.sampled or self.share < NOTE_SHARE:
            return None
        scripts = ", ".join(s.lower() for s, _ in self.scripts.most_common(3))
        return (f"{self.share:.0%} of {self.sampled} sampled texts ({scripts} script) are cut "
                f"by {self.encoder}'s vocabulary into single characters or unknown tokens, so "
                f"their vectors carry little of their meaning; {_flags(alternatives)} "
                "reads them")


def query_note(encoder: str, alternatives: Sequence[str]) -> str:
    """What a served answer says when its text query is poorly covered."""
    return (f"the query is cut by {encoder}'s vocabulary into single characters or unknown "
            f"tokens, so the answer reads little of it (this service's texts were embedded "
            f"with {encoder}; a run embedded with {_flags(alternatives)} reads it)")


def _flags(alternatives: Sequence[str]) -> str:
    return " or ".join(f"--text-encoder {a}" for a in alternatives) or "another text encoder"
