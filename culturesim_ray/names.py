"""Culture names compared as people write them: without case, accents, Unicode
form, spacing or punctuation (`Chinese`, ` CHINESE `, `Cote d'Ivoire` for
`Côte d’Ivoire`, `Guinea Bissau` for `Guinea-Bissau`). Pure."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable

_APOSTROPHES = str.maketrans({c: "'" for c in "\u2018\u2019\u02bc\u00b4`"})
_ACCENTED = "\u0530"  # letters below this (Latin, Greek, Cyrillic) lose their accents
_JOINERS = re.compile(r"[-_\u2010-\u2015/]+")  # hyphens, dashes, underscores, slashes


def name_key(name: str) -> str:
    """A culture name compared without case, accents, Unicode form, spacing or
    punctuation: typographic apostrophes as `'`, hyphens, dashes, underscores and
    slashes as spaces, full stops dropped (`St. Lucia`, `St Lucia`). Accents are
    dropped from Latin, Greek and Cyrillic letters only: elsewhere a combining
    mark can tell two words apart (Japanese dakuten, Indic viramas)."""
    kept, base = [], ""
    for c in unicodedata.normalize("NFKD", name.casefold()):
        if not unicodedata.combining(c):
            base = c
        elif base < _ACCENTED:
            continue  # an accent on a Latin, Greek or Cyrillic letter
        kept.append(c)
    text = _JOINERS.sub(" ", "".join(kept).translate(_APOSTROPHES).replace(".", ""))
    return " ".join(unicodedata.normalize("NFC", text).split())


def resolver(known: Iterable[str]) -> Callable[[str], str | None]:
    """name -> the known name it means: itself, else the one known name that differs
    from it only as `name_key` folds; None when none or several do."""
    names = set(known)
    keyed: dict[str, list[str]] = defaultdict(list)
    for n in sorted(names):
        keyed[name_key(n)].append(n)

    def resolve(name: str) -> str | None:
        if name in names:
            return name
        hits = keyed.get(name_key(name), [])
        return hits[0] if len(hits) == 1 else None

    return resolve


def alike(names: Iterable[str]) -> list[list[str]]:
    """The groups of distinct names that differ only as `name_key` folds: case,
    accents, Unicode form, spacing, punctuation (each group sorted, groups by
    their first name)."""
    groups: dict[str, set[str]] = defaultdict(set)
    for n in names:
        groups[name_key(n)].add(n)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def listed(parts: list[str], shown: int, sep: str = ", ") -> str:
    """The first `shown` of `parts` joined, and how many more there are."""
    more = f"{sep}and {len(parts) - shown} more" if len(parts) > shown else ""
    return sep.join(parts[:shown]) + more


def alike_note(names: Iterable[str], shown: int = 3) -> str | None:
    """What a user should know when the corpus names one culture several ways (None:
    it does not): each spelling is a culture of its own everywhere downstream."""
    groups = alike(names)
    if not groups:
        return None
    some = listed([" and ".join(repr(n) for n in g) for g in groups], shown, "; ")
    return (f"{len(groups)} culture name(s) are written several ways, differing only in case, "
            f"accents, spacing or punctuation: {some}. Each spelling is a culture of its own here; if they "
            "are one culture, give it one name in the corpus and embed again")
