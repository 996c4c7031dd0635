"""Stage-1 query scores (`ops.query_score`) against float64 loops written here."""

from __future__ import annotations

import numpy as np
import pytest

from culturesim_ray.ops.query_score import (
    QueryMix,
    mix_scores,
    nearest_item_scores,
    nearest_items,
)
from culturesim_ray.training.config import merge_train_config


def reference_nearest(sims: np.ndarray, culture: np.ndarray, n_cultures: int, m: int,
                      floor: np.ndarray) -> np.ndarray:
    """Per query and culture: the m largest cosines of its items, missing ones at floor."""
    out = np.zeros((len(sims), n_cultures))
    for i in range(len(sims)):
        for c in range(n_cultures):
            own = sorted((float(s) for s, cc in zip(sims[i], culture[i], strict=True)
                          if cc == c), reverse=True)[:m]
            own += [float(floor[i])] * (m - len(own))
            out[i, c] = sum(own) / m
    return out


def corpus(seed: int = 0, n: int = 40, d: int = 6, b: int = 5):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n, d)) + 0.3
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    q = rng.normal(size=(b, d))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # 6 cultures: culture 4 has 2 items (fewer than m = 3), culture 5 none
    culture = np.concatenate([np.repeat([0, 1, 2, 3], 9), [4, 4, 0, 1]])
    return q @ items.T, culture


@pytest.mark.parametrize("m", [1, 3])
def test_every_item_in_the_shortlist_is_the_exact_score(m):
    sims, culture = corpus()
    order = np.argsort(-sims, axis=1)  # as an index search returns them, best first
    s, c = np.take_along_axis(sims, order, 1), culture[order]
    got = nearest_item_scores(s, c, 6, m)
    ref = reference_nearest(sims, np.broadcast_to(culture, sims.shape), 6, m, sims.min(1))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert not np.allclose(got[:, 0], got[:, 1])  # not a constant
    # a culture without items scores the floor: the query's least similar item
    np.testing.assert_allclose(got[:, 5], sims.min(1), atol=1e-12)


def test_a_shortlist_bounds_what_it_does_not_see():
    """With the K best items only, a culture with m of them is exact, and any other
    is scored at or above its exact score (nothing unseen is closer than the floor)."""
    sims, culture = corpus(1)
    m, k = 3, 12
    order = np.argsort(-sims, axis=1)[:, :k]
    s, c = np.take_along_axis(sims, order, 1), culture[order]
    got = nearest_item_scores(s, c, 6, m)
    exact = reference_nearest(sims, np.broadcast_to(culture, sims.shape), 6, m, sims.min(1))
    ref = reference_nearest(s, c, 6, m, s.min(1))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    full = np.array([[np.sum(c[i] == j) >= m for j in range(6)] for i in range(len(c))])
    assert full.any() and (~full).any()
    np.testing.assert_allclose(got[full], exact[full], atol=1e-12)
    assert (got >= exact - 1e-12).all()


def test_missing_shortlist_entries_are_ignored():
    sims = np.array([[0.9, 0.5, 0.2, -5.0]])
    culture = np.array([[1, 0, 1, -1]])  # the last: an IVF search that came back short
    got = nearest_item_scores(sims, culture, 3, 2)
    np.testing.assert_allclose(got, [[(0.5 + 0.2) / 2, (0.9 + 0.2) / 2, 0.2]])
    with pytest.raises(ValueError, match="same"):
        nearest_item_scores(sims, culture[:, :2], 3, 2)


def test_mix_scores():
    rng = np.random.default_rng(3)
    raw, learned, near = (rng.normal(size=(4, 7)) for _ in range(3))
    plain = QueryMix(nearest=0.0, learned=1.0)
    assert plain.plain and not QueryMix().plain
    np.testing.assert_allclose(mix_scores(raw, learned, near, 0.9, plain), raw + learned)
    mix = QueryMix(nearest=0.5, learned=0.25)
    np.testing.assert_allclose(mix_scores(raw, learned, near, 0.9, mix),
                               0.5 * raw + 0.5 * 0.9 * near + 0.25 * learned)
    # no nearest-items score (a run without item cultures): the raw part keeps its weight
    np.testing.assert_allclose(mix_scores(raw, learned, None, 0.9, mix), raw + 0.25 * learned)


def test_query_mix_settings():
    assert QueryMix.from_dict(None).plain  # serving state from before the mix
    mix = QueryMix(nearest=0.25, m=2, shortlist=16, learned=0.0)
    assert QueryMix.from_dict(mix.to_dict()) == mix
    for bad in ({"nearest": 1.5}, {"m": 0}, {"m": 8, "shortlist": 4}, {"learned": -1.0}):
        with pytest.raises(ValueError, match="QueryMix"):
            QueryMix(**bad)
    cfg = merge_train_config({"query": {"learned": 0.5}}, {"query": {"m": 5}})
    assert cfg.query == QueryMix(learned=0.5, m=5)
    assert merge_train_config(cfg.to_dict()).query == cfg.query  # saved and read back
    with pytest.raises(ValueError, match="unknown key"):
        merge_train_config({"query": {"weight": 1.0}})


def test_query_mix_per_modality():
    mix = QueryMix()
    tune, text = mix.for_modality("sequence"), mix.for_modality("text")
    assert (tune.nearest, tune.m, tune.modalities) == (1.0, 3, {})
    assert tune.learned == mix.learned and tune.shortlist == mix.shortlist
    assert text is mix and (text.nearest, text.m) == (0.5, 1)
    assert QueryMix.from_dict(mix.to_dict()) == mix  # written with the serving state
    # a mix written before per-modality settings existed ranks tunes as it did
    old = {k: v for k, v in mix.to_dict().items() if k != "modalities"}
    assert QueryMix.from_dict(old).for_modality("sequence").nearest == 0.5
    for bad in ({"sequence": {"nearest": 2.0}}, {"sequence": {"m": 100}},
                {"sequence": {"learned": 0.5}}, {"sequence": [1.0, 3]}):
        with pytest.raises(ValueError, match="QueryMix"):
            QueryMix(modalities=bad)
    cfg = merge_train_config({"query": {"modalities": {"image": {"m": 2}}}})
    assert cfg.query.for_modality("image").m == 2 and cfg.query.for_modality("sequence") \
        is cfg.query  # a YAML mapping replaces the default's
    assert merge_train_config(cfg.to_dict()).query == cfg.query


def test_nearest_items_are_each_cultures_best_shortlist_item():
    """Against a loop: per query and ranked culture, the row and cosine of its most
    similar shortlist item; a culture absent from the shortlist, a -1 rank slot and
    a short search's -1 entries give (-1, nan)."""
    sims, culture = corpus(seed=3)
    k_short = 12
    order = np.argsort(-sims, axis=1)[:, :k_short]
    s = np.take_along_axis(sims, order, axis=1)
    rows = order.copy()
    rows[1, -2:] = -1  # a search that came back short
    c = np.where(rows >= 0, culture[np.maximum(rows, 0)], -1)
    s[1, -2:] = -1.0
    # shuffle the shortlist: the helper must not rely on its order
    perm = np.random.default_rng(0).permutation(k_short)
    s, rows, c = s[:, perm], rows[:, perm], c[:, perm]
    positions = np.array([[0, 1, 5, 4], [2, 3, -1, 0], [4, 0, 1, 2], [1, 2, 3, 5],
                          [3, 4, 0, 1]])
    got_rows, got_cos = nearest_items(s, rows, c, positions)
    for i in range(len(s)):
        for j, p in enumerate(positions[i]):
            own = [(float(s[i, t]), int(rows[i, t])) for t in range(k_short)
                   if p >= 0 and rows[i, t] >= 0 and c[i, t] == p]
            if not own:
                assert got_rows[i, j] == -1 and np.isnan(got_cos[i, j])
                continue
            best = max(own)
            assert got_rows[i, j] == best[1]
            assert got_cos[i, j] == pytest.approx(best[0], abs=1e-12)
            assert culture[got_rows[i, j]] == p
    assert (got_rows[:, 2][positions[:, 2] == 5] == -1).all()  # culture 5 has no items


def test_nearest_items_shapes_are_checked():
    with pytest.raises(ValueError, match="must be the same"):
        nearest_items(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="positions"):
        nearest_items(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 1)))


def test_imbalance_note_speaks_from_a_tenfold_spread_within_a_modality():
    from culturesim_ray.ops.query_score import imbalance_note

    def sizes(lo: int, hi: int, **more: tuple[int, int]) -> dict[str, dict[str, int]]:
        return {"text": {"min": lo, "max": hi},
                **{m: {"min": a, "max": b} for m, (a, b) in more.items()}}

    note = imbalance_note(sizes(2, 48), QueryMix())
    assert note and "text items 2 to 48 (24x)" in note
    assert imbalance_note(sizes(5, 49), QueryMix()) is None  # under 10x
    assert imbalance_note(sizes(5, 50), QueryMix()) is not None
    assert imbalance_note(sizes(0, 50), QueryMix()) is None  # no items of it at all
    # cultures that differ in which modalities they have, each modality even: nothing
    assert imbalance_note(sizes(20, 20, image=(1, 1), sequence=(20, 20)), QueryMix()) is None
    both = imbalance_note(sizes(1, 30, sequence=(2, 40)), QueryMix())
    assert "sequence items 2 to 40 (20x); text items 1 to 30 (30x)" in both
    # the config the note suggests silences it, and is a valid train config
    cfg = merge_train_config({"query": {"nearest": 0.0, "modalities": {}}})
    assert imbalance_note(sizes(1, 48), cfg.query) is None
    # a modality that keeps its own nearest-items weight keeps its note
    assert imbalance_note(sizes(5, 5, sequence=(1, 48)), QueryMix(nearest=0.0)) is not None
    assert imbalance_note(sizes(1, 48, sequence=(5, 5)), QueryMix(nearest=0.0)) is None


def test_query_mix_abtt_setting():
    mix = QueryMix()
    assert mix.abtt == ("text",) and mix.debiased("text") and not mix.debiased("sequence")
    assert QueryMix.from_dict(mix.to_dict()) == mix
    assert QueryMix.from_dict(None).abtt == ()  # state written before the mix existed
    old = {k: v for k, v in mix.to_dict().items() if k != "abtt"}
    assert QueryMix.from_dict(old).abtt == ()  # ... or before abtt existed
    cfg = merge_train_config({"query": {"abtt": ["text", "image"]}})  # a YAML list
    assert cfg.query.abtt == ("text", "image")
    assert cfg.query.for_modality("sequence").debiased("image")
    with pytest.raises(ValueError, match="abtt must list modalities"):
        QueryMix(abtt="text")
