"""The held-out split of the train job: which items training never sees."""

import numpy as np
import pyarrow as pa
import pytest

from culturesim_ray.training.data import drop_items, held_out_ids, holdout_mask, split_holdout


def _ids(n_per: dict[str, int]) -> tuple[list[str], list[str]]:
    ids, cultures = [], []
    for c, n in n_per.items():
        for i in range(n):
            ids.append(f"{c}-{i}")
            cultures.append(c)
    return ids, cultures


def test_fraction_per_culture_and_singletons_kept() -> None:
    ids, cultures = _ids({"a": 10, "b": 5, "c": 1, "d": 4})
    held = holdout_mask(ids, cultures, 0.2)
    per = {c: int(held[[i for i, x in enumerate(cultures) if x == c]].sum()) for c in "abcd"}
    assert per == {"a": 2, "b": 1, "c": 0, "d": 0}


def test_depends_on_ids_not_row_order() -> None:
    ids, cultures = _ids({"a": 30, "b": 17})
    held = holdout_mask(ids, cultures, 0.3, seed=4)
    perm = np.random.default_rng(0).permutation(len(ids))
    held_perm = holdout_mask([ids[i] for i in perm], [cultures[i] for i in perm], 0.3, seed=4)
    assert {ids[i] for i in np.flatnonzero(held)} == \
        {ids[perm[i]] for i in np.flatnonzero(held_perm)}
    other = holdout_mask(ids, cultures, 0.3, seed=5)
    assert not np.array_equal(held, other)


def test_zero_and_bad_fraction() -> None:
    ids, cultures = _ids({"a": 10})
    assert not holdout_mask(ids, cultures, 0.0).any()
    with pytest.raises(ValueError, match="holdout fraction"):
        holdout_mask(ids, cultures, 1.0)


def test_split_tables_partition_the_items() -> None:
    ids, cultures = _ids({"a": 12, "b": 8})
    t = pa.table({"item_id": ids, "culture": cultures, "vector": [[float(i), 1.0] for i in range(20)]})
    train, held = split_holdout({"text": t}, 0.25)
    got = set(train["text"].column("item_id").to_pylist()) | set(held["text"].column("item_id").to_pylist())
    assert got == set(ids) and train["text"].num_rows + held["text"].num_rows == 20
    assert held["text"].num_rows == 3 + 2
    listing = held_out_ids(held)
    assert listing.column("modality").to_pylist() == ["text"] * 5
    rest = drop_items({"text": t}, set(listing.column("item_id").to_pylist()))
    assert rest["text"].column("item_id").to_pylist() == train["text"].column("item_id").to_pylist()


def _reference_mask(item_ids: list[str], cultures: list[str], fraction: float,
                    seed: int) -> np.ndarray:
    """The rule spelled out in Python: per culture, the lowest (hash, id) first."""
    import hashlib

    def key(i: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(),
                              "big")

    held = np.zeros(len(item_ids), bool)
    groups: dict[str, list[int]] = {}
    for row, c in enumerate(cultures):
        groups.setdefault(c, []).append(row)
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: (key(item_ids[r]), item_ids[r]))
        held[rows[:int(fraction * len(rows))]] = True
    return held


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_vectorised_mask_equals_the_rule(fraction: float) -> None:
    rng = np.random.default_rng(3)
    cultures = [f"c{k}" for k in rng.integers(0, 40, 3000)]
    ids = [f"item-{i}" for i in rng.permutation(3000)]
    ids[10:20] = ids[:10]  # repeated ids tie on their hash
    cultures[10:20] = cultures[:10]
    ref = _reference_mask(ids, cultures, fraction, 7)
    assert ref.sum() > 0
    np.testing.assert_array_equal(holdout_mask(ids, cultures, fraction, 7), ref)
    chunked = pa.chunked_array([pa.array(ids[:1000]), pa.array(ids[1000:])])
    np.testing.assert_array_equal(holdout_mask(chunked, pa.array(cultures), fraction, 7), ref)
