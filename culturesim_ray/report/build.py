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
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from culturesim_ray.layout import AllPairsLayout, RunLayout
from culturesim_ray.names import resolver
from culturesim_ray.report import interactive, plots, selection
from culturesim_ray.vectors import as_matrix

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


def read_attributes(path: str | Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not Path(path).exists():
        return {}
    from culturesim_ray import tables

    rows = [{k: v for k, v in r.items() if k != "_source_row"}
            for r in tables.read_corpus_rows(str(path), fields=frozenset({"culture"}))]
    if rows and "culture" not in rows[0]:
        raise ValueError(f"{path}: needs a 'culture' column (has {list(rows[0])})")
    return {str(r["culture"]): r for r in rows if r["culture"] is not None}


def as_run_attributes(attrs: dict[str, dict[str, Any]], cultures: list[str], color_by: str
                      ) -> tuple[dict[str, dict[str, Any]], str]:
    """The attribute rows keyed by the run's culture names (a file's `greek` is the
    run's `Greek` when no other culture folds to it), and the column `color_by` names
    (`Region` for `region`: the exact name first, else one differing in case or
    spacing)."""
    from culturesim_ray.tables import field_name

    meaning = resolver(cultures)
    out = dict(attrs)
    for name, row in attrs.items():
        run_name = meaning(name)
        if run_name is not None and run_name not in attrs:
            out[run_name] = row
    columns = list(dict.fromkeys(k for row in attrs.values() for k in row))
    same = [c for c in columns if field_name(c) == field_name(color_by)]
    return out, color_by if color_by in columns or not same else same[0]


def alpha_line(manifest: Path) -> str:
    """How the run weighted the themes in S_total: the weights it used (the manifest's
    `alpha`) and whether they were given (`--alpha`) or equal by default."""
    m = json.loads(manifest.read_text()) if manifest.exists() else {}
    used, given = m.get("alpha") or {}, m.get("config", {}).get("alpha")
    weights = ", ".join(f"{t} {w:.3g}" for t, w in sorted(used.items())) or "not recorded"
    how = "given with --alpha" if given else "equal: no --alpha given"
    return f"S_total = sum over themes of alpha_t * S_t; alpha ({how}): {weights}"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    # a wide table (the evaluation's 20 columns) scrolls inside the page, not past it
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def select_cultures(layout: AllPairsLayout, k: int, max_cultures: int,
                    cultures: Sequence[str] | None) -> selection.Selection:
    """`selection.choose` over the all-pairs output: the general head's vectors (else
    the first head's) and each culture's general neighbours, read column-wise (no
    row objects for a run of 100,000 cultures)."""
    table = pq.read_table(layout.culture_embeddings, columns=["culture", "head"])
    names = sorted(set(table.column("culture").to_pylist()))
    if not cultures and len(names) <= max_cultures:
        return selection.choose(names, np.zeros((len(names), 1)), {}, max_cultures, None, k)
    heads = set(table.column("head").to_pylist())
    head = "general" if "general" in heads else sorted(heads)[0]
    emb = pq.read_table(layout.culture_embeddings, filters=pc.field("head") == head)
    emb = emb.sort_by("culture")
    x = as_matrix(emb.column("vector"), layout.culture_embeddings)
    near = pq.read_table(layout.pairs, columns=["culture_a", "culture_b", "rank"],
                         filters=(pc.field("theme") == "general") & (pc.field("rank") <= k))
    near = near.sort_by([("culture_a", "ascending"), ("rank", "ascending")])
    neighbours: dict[str, list[str]] = defaultdict(list)
    for a, b in zip(near.column("culture_a").to_pylist(), near.column("culture_b").to_pylist(),
                    strict=True):
        neighbours[a].append(b)
    return selection.choose(emb.column("culture").to_pylist(), x, neighbours, max_cultures,
                            cultures, k)


def _rows(path: str | Path, sel: selection.Selection, keys: list[str]) -> list[dict[str, Any]]:
    """The rows of a Parquet file whose `keys` columns name shown cultures (every row
    when every culture is shown), as dicts."""
    if not sel.partial:
        return pq.read_table(path).to_pylist()
    shown = pa.array(sel.cultures, pa.string())
    where = pc.field(keys[0]).isin(shown)
    for key in keys[1:]:
        where = where & pc.field(key).isin(shown)
    return pq.read_table(path, filters=where).to_pylist()


def build_report(run_dir: str | Path, out: str | Path | None = None, color_by: str = "region",
                 attributes: str | Path | None = None, k: int = 3,
                 map_methods: tuple[str, ...] = ("umap", "tsne"),
                 log: Callable[[str], None] = print, max_cultures: int = 1000,
                 cultures: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the figures and report.html; returns paths and the figures' data.
    Above `max_cultures` cultures, or with `cultures` named, the report shows a
    selection (`report.selection`), said in its introduction."""
    from culturesim_ray import io

    io.require_local(run_dir, "report: run directory", "it reads the all-pairs files there")
    if out is not None:
        io.require_local(out, "report --out", "it writes report.html and its figures there")
    src = find_allpairs(run_dir)
    out = Path(out) if out else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    layout = AllPairsLayout(str(src))
    sel = select_cultures(layout, k, max_cultures, cultures)
    emb = _rows(layout.culture_embeddings, sel, ["culture"])
    attrs, color_col = as_run_attributes(
        read_attributes(attributes or Path(run_dir) / "culture_attributes.csv"),
        sorted({r["culture"] for r in emb}), color_by)
    pairs = _rows(layout.pairs, sel, ["culture_a"])
    heads = sorted({r["head"] for r in emb}, key=lambda h: (h != "general", h))
    themes = sorted({r["theme"] for r in pairs}, key=lambda h: (h not in ("general",), h))
    steps = len(heads) * len(map_methods) + 5
    done = [0]

    def step(what: str) -> None:
        done[0] += 1
        log(f"report [{done[0]}/{steps}] {what}")

    def label(c: str) -> str:
        return attrs.get(c, {}).get(color_col) or "unknown"

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
            unnamed = ("" if plots.labelled(len(names)) else
                       f"; {len(names)} cultures, too many to name here: the interactive "
                       "view names each on hover")
            parts.append(f"<figure>{_img(path)}<figcaption>{method.upper()}, head "
                         f"{html.escape(head)}, coloured by {html.escape(color_by)}"
                         f"{unnamed}</figcaption></figure>")
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
        names, m = plots.dense_matrix(_rows(mpath, sel, ["culture_a", "culture_b"]))
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
    names = sorted({r["culture"] for r in emb})
    edges = plots.strongest_edges(general, k=k, among=set(names))
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
    sections["combined"] = (f"<p>{html.escape(alpha_line(manifest))}</p>" + _table(
                                ["culture", "rank", "neighbour", "S_total"],
                                [[r["culture_a"], r["rank"], r["culture_b"], float(r["score"])]
                                 for r in combined])) if combined else \
        "<p>No combined score in this run (no themes).</p>"

    eval_json = Path(run_dir) / "evaluation" / "evaluation.json"
    if eval_json.exists():  # typed rows: floats print with 3 decimals (`_fmt`)
        erows = json.loads(eval_json.read_text())["rows"]
        cols = [c for c in dict.fromkeys(k for r in erows for k in r) if c != "kind"]
        png = eval_json.with_name("evaluation.png")
        sections["evaluation"] = (_img(png) if png.exists() else "") + _table(
            cols, [[r.get(c, "") for c in cols] for r in erows])

    titles = {"maps": "Maps of cultures (UMAP, t-SNE)",
              "dendrogram": "Similarity matrix, in the dendrogram's order",
              "network": "Network of the strongest similarities",
              "topk": f"Top-{k} neighbours", "combined": "Combined score S_total",
              "evaluation": "Agreement with the gold pairs"}
    step("interactive views")
    views = _views(layout, emb, pairs, heads, attrs, color_by, color_col, k, result, run_dir,
                   sel)
    png = {"maps": "PNG maps (for papers)", "dendrogram": "PNG dendrograms",
           "network": "PNG network"}
    page_sections = {sid: (titles[sid], (f"<details><summary>{png[sid]}</summary>{content}"
                                         "</details>") if sid in png else content)
                     for sid, content in sections.items()}
    page_sections["topk"] = (titles["topk"], "")  # the selected head's table, drawn by the page
    intro = (f"Source: {html.escape(str(src))}; {len(names)} cultures; heads "
             f"{html.escape(', '.join(heads))}; maps coloured by {html.escape(color_by)}."
             + (f" {html.escape(sel.how)}" if sel.partial else ""))
    report = interactive.write_page(out / "report.html", views, intro, page_sections,
                                    default=heads[0])
    result["html"] = str(report)
    result["sections"] = list(sections)
    result["notes"] = [f"report: {sel.how}"] if sel.partial else []
    result["shown"] = sel.cultures
    log(f"report: {report}")
    return result


def _views(layout: AllPairsLayout, emb: list[dict[str, Any]], pairs: list[dict[str, Any]],
           heads: list[str], attrs: dict[str, dict[str, Any]], color_by: str, color_col: str,
           k: int, result: dict[str, Any], run_dir: str | Path, sel: selection.Selection
           ) -> dict[str, dict[str, Any]]:
    """Per head: the map, matrix, network and evaluation figures and the top-k table."""
    names = sorted({r["culture"] for r in emb})
    themes = {r["theme"] for r in pairs}
    eval_rows = _evaluation_rows(Path(run_dir) / "evaluation" / "evaluation.csv")
    general_edges = plots.strongest_edges([r for r in pairs if r["theme"] == "general"], k=k,
                                          among=set(names))
    pos = plots.network_layout(names, general_edges)  # one layout: nodes stay put across heads
    views: dict[str, dict[str, Any]] = {}
    for head in [*heads, *sorted(themes - set(heads))]:
        theme = head if head in themes else "general"
        topk = interactive.topk_by_culture(pairs, theme, k)
        view: dict[str, Any] = {v: None for v in interactive.VIEW_IDS}
        for method in ("umap", "tsne"):
            if (method, head) in result["maps"]:
                mnames, coords = result["maps"][(method, head)]
                view["map"] = interactive.map_figure(
                    mnames, coords, [attrs.get(c, {}).get(color_col) or "unknown"
                                     for c in mnames],
                    interactive.hover_texts(mnames, attrs, topk, head),
                    f"{method.upper()} of cultures, head {head}", color_by)
                break
        mpath = Path(layout.matrices) / f"{head}.parquet"
        if mpath.exists():
            mnames, m = plots.dense_matrix(_rows(mpath, sel, ["culture_a", "culture_b"]))
            if len(mnames) >= 2:
                leaves = plots.leaf_order(plots.similarity_linkage(m), mnames)
                view["matrix"] = interactive.matrix_figure(mnames, m, leaves,
                                                           f"Similarity, head {head}")
        edges = plots.strongest_edges([r for r in pairs if r["theme"] == theme], k=k,
                                      among=set(names))
        view["network"] = interactive.network_figure(
            names, pos, edges, interactive.hover_texts(names, attrs, topk, theme),
            f"Each culture's {k} strongest similarities ({theme})")
        rows = [r for r in eval_rows if r["theme"] == head]
        if rows:
            view["evaluation"] = interactive.evaluation_figure(rows, _eval_k(rows), head)
        view["table"] = interactive.topk_table(pairs, theme, k)
        views[head] = view
    return views


def _evaluation_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r.get("spearman") not in (None, "", "nan")]


def _eval_k(rows: list[dict[str, Any]]) -> int:
    """k of the evaluation's ndcg@k column."""
    return next(int(c.split("@")[1]) for c in rows[0] if c.startswith("ndcg@"))
