"""Culture names compared as people write them: without case, Unicode form or
spacing (`Chinese`, `chinese`, ` CHINESE `). Pure."""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable


def name_key(name: str) -> str:
    """A culture name compared without case, Unicode form or spacing."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def resolver(known: Iterable[str]) -> Callable[[str], str | None]:
    """name -> the known name it means: itself, else the one known name that differs
    from it only in case, Unicode form or spacing; None when none or several do."""
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
    """The groups of distinct names that differ only in case, Unicode form or
    spacing (each group sorted, groups by their first name)."""
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
    return (f"{len(groups)} culture name(s) are written several ways, differing only in case "
            f"or spacing: {some}. Each spelling is a culture of its own here; if they "
            "are one culture, give it one name in the corpus and embed again")
