"""benchmarks/long_texts.py's documents: each (culture, language)'s items joined in
corpus order, a bounded number at a time, never across cultures or languages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.long_texts import join_documents  # noqa: E402


def test_documents_join_one_cultures_items_of_one_language_in_order():
    texts = ["a1", "b1", "a2", "a3", "a4", "c1", "a5"]
    culture = np.array(["A", "B", "A", "A", "A", "A", "A"])
    lang = np.array(["en", "en", "en", "en", "fr", "en", "en"])
    docs, doc_culture, of_item = join_documents(texts, culture, lang, join=2)
    assert docs == ["a1\n\na2", "a3\n\nc1", "a5", "b1", "a4"]
    assert doc_culture.tolist() == ["A", "A", "A", "B", "A"]
    assert of_item.tolist() == [0, 3, 0, 1, 4, 1, 2]
    # every item is in exactly one document of its own culture
    assert all(doc_culture[of_item[i]] == culture[i] and texts[i] in docs[of_item[i]]
               for i in range(len(texts)))
