"""`culturesim report RUN_DIR`: PNG figures and one self-contained HTML page from
a run's all-pairs output. Pure: no ray.

Input: an all-pairs output directory (culture_embeddings.parquet, pairs.parquet,
matrices/), or a run directory holding one (`allpairs-model/`, the trained
model's heads, is preferred over `allpairs/`, the raw embeddings). Culture
attributes for colouring come from `--attributes CSV` (culture + any columns,
e.g. region, period) or RUN/culture_attributes.csv (the demo writes it).

Output (default RUN/report/): maps_<method>_<head>.png (UMAP and t-SNE per
head), dendrogram_<head>.png (general and combined), network.png, and
report.html with every figure inlined, the per-theme top-k tables and the
combined S_total, plus the evaluation table when RUN/evaluation exists.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from culturesim_ray.layout import AllPairsLayout, RunLayout
from culturesim_ray.report import plots

SECTIONS = ["maps", "dendrogram", "network", "topk", "combined"]


def find_allpairs(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    layouts = (AllPairsLayout(str(run)), RunLayout(str(run)).allpairs_model,
               RunLayout(str(run)).allpairs)
    for cand in layouts:
        if Path(cand.pairs).exists() and Path(cand.culture_embeddings).exists():
            return Path(cand.root)
    raise FileNotFoundError(f"{run}: no all-pairs output (pairs.parquet and "
                            f"culture_embeddings.parquet) here or in allpairs-model/, allpairs/")


def read_attributes(path: str | Path | None) -> dict[str, dict[str, str]]:
    if path is None or not Path(path).exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "culture" not in rows[0]:
        raise ValueError(f"{path}: needs a 'culture' column (has {list(rows[0])})")
    return {r["culture"]: r for r in rows}


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def build_report(run_dir: str | Path, out: str | Path | None = None, color_by: str = "region",
                 attributes: str | Path | None = None, k: int = 3,
                 map_methods: tuple[str, ...] = ("umap", "tsne"),
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the figures and report.html; returns paths and the figures' data."""
    src = find_allpairs(run_dir)
    out = Path(out) if out else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    attrs = read_attributes(attributes or Path(run_dir) / "culture_attributes.csv")
    layout = AllPairsLayout(str(src))
    emb = pq.read_table(layout.culture_embeddings).to_pylist()
    pairs = pq.read_table(layout.pairs).to_pylist()
    heads = sorted({r["head"] for r in emb}, key=lambda h: (h != "general", h))
    themes = sorted({r["theme"] for r in pairs}, key=lambda h: (h not in ("general",), h))
    steps = len(heads) * len(map_methods) + 4
    done = [0]

    def step(what: str) -> None:
        done[0] += 1
        log(f"report [{done[0]}/{steps}] {what}")

    def label(c: str) -> str:
        return attrs.get(c, {}).get(color_by) or "unknown"

    result: dict[str, Any] = {"source": str(src), "figures": {}, "maps": {}, "dendrograms": {}}
    sections: dict[str, str] = {}

    # maps
    parts = []
    for head in heads:
        rows = sorted((r for r in emb if r["head"] == head), key=lambda r: r["culture"])
        names = [r["culture"] for r in rows]
        x = np.array([r["vector"] for r in rows], dtype=np.float64)
        for method in map_methods:
            step(f"{method} map of {head} ({len(names)} cultures)")
            if len(names) < 4:
                parts.append(f"<p>{method} / {html.escape(head)}: fewer than 4 cultures, "
                             "no map.</p>")
                continue
            coords = plots.embed_2d(x, method)
            path = plots.draw_map(coords, names, [label(c) for c in names],
                                  f"{method.upper()} of cultures, head {head}", color_by,
                                  out / f"maps_{method}_{head}.png")
            result["maps"][(method, head)] = (names, coords)
            result["figures"][f"maps_{method}_{head}"] = str(path)
            parts.append(f"<figure>{_img(path)}<figcaption>{method.upper()}, head "
                         f"{html.escape(head)}, coloured by {html.escape(color_by)}"
                         f"</figcaption></figure>")
    all_names = sorted({r["culture"] for r in emb})
    parts.append(f"<h3>{html.escape(color_by)} of each culture</h3>" + _table(
        ["culture", color_by], [[c, label(c)] for c in all_names]))
    sections["maps"] = "".join(parts)

    # dendrograms from the dense matrices
    step("dendrograms")
    parts = []
    for head in ("general", "combined"):
        mpath = Path(layout.matrices) / f"{head}.parquet"
        if not mpath.exists():
            continue
        names, m = plots.dense_matrix(pq.read_table(mpath).to_pylist())
        link = plots.similarity_linkage(m)
        path, leaves = plots.draw_dendrogram(link, names, f"Hierarchical clustering ({head})",
                                             out / f"dendrogram_{head}.png")
        result["dendrograms"][head] = {"names": names, "linkage": link, "leaves": leaves}
        result["figures"][f"dendrogram_{head}"] = str(path)
        parts.append(f"<figure>{_img(path)}<figcaption>average linkage, head "
                     f"{html.escape(head)}</figcaption></figure>")
    sections["dendrogram"] = "".join(parts) or "<p>No dense matrices (N above the " \
                                               "all-pairs dense_limit).</p>"

    # network of the strongest general similarities
    step("network")
    general = [r for r in pairs if r["theme"] == "general"]
    edges = plots.strongest_edges(general, k=k)
    names = sorted({r["culture"] for r in emb})
    path = plots.draw_network(edges, names, [label(c) for c in names],
                              f"Each culture's {k} strongest similarities (general)",
                              out / "network.png")
    result["network"] = edges
    result["figures"]["network"] = str(path)
    sections["network"] = f"<figure>{_img(path)}</figure>" + _table(
        ["culture", "culture", "score"], [list(e) for e in edges])

    # top-k tables per theme and the combined S_total
    step("tables")
    parts = []
    for theme in themes:
        if theme == "combined":
            continue
        rows = sorted((r for r in pairs if r["theme"] == theme and r["rank"] <= k),
                      key=lambda r: (r["culture_a"], r["rank"]))
        parts.append(f"<h3>{html.escape(theme)}</h3>" + _table(
            ["culture", "rank", "neighbour", "score", "similarity"],
            [[r["culture_a"], r["rank"], r["culture_b"], float(r["score"]), r["similarity"]]
             for r in rows]))
    sections["topk"] = "".join(parts)
    combined = sorted((r for r in pairs if r["theme"] == "combined" and r["rank"] <= k),
                      key=lambda r: (r["culture_a"], r["rank"]))
    manifest = Path(layout.manifest)
    alpha = json.loads(manifest.read_text()).get("config", {}).get("alpha") \
        if manifest.exists() else None
    sections["combined"] = (f"<p>S_total = sum over themes of alpha_t * S_t; alpha: "
                            f"{html.escape(json.dumps(alpha))}</p>" + _table(
                                ["culture", "rank", "neighbour", "S_total"],
                                [[r["culture_a"], r["rank"], r["culture_b"], float(r["score"])]
                                 for r in combined])) if combined else \
        "<p>No combined score in this run (no themes).</p>"

    eval_csv = Path(run_dir) / "evaluation" / "evaluation.csv"
    if eval_csv.exists():
        with eval_csv.open(newline="", encoding="utf-8") as fh:
            erows = list(csv.DictReader(fh))
        cols = [c for c in erows[0] if c not in ("kind",)] if erows else []
        png = eval_csv.with_name("evaluation.png")
        sections["evaluation"] = (_img(png) if png.exists() else "") + _table(
            cols, [[r[c] for c in cols] for r in erows])

    titles = {"maps": "Maps of cultures (UMAP, t-SNE)", "dendrogram": "Dendrogram",
              "network": "Network of the strongest similarities",
              "topk": f"Top-{k} neighbours per theme", "combined": "Combined score S_total",
              "evaluation": "Agreement with the gold pairs"}
    body = "".join(f'<section id="{sid}"><h2>{titles[sid]}</h2>{content}</section>'
                   for sid, content in sections.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>culturesim report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
img{{max-width:100%}} table{{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:2px 8px}} figure{{display:inline-block;margin:0 1em 1em 0;
max-width:520px}}</style></head>
<body><h1>culturesim report</h1>
<p>Source: {html.escape(str(src))}; {len(names)} cultures; heads {html.escape(', '.join(heads))};
maps coloured by {html.escape(color_by)}.</p>
<nav>{' | '.join(f'<a href="#{s}">{titles[s]}</a>' for s in sections)}</nav>
{body}</body></html>"""
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    result["html"] = str(report)
    result["sections"] = list(sections)
    log(f"report: {report}")
    return result
