"""The streamed CSR writer gives `CSRGraph.from_edges`'s arrays exactly."""

from __future__ import annotations

import numpy as np
import pytest

from culturesim_ray.graph.csr_write import PARTS, CSRWriter
from culturesim_ray.graph.sample import CSRGraph


def _edges(seed: int, n: int, e: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, e)
    dst = rng.integers(0, n, e)
    dst[: e // 10] = src[: e // 10]  # self loops
    src[e // 10: e // 5] = src[e // 5: 3 * e // 10]  # the same pairs again
    dst[e // 10: e // 5] = dst[e // 5: 3 * e // 10]
    rel = rng.integers(0, 3, e).astype(np.int16)
    w = rng.random(e).astype(np.float32)
    return src, dst, rel, w


def _write(tmp_path, name: str, n: int, edges, cuts, symmetric: bool, block: int) -> CSRGraph:
    w = CSRWriter(str(tmp_path), name, n, symmetric=symmetric, block_edges=block)
    parts = [tuple(a[i:j] for a in edges) for i, j in zip(cuts, cuts[1:], strict=False)]
    for p in parts:
        w.count(*p[:2], relations=p[2], weights=p[3])
    for p in reversed(parts):  # fill in another order than count
        w.fill(*p[:2], relations=p[2], weights=p[3])
    written = w.finish()
    g = CSRGraph(*(np.load(w.path(part)) for part in PARTS))
    assert g.num_edges == written
    assert not list(tmp_path.glob(f"{name}_tmp_*"))
    return g


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [1, 7, 50, 10**9])
def test_streamed_csr_equals_in_memory(tmp_path, symmetric: bool, block: int) -> None:
    n, e = 60, 900
    edges = _edges(0, n, e)
    ref = CSRGraph.from_edges(edges[0], edges[1], n, edges[3], edges[2], symmetric=symmetric)
    got = _write(tmp_path, f"g{block}", n, edges, [0, 1, 300, 301, 899, e], symmetric, block)
    assert ref.num_edges > 0
    for part in PARTS:
        np.testing.assert_array_equal(getattr(got, part), getattr(ref, part), err_msg=part)


def test_streamed_csr_isolated_nodes_and_no_edges(tmp_path) -> None:
    src, dst = np.array([5, 5, 7]), np.array([7, 7, 5])
    got = _write(tmp_path, "few", 10, (src, dst, np.zeros(3, np.int16), np.ones(3, np.float32)),
                 [0, 3], True, 1)
    ref = CSRGraph.from_edges(src, dst, 10, symmetric=True)
    for part in PARTS:
        np.testing.assert_array_equal(getattr(got, part), getattr(ref, part))
    empty = CSRWriter(str(tmp_path), "none", 4)
    assert empty.finish() == 0
    assert np.load(empty.path("indptr")).tolist() == [0] * 5


def test_streamed_csr_errors(tmp_path) -> None:
    w = CSRWriter(str(tmp_path), "bad", 5)
    w.count(np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"edge 3 \(4 -> 5\) has a node id outside \[0, 5\)"):
        w.count(np.array([2, 4]), np.array([3, 5]))
    w.fill(np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(RuntimeError, match="more edges into a node"):
        w.fill(np.array([0]), np.array([1]))
    short = CSRWriter(str(tmp_path), "short", 5)
    short.count(np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(RuntimeError, match="fewer edges"):
        short.finish()
