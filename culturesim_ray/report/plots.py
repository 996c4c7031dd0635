"""The figures of a report (SPEC R1), each split into its data (tested) and
its drawing (matplotlib, Agg). Pure: no ray.

- `embed_2d`: UMAP (cosine) or t-SNE (PCA init) coordinates of culture vectors;
- `similarity_linkage`: average-linkage hierarchical clustering of a
  similarity matrix (distance = max(S) - S, so it works for any similarity);
- `strongest_edges`: the network of each culture's top-k neighbours (or all
  pairs above a threshold), undirected, keeping the larger score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- data
def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates; n must be at least 4 (UMAP and t-SNE need neighbours)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"{method}: need at least 4 cultures for a map, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    metric="cosine").fit_transform(x)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():  # n_jobs is forced to 1 by random_state: expected
            warnings.simplefilter("ignore")
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine",
                                random_state=seed, init="random" if n < 10 else "spectral")
            return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    raise ValueError(f"unknown map method {method!r} (umap or tsne)")


def similarity_linkage(sim: np.ndarray, method: str = "average") -> np.ndarray:
    """scipy linkage matrix of a symmetric similarity matrix (n, n)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or len(s) < 2:
        raise ValueError(f"similarity matrix must be square with n >= 2, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("similarity matrix holds NaN or inf")
    s = (s + s.T) / 2
    dist = s.max() - s
    np.fill_diagonal(dist, 0.0)
    return linkage(squareform(dist, checks=False), method=method)


def strongest_edges(pairs: Sequence[dict[str, Any]], k: int | None = 3,
                    threshold: float | None = None, among: set[str] | None = None
                    ) -> list[tuple[str, str, float]]:
    """Undirected edges (a < b, score) from pairs rows (culture_a, culture_b, score, rank):
    rank <= k, and/or score >= threshold; with `among`, only edges between those."""
    best: dict[tuple[str, str], float] = {}
    for r in pairs:
        if k is not None and r["rank"] > k:
            continue
        if among is not None and not (r["culture_a"] in among and r["culture_b"] in among):
            continue
        if threshold is not None and r["score"] < threshold:
            continue
        key = tuple(sorted((r["culture_a"], r["culture_b"])))
        best[key] = max(best.get(key, -np.inf), float(r["score"]))  # type: ignore[index]
    return sorted(((a, b, s) for (a, b), s in best.items()), key=lambda e: (-e[2], e[0], e[1]))


def dense_matrix(rows: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """matrices/<head>.parquet rows (culture_a, culture_b, score) -> (names, (n, n))."""
    names = sorted({r["culture_a"] for r in rows} | {r["culture_b"] for r in rows})
    pos = {c: i for i, c in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    for r in rows:
        m[pos[r["culture_a"]], pos[r["culture_b"]]] = r["score"]
    if np.isnan(m).any():
        i, j = map(int, np.argwhere(np.isnan(m))[0])
        raise ValueError(f"dense matrix is missing ({names[i]}, {names[j]})")
    return names, m


# ---------------------------------------------------------------- drawing
# Each point of a map or network is named beside it up to this many cultures; above,
# names would cover each other and the points: the interactive page names a point
# on hover, the dendrogram drops its leaf names and keeps a readable height.
LABELS_UP_TO = 150


def labelled(n: int) -> bool:
    """Whether a figure of n cultures names each one beside its point."""
    return n <= LABELS_UP_TO


def _colours(labels: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    plt = _plt()
    cats = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
    table = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    return [table[lab] for lab in labels], table


def draw_map(coords: np.ndarray, names: Sequence[str], labels: Sequence[str], title: str,
             color_by: str, path: str | Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colours, table = _colours(labels)
    named = labelled(len(names))
    ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=60 if named else 12,
               edgecolors="black", linewidths=0.5 if named else 0.2)
    for (x, y), name in zip(coords, names, strict=True) if named else ():
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for lab, col in table.items():
        ax.scatter([], [], c=[col], label=lab, s=40)
    ax.legend(title=color_by, fontsize=7, title_fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def draw_dendrogram(link: np.ndarray, names: Sequence[str], title: str,
                    path: str | Path) -> tuple[Path, list[str]]:
    """The dendrogram; also returns the leaf order (left to right). Above
    LABELS_UP_TO cultures its leaves are not named (the interactive matrix names them)."""
    from scipy.cluster.hierarchy import dendrogram

    plt = _plt()
    named = labelled(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.3 * min(len(names), LABELS_UP_TO) + 1.5))
    d = dendrogram(link, labels=list(names), orientation="left", ax=ax, leaf_font_size=8,
                   no_labels=not named)
    ax.set_title(title + ("" if named else f" ({len(names)} cultures, unnamed)"),
                 fontsize=10)
    ax.set_xlabel("distance (max similarity - similarity)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path), list(d["ivl"])


def draw_network(edges: Sequence[tuple[str, str, float]], names: Sequence[str],
                 labels: Sequence[str], title: str, path: str | Path, seed: int = 0) -> Path:
    import networkx as nx

    plt = _plt()
    g = nx.Graph()
    g.add_nodes_from(names)
    for a, b, s in edges:
        g.add_edge(a, b, weight=s)
    pos = nx.spring_layout(g, seed=seed, weight="weight")
    fig, ax = plt.subplots(figsize=(7, 6))
    ws = np.array([d["weight"] for _, _, d in g.edges(data=True)] or [1.0])
    lo, hi = ws.min(), ws.max()
    widths = 0.5 + 3.5 * (ws - lo) / ((hi - lo) or 1.0)
    nx.draw_networkx_edges(g, pos, ax=ax, width=list(widths), alpha=0.6)
    colours, table = _colours(labels)
    named = labelled(len(names))
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=250 if named else 20,
                           edgecolors="black", linewidths=0.5 if named else 0.2)
    if named:
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=8)
    for lab, col in table.items():
        ax.scatter([], [], c=[col], label=lab, s=40)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def leaf_order(link: np.ndarray, names: Sequence[str]) -> list[str]:
    """The dendrogram's leaves (average linkage of `similarity_linkage`), top to bottom."""
    from scipy.cluster.hierarchy import leaves_list

    return [names[i] for i in leaves_list(link)]


def network_layout(names: Sequence[str], edges: Sequence[tuple[str, str, float]],
                   seed: int = 0) -> dict[str, tuple[float, float]]:
    """Spring layout of the strongest-similarity graph: culture -> (x, y)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(names)
    for a, b, s in edges:
        g.add_edge(a, b, weight=s)
    pos = nx.spring_layout(g, seed=seed, weight="weight")
    return {c: (float(pos[c][0]), float(pos[c][1])) for c in names}
