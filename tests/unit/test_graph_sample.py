"""CSR graph building and k-hop neighbour sampling, checked against pure-Python references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from culturesim_ray.graph import sample
from culturesim_ray.graph.sample import CSRGraph, sample_neighbourhood, to_global_edges


def _random_edges(rng: np.random.Generator, n: int, e: int, n_rel: int = 3):
    """Random edges with many duplicates and self loops, nonzero weights and relations."""
    src = rng.integers(0, n, e)
    dst = rng.integers(0, n, e)
    w = rng.uniform(0.1, 2.0, e).astype(np.float32)
    rel = rng.integers(1, n_rel + 1, e).astype(np.int16)
    return src, dst, w, rel


def _reference_csr(src, dst, w, rel, symmetric: bool) -> dict:
    """(src, dst, rel) -> max weight, self loops dropped, built edge by edge."""
    ref: dict = {}
    pairs = list(zip(src.tolist(), dst.tolist(), w.tolist(), rel.tolist(), strict=True))
    if symmetric:
        pairs += [(d, s, x, r) for s, d, x, r in pairs]
    for s, d, x, r in pairs:
        if s != d:
            ref[(s, d, r)] = max(ref.get((s, d, r), -np.inf), x)
    return ref


def _csr_triples(csr: CSRGraph) -> dict:
    out = {}
    for i in range(csr.num_nodes):
        for p in range(csr.indptr[i], csr.indptr[i + 1]):
            key = (int(csr.indices[p]), i, int(csr.relations[p]))
            assert key not in out, f"duplicate edge {key}"
            out[key] = float(csr.weights[p])
    return out


def _edge_dst(csr: CSRGraph, eids: np.ndarray) -> np.ndarray:
    return np.searchsorted(csr.indptr, eids, side="right") - 1


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_edges_matches_python_reference(seed, symmetric):
    rng = np.random.default_rng(seed)
    n = 15
    src, dst, w, rel = _random_edges(rng, n, 400)
    csr = CSRGraph.from_edges(src, dst, n, weights=w, relations=rel, symmetric=symmetric)
    ref = _reference_csr(src, dst, w, rel, symmetric)
    got = _csr_triples(csr)
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        assert got[k] == pytest.approx(v)
    assert csr.indptr.dtype == np.int64 and csr.indices.dtype == np.int64
    assert csr.weights.dtype == np.float32 and csr.relations.dtype == np.int16
    assert csr.num_nodes == n and csr.num_edges == len(ref)
    in_deg = Counter(d for _, d, _ in ref)
    assert csr.degree().tolist() == [in_deg[i] for i in range(n)]
    # rows are sorted by (source, relation)
    for i in range(n):
        row = list(zip(csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist(),
                       csr.relations[csr.indptr[i]:csr.indptr[i + 1]].tolist(), strict=True))
        assert row == sorted(row)


def test_from_edges_unpacked_sort_path_gives_the_same_graph(monkeypatch):
    rng = np.random.default_rng(3)
    src, dst, w, rel = _random_edges(rng, 20, 500, n_rel=4)
    packed = CSRGraph.from_edges(src, dst, 20, weights=w, relations=rel, symmetric=True)
    monkeypatch.setattr(sample, "_PACK_LIMIT", 0)
    lex = CSRGraph.from_edges(src, dst, 20, weights=w, relations=rel, symmetric=True)
    for name in ("indptr", "indices", "weights", "relations"):
        np.testing.assert_array_equal(getattr(packed, name), getattr(lex, name))


def test_from_edges_defaults_and_extreme_relation_codes():
    src = np.array([0, 1, 2, 2, 3])
    dst = np.array([1, 2, 0, 0, 3])  # a duplicate and a self loop
    csr = CSRGraph.from_edges(src, dst, 5)
    assert _csr_triples(csr) == {(0, 1, 0): 1.0, (1, 2, 0): 1.0, (2, 0, 0): 1.0}
    assert csr.degree().tolist() == [1, 1, 1, 0, 0]
    rel = np.array([-32768, 32767, 5, -7, 1])
    csr = CSRGraph.from_edges(src, dst, 5, relations=rel)
    assert sorted(_csr_triples(csr)) == [(0, 1, -32768), (1, 2, 32767), (2, 0, -7), (2, 0, 5)]


def test_from_edges_without_edges_or_with_only_self_loops():
    csr = CSRGraph.from_edges(np.array([], np.int64), np.array([], np.int64), 4)
    assert csr.num_edges == 0 and csr.degree().tolist() == [0, 0, 0, 0]
    csr = CSRGraph.from_edges(np.array([2, 3]), np.array([2, 3]), 4, symmetric=True)
    assert csr.num_edges == 0 and csr.indptr.tolist() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize("src, dst, message", [
    ([0, 1, 7, 9], [1, 2, 0, 0], "edge 2 (7 -> 0)"),
    ([0, 1, 2], [1, -1, 0], "edge 1 (1 -> -1)"),
    ([5], [0], "edge 0 (5 -> 0)"),
])
def test_from_edges_names_the_first_bad_edge(src, dst, message):
    with pytest.raises(ValueError, match=r"outside \[0, 5\)") as exc:
        CSRGraph.from_edges(np.array(src), np.array(dst), 5)
    assert message in str(exc.value)


def test_from_edges_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal length"):
        CSRGraph.from_edges(np.array([0, 1]), np.array([1]), 3)
    with pytest.raises(ValueError, match="weights"):
        CSRGraph.from_edges(np.array([0, 1]), np.array([1, 2]), 3, weights=np.ones(3))
    with pytest.raises(ValueError, match="int16"):
        CSRGraph.from_edges(np.array([0]), np.array([1]), 3, relations=np.array([40000]))
    with pytest.raises(ValueError, match="finite"):
        CSRGraph.from_edges(np.array([0, 1]), np.array([1, 2]), 3,
                            weights=np.array([0.5, np.nan]))


def _bfs_reference(src, dst, n: int, seeds: list[int], hops: int):
    """Exact k-hop incoming neighbourhood: nodes in first-seen order, edges as triples."""
    ref = _reference_csr(src, dst, np.ones(len(src), np.float32),
                         np.zeros(len(src), np.int16), symmetric=False)
    incoming: dict[int, list[int]] = {i: [] for i in range(n)}
    for s, d, _ in sorted(ref):
        incoming[d].append(s)
    nodes = list(dict.fromkeys(seeds))
    seen, frontier, edges = set(nodes), list(nodes), set()
    for _ in range(hops):
        nxt = []
        for d in frontier:
            for s in sorted(incoming[d]):
                edges.add((s, d))
                if s not in seen:
                    seen.add(s)
                    nxt.append(s)
        nodes += nxt
        frontier = nxt
    return nodes, edges


@pytest.mark.parametrize("hops", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_full_fanout_is_the_exact_k_hop_neighbourhood(seed, hops):
    rng = np.random.default_rng(seed)
    n = 60
    src, dst, _, _ = _random_edges(rng, n, 150)
    csr = CSRGraph.from_edges(src, dst, n)
    seeds = rng.integers(0, n, 5)
    seeds = np.concatenate([seeds, seeds[:2]])  # duplicates are deduplicated
    sub = sample_neighbourhood(csr, seeds, [-1] * hops, np.random.default_rng(9))
    nodes, edges = _bfs_reference(src, dst, n, seeds.tolist(), hops)
    assert sub.nodes.tolist() == nodes
    assert sub.num_seeds == len(dict.fromkeys(seeds.tolist()))
    g = to_global_edges(sub)
    assert g.shape == (2, len(edges)) and g.dtype == np.int64
    assert set(zip(g[0].tolist(), g[1].tolist(), strict=True)) == edges
    assert len(set(sub.edge_ids.tolist())) == len(edges)
    np.testing.assert_array_equal(g[0], csr.indices[sub.edge_ids])
    np.testing.assert_array_equal(g[1], _edge_dst(csr, sub.edge_ids))


def test_full_fanout_keeps_every_relation_between_a_pair():
    src, dst = np.array([1, 1, 2]), np.array([0, 0, 1])
    csr = CSRGraph.from_edges(src, dst, 3, weights=np.array([0.5, 0.7, 0.9]),
                              relations=np.array([2, 3, 2]))
    sub = sample_neighbourhood(csr, np.array([0]), [-1, -1], np.random.default_rng(0))
    assert sub.nodes.tolist() == [0, 1, 2]
    assert sorted(csr.relations[sub.edge_ids].tolist()) == [2, 2, 3]
    assert sorted(csr.weights[sub.edge_ids].tolist()) == pytest.approx([0.5, 0.7, 0.9])


@pytest.mark.parametrize("fanouts", [[2], [3, 2], [1, 4, 2], [0, 3]])
def test_small_fanout_bounds_in_degree_and_keeps_real_edges(fanouts):
    rng = np.random.default_rng(len(fanouts))
    n = 200
    src, dst, _, _ = _random_edges(rng, n, 2000)
    csr = CSRGraph.from_edges(src, dst, n, symmetric=True)
    graph_edges = set(_csr_triples(csr))
    seeds = rng.integers(0, n, 8)
    sub = sample_neighbourhood(csr, seeds, fanouts, np.random.default_rng(5))
    g = to_global_edges(sub)
    assert len(set(sub.edge_ids.tolist())) == sub.edge_ids.shape[0]  # no edge twice
    assert len(set(sub.nodes.tolist())) == sub.nodes.shape[0]  # no node twice
    for s, d, e in zip(g[0].tolist(), g[1].tolist(), sub.edge_ids.tolist(), strict=True):
        assert (s, d, int(csr.relations[e])) in graph_edges
    # hop of each node: seeds 0, then nodes are discovered hop by hop as edge sources
    hop = dict.fromkeys(sub.nodes[:sub.num_seeds].tolist(), 0)
    deg = csr.degree()
    sampled_in = Counter(g[1].tolist())
    for h, fanout in enumerate(fanouts):
        frontier = [v for v, k in hop.items() if k == h]
        for v in frontier:
            assert sampled_in[v] == min(deg[v], fanout)
        for s, d in zip(g[0].tolist(), g[1].tolist(), strict=True):
            if hop.get(d) == h and s not in hop:
                hop[s] = h + 1
    assert list(hop) == sub.nodes.tolist()  # every node reached, listed in first-seen order
    assert all(hop[d] < len(fanouts) for d in sampled_in)  # last hop's nodes not expanded


def test_sampling_is_uniform_without_replacement():
    # node 0 has 10 in-neighbours (fanout 3 -> each ~30%); node 11 has 2 (always both)
    src = np.concatenate([np.arange(1, 11), [12, 13]])
    dst = np.concatenate([np.zeros(10, np.int64), [11, 11]])
    csr = CSRGraph.from_edges(src, dst, 14)
    rng = np.random.default_rng(1234)
    draws, counts = 20_000, Counter()
    for _ in range(draws):
        sub = sample_neighbourhood(csr, np.array([0, 11]), [3], rng)
        g = to_global_edges(sub)
        picked = g[0][g[1] == 0].tolist()
        assert len(picked) == len(set(picked)) == 3
        assert sorted(g[0][g[1] == 11].tolist()) == [12, 13]
        counts.update(picked)
    freq = np.array([counts[i] for i in range(1, 11)]) / draws
    np.testing.assert_allclose(freq, 0.3, atol=0.02)  # std ~0.0032: 6 sigma
    expected = draws * 0.3
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(1, 11))
    assert chi2 < 40  # 9 degrees of freedom; p < 1e-5


def test_fixed_seed_is_deterministic():
    rng = np.random.default_rng(7)
    src, dst, _, _ = _random_edges(rng, 300, 4000)
    csr = CSRGraph.from_edges(src, dst, 300)
    seeds = np.array([3, 50, 121, 7])
    a = sample_neighbourhood(csr, seeds, [4, 3], np.random.default_rng(42))
    b = sample_neighbourhood(csr, seeds, [4, 3], np.random.default_rng(42))
    c = sample_neighbourhood(csr, seeds, [4, 3], np.random.default_rng(43))
    np.testing.assert_array_equal(a.nodes, b.nodes)
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    np.testing.assert_array_equal(a.edge_ids, b.edge_ids)
    assert set(a.edge_ids.tolist()) != set(c.edge_ids.tolist())


def test_node_reached_at_several_hops_is_listed_once():
    # cycle 0 <- 1 <- 2 <- 0 plus 3 -> 0 and 3 -> 1: node 3 is reached at hops 1 and 2
    src, dst = np.array([1, 2, 0, 3, 3]), np.array([0, 1, 2, 0, 1])
    csr = CSRGraph.from_edges(src, dst, 4)
    sub = sample_neighbourhood(csr, np.array([0]), [-1, -1, -1], np.random.default_rng(0))
    assert sub.nodes.tolist() == [0, 1, 3, 2]
    g = to_global_edges(sub)
    assert sorted(zip(g[0].tolist(), g[1].tolist(), strict=True)) == \
        [(0, 2), (1, 0), (2, 1), (3, 0), (3, 1)]


def test_empty_seeds_zero_hops_and_bad_input():
    csr = CSRGraph.from_edges(np.array([1, 2]), np.array([0, 1]), 3)
    rng = np.random.default_rng(0)
    sub = sample_neighbourhood(csr, np.array([], np.int64), [2, 2], rng)
    assert sub.nodes.shape == (0,) and sub.num_seeds == 0
    assert sub.edge_index.shape == (2, 0) and sub.edge_ids.shape == (0,)
    assert to_global_edges(sub).shape == (2, 0)
    sub = sample_neighbourhood(csr, np.array([2, 0, 2]), [], rng)
    assert sub.nodes.tolist() == [2, 0] and sub.num_seeds == 2 and sub.edge_ids.shape == (0,)
    with pytest.raises(ValueError, match=r"seed 1 \(3\)"):
        sample_neighbourhood(csr, np.array([0, 3]), [2], rng)
    with pytest.raises(ValueError, match="fanouts"):
        sample_neighbourhood(csr, np.array([0]), [2, -2], rng)
