"""TF-IDF + LSA: the fast baseline text encoder, no model weights.

Fit once over the whole corpus (vocabulary and IDF), then applied per shard.
A text becomes a dense vector in three steps:

1. tokens: lower-cased runs of 2+ letters, digits and combining marks in any
   script (so Devanagari vowel signs and Turkish dotted capitals stay inside
   the word); digit-only tokens are dropped;
2. sparse TF-IDF: sublinear tf `1 + log(tf)` times smooth idf
   `log((1 + n) / (1 + df)) + 1`, L2-normalised (as in scikit-learn);
3. LSA: projection onto the top `dim` right singular vectors of the corpus's
   TF-IDF matrix (randomised SVD, seeded), then L2-normalised.

`dim` is min(requested dim, n_docs, vocabulary size). State is three arrays
(vocabulary, idf, components) saved as `.npz`, no pickle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import regex
import torch

from culturesim_ray.encoders.base import EncodeResult, l2_normalize

TOKEN_RE = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]+")


def tokenize(text: str) -> list[str]:
    return [t for t in TOKEN_RE.findall(text.lower()) if not t.isdigit()]


def document_frequencies(texts: Sequence[str]) -> Counter[str]:
    """token -> number of texts containing it (one batch's share of the corpus count)."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(tokenize(text)))
    return df


def top_tokens(df: Mapping[str, int], max_features: int = 50_000,
               min_df: int = 1) -> list[tuple[str, int]]:
    """The vocabulary: tokens in at least `min_df` texts, most frequent first, ties
    by token (deterministic), at most `max_features`."""
    kept = [(t, int(c)) for t, c in df.items() if c >= min_df]
    kept.sort(key=lambda tc: (-tc[1], tc[0]))
    return kept[:max_features]


class TfidfEncoder:
    name = "tfidf"
    modality = "text"
    normalized = True

    def __init__(self, vocabulary: Sequence[str], idf: np.ndarray, components: np.ndarray) -> None:
        self.vocabulary = list(vocabulary)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float32)  # (V,)
        self.components = np.asarray(components, dtype=np.float32)  # (V, dim)
        if self.components.shape[0] != len(self.vocabulary) or self.idf.shape[0] != len(self.vocabulary):
            raise ValueError("tfidf state: vocabulary, idf and components disagree in size")
        self.dim = int(self.components.shape[1])

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = 256, max_features: int = 50_000,
            min_df: int = 1, seed: int = 0) -> TfidfEncoder:
        """Fit vocabulary, IDF and the LSA projection on the whole corpus (in memory)."""
        df = document_frequencies(texts)
        return cls.from_frequencies(top_tokens(df, max_features, min_df), len(texts), texts,
                                    dim=dim, seed=seed)

    @classmethod
    def from_frequencies(cls, vocab_df: Sequence[tuple[str, int]], n_docs: int,
                         sample: Sequence[str], dim: int = 256, seed: int = 0) -> TfidfEncoder:
        """Fit from document frequencies counted over the whole corpus (`vocab_df`,
        most frequent first, as `top_tokens` orders them; `n_docs` documents) and
        the LSA projection from the TF-IDF rows of `sample` (the whole corpus, or
        a bounded sample of it: what the embed job aggregates with Ray Data)."""
        vocab = [t for t, _ in vocab_df]
        if not vocab:
            raise ValueError("tfidf: no tokens in the corpus texts (need words of 2+ characters)")
        counts = np.array([c for _, c in vocab_df], dtype=np.float64)
        idf = np.log((1.0 + n_docs) / (1.0 + counts)) + 1.0
        enc = cls(vocab, idf, np.zeros((len(vocab), 1), np.float32))
        x = enc._sparse(sample)  # (n, V) sparse, rows L2-normalised
        n = len(sample)
        k = max(1, min(dim, n, len(vocab)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.svd_lowrank(x.to(torch.float64), q=min(k + 8, n, len(vocab)), niter=6)
        comps = v[:, :k].numpy()  # (V, k)
        # fix each component's sign (largest |loading| positive) so refits agree
        signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(k)])
        enc.components = (comps * np.where(signs == 0, 1, signs)).astype(np.float32)
        enc.dim = k
        return enc

    def _sparse(self, texts: Sequence[str]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            counts = Counter(t for t in tokenize(text) if t in self.index)
            if not counts:
                continue
            ids = np.fromiter((self.index[t] for t in counts), dtype=np.int64, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            w = tf * self.idf[ids]
            w /= np.linalg.norm(w)
            rows.append(np.full(len(ids), r, dtype=np.int64))
            cols.append(ids)
            vals.append(w)
        n, v = len(texts), len(self.vocabulary)
        if not rows:
            return torch.sparse_coo_tensor(torch.zeros((2, 0), dtype=torch.long),
                                           torch.zeros(0), (n, v), check_invariants=False).coalesce()
        idx = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(np.concatenate(vals)).float(),
                                       (n, v), check_invariants=False).coalesce()

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        texts = list(inputs)
        if not texts:
            return EncodeResult(np.empty((0, self.dim), np.float32), [])
        x = self._sparse(texts)
        dense = torch.sparse.mm(x, torch.from_numpy(self.components)).numpy()  # (n, dim)
        # a text with no known token has no direction: it stays the zero vector
        return EncodeResult(l2_normalize(dense), [None] * len(texts))

    def state(self) -> dict[str, np.ndarray]:
        return {"vocabulary": np.array(self.vocabulary, dtype=object).astype(str),
                "idf": self.idf, "components": self.components}

    def save(self, path: str) -> None:
        np.savez_compressed(path, **self.state())

    @classmethod
    def load(cls, path: str) -> TfidfEncoder:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vocabulary"].tolist(), z["idf"], z["components"])

    @classmethod
    def from_state(cls, vocabulary: Sequence[str] | None = None, idf: np.ndarray | None = None,
                   components: np.ndarray | None = None, path: str | None = None,
                   **_: object) -> TfidfEncoder:
        """Build from arrays (what a Ray actor receives) or from a saved `.npz`."""
        if path is not None:
            return cls.load(path)
        if vocabulary is None or idf is None or components is None:
            raise ValueError("tfidf encoder needs a fitted state (vocabulary, idf, components) or a path")
        return cls(vocabulary, idf, components)
