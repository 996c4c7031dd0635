"""The `muse` encoder (multilingual USE v3, packaged weights) through the registry."""

from __future__ import annotations

import numpy as np

from culturesim_ray.encoders import build_encoder
from culturesim_ray.encoders.registry import get, weights_path


def test_muse_multilingual_normalised_and_batch_independent():
    enc = build_encoder("muse")
    texts = ["Osmanlı İmparatorluğu İstanbul'dan yönetildi.",
             "The Ottoman Empire was ruled from Istanbul.",
             "Recette de la pizza napolitaine au four à bois."]
    r = enc.encode(texts)
    assert r.vectors.shape == (3, get("muse").dim) and r.errors == [None] * 3
    np.testing.assert_allclose(np.linalg.norm(r.vectors, axis=1), 1.0, atol=1e-5)
    sims = r.vectors @ r.vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[0, 1] > sims[1, 2] + 0.2  # across languages
    alone = enc.encode([texts[1]]).vectors[0]
    np.testing.assert_allclose(alone, r.vectors[1], atol=1e-5)
    assert enc.encode([]).vectors.shape == (0, 512)


def test_muse_weights_ship_in_the_package():
    path = weights_path("muse")
    assert path is not None and path.endswith("resources")
    import os

    assert os.path.getsize(os.path.join(path, "weights.npz")) > 10_000_000
