"""The interactive report.html: one self-contained, offline page (plotly.js inlined,
no CDN) with a theme selector that switches every view. Pure: no ray.

Views per head (general, each theme, combined):
- map: the culture map (UMAP, else t-SNE) coloured by an attribute; hover names
  the culture, its attributes and its top-k neighbours with scores; zoom and pan
- matrix: the similarity matrix as a heatmap, rows and columns in the
  dendrogram's leaf order (average linkage), so clusters show as blocks
- network: each culture's k strongest similarities as edges
- evaluation: Spearman with its 95% bootstrap interval and nDCG@k per method
- table: the top-k neighbours

Figures are plotly figure dicts built here (testable without a browser); the
page's script only calls Plotly.react with the selected head's figures.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray.report.plots import labelled

VIEW_IDS = ("map", "matrix", "network", "evaluation")


def hover_texts(names: Sequence[str], attrs: dict[str, dict[str, str]],
                topk: dict[str, list[tuple[str, float]]], head: str) -> list[str]:
    """One hover label per culture: its name, attributes and top-k with scores."""
    out = []
    for c in names:
        lines = [f"<b>{html.escape(c)}</b>"]
        lines += [f"{html.escape(k)}: {html.escape(str(v))}"
                  for k, v in attrs.get(c, {}).items() if k != "culture" and v]
        if topk.get(c):
            lines.append(f"top-{len(topk[c])} ({html.escape(head)}):")
            lines += [f"{i}. {html.escape(b)} {s:.3f}" for i, (b, s) in enumerate(topk[c], 1)]
        out.append("<br>".join(lines))
    return out


def topk_by_culture(pairs: Sequence[dict[str, Any]], theme: str,
                    k: int) -> dict[str, list[tuple[str, float]]]:
    rows = sorted((r for r in pairs if r["theme"] == theme and r["rank"] <= k),
                  key=lambda r: (r["culture_a"], r["rank"]))
    out: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        out.setdefault(r["culture_a"], []).append((r["culture_b"], float(r["score"])))
    return out


def map_figure(names: Sequence[str], coords: np.ndarray, groups: Sequence[str],
               hover: Sequence[str], title: str, color_by: str) -> dict[str, Any]:
    """Scatter of the 2-D map, one trace per attribute value (the legend)."""
    named = labelled(len(names))  # above: each point named on hover alone
    traces = []
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        traces.append({
            "type": "scatter", "mode": "markers+text" if named else "markers", "name": g,
            "x": [float(coords[i, 0]) for i in idx], "y": [float(coords[i, 1]) for i in idx],
            "text": [names[i] for i in idx], "textposition": "top center",
            "customdata": [names[i] for i in idx], "hovertext": [hover[i] for i in idx],
            "hovertemplate": "%{hovertext}<extra></extra>",
            "marker": {"size": 11 if named else 6}})
    return {"data": traces, "layout": {
        "title": {"text": title}, "dragmode": "zoom", "hovermode": "closest",
        "legend": {"title": {"text": color_by}}, "height": 520,
        "xaxis": {"zeroline": False}, "yaxis": {"zeroline": False}}}


def matrix_figure(names: Sequence[str], m: np.ndarray, leaves: Sequence[str],
                  title: str) -> dict[str, Any]:
    """Heatmap of the similarity matrix, rows/columns in the dendrogram's order."""
    pos = {c: i for i, c in enumerate(names)}
    order = [pos[c] for c in leaves]
    z = m[np.ix_(order, order)]
    return {"data": [{"type": "heatmap", "z": np.round(z, 4).tolist(), "x": list(leaves),
                      "y": list(leaves), "colorscale": "Viridis",
                      "hovertemplate": "%{y} – %{x}: %{z:.3f}<extra></extra>"}],
            "layout": {"title": {"text": title}, "height": 560,
                       "yaxis": {"autorange": "reversed"}, "xaxis": {"tickangle": -45}}}


def network_figure(names: Sequence[str], pos: dict[str, tuple[float, float]],
                   edges: Sequence[tuple[str, str, float]], hover: Sequence[str],
                   title: str) -> dict[str, Any]:
    """Edges as one line trace (None between segments), nodes as markers."""
    ex: list[float | None] = []
    ey: list[float | None] = []
    for a, b, _ in edges:
        ex += [pos[a][0], pos[b][0], None]
        ey += [pos[a][1], pos[b][1], None]
    return {"data": [
        {"type": "scatter", "mode": "lines", "x": ex, "y": ey, "hoverinfo": "skip",
         "line": {"width": 1, "color": "#999"}, "showlegend": False},
        {"type": "scatter", "mode": "markers+text" if labelled(len(names)) else "markers",
         "x": [pos[c][0] for c in names],
         "y": [pos[c][1] for c in names], "text": list(names), "textposition": "top center",
         "hovertext": list(hover), "hovertemplate": "%{hovertext}<extra></extra>",
         "marker": {"size": 12 if labelled(len(names)) else 6, "color": "#2980b9"},
         "showlegend": False}],
        "layout": {"title": {"text": title}, "height": 520, "hovermode": "closest",
                   "xaxis": {"visible": False}, "yaxis": {"visible": False}}}


def evaluation_figure(rows: Sequence[dict[str, Any]], k: int, theme: str) -> dict[str, Any]:
    """Bars: Spearman with its 95% interval, nDCG@k, per method, best on top; pair-level
    CV rows (interpolation of the gold, `evaluate_view.format_table`) at the bottom."""
    sel = sorted(rows, key=lambda r: (r.get("cv") != "pairs", float(r["spearman"])))
    methods = [r["method"] for r in sel]
    rho = [float(r["spearman"]) for r in sel]
    hi = [max(0.0, float(r["spearman_hi"]) - x) for r, x in zip(sel, rho, strict=True)]
    lo = [max(0.0, x - float(r["spearman_lo"])) for r, x in zip(sel, rho, strict=True)]
    return {"data": [
        {"type": "bar", "orientation": "h", "name": "Spearman (95% interval)", "y": methods,
         "x": rho, "error_x": {"type": "data", "array": hi, "arrayminus": lo, "visible": True}},
        {"type": "bar", "orientation": "h", "name": f"nDCG@{k}", "y": methods,
         "x": [float(r[f"ndcg@{k}"]) for r in sel]}],
        "layout": {"title": {"text": f"Agreement with the gold pairs (theme {theme})"},
                   "barmode": "group", "height": 200 + 28 * len(sel),
                   "margin": {"l": 320}, "xaxis": {"title": {"text": "agreement"}}}}


def topk_table(pairs: Sequence[dict[str, Any]], theme: str, k: int) -> str:
    rows = sorted((r for r in pairs if r["theme"] == theme and r["rank"] <= k),
                  key=lambda r: (r["culture_a"], r["rank"]))
    body = "".join(
        f"<tr><td>{html.escape(r['culture_a'])}</td><td>{r['rank']}</td>"
        f"<td>{html.escape(r['culture_b'])}</td><td>{float(r['score']):.3f}</td>"
        f"<td>{html.escape(str(r.get('similarity', '')))}</td></tr>" for r in rows)
    return ("<table><thead><tr><th>culture</th><th>rank</th><th>neighbour</th><th>score</th>"
            f"<th>similarity</th></tr></thead><tbody>{body}</tbody></table>")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>culturesim report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1.5em auto;color:#222}}
img{{max-width:100%}} table{{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:2px 8px}} figure{{display:inline-block;margin:0 1em 1em 0;
max-width:520px}} #bar{{position:sticky;top:0;background:#fff;padding:.5em 0;z-index:10;
border-bottom:1px solid #ddd}} .note{{color:#666}} .scroll{{overflow-x:auto}}</style>
<script>{plotly_js}</script></head>
<body><h1>culturesim report</h1>
<p>{intro}</p>
<div id="bar"><label for="theme">Theme (head): </label><select id="theme">{options}</select>
<span class="note"> switches the map, the matrix, the network, the evaluation and the
tables; drag to zoom, double-click to reset, hover a culture for its neighbours.</span>
<nav>{nav}</nav></div>
{body}
<script>
const VIEWS = {views};
const IDS = {ids};
function show(theme) {{
  const v = VIEWS[theme];
  for (const id of IDS) {{
    const el = document.getElementById("plot-" + id);
    if (!el) continue;
    if (v[id]) {{ el.style.display = ""; Plotly.react(el, v[id].data, v[id].layout,
                  {{responsive: true, displaylogo: false}}); }}
    else {{ el.style.display = "none"; }}
    const note = document.getElementById("none-" + id);
    if (note) note.style.display = v[id] ? "none" : "";
  }}
  document.getElementById("topk-table").innerHTML = v.table;
  document.body.dataset.theme = theme;
}}
document.getElementById("theme").addEventListener("change", e => show(e.target.value));
show(document.getElementById("theme").value);
</script></body></html>"""


def write_page(path: str | Path, views: dict[str, dict[str, Any]], intro: str,
               sections: dict[str, tuple[str, str]], default: str) -> Path:
    """report.html: `views[head]` = {map, matrix, network, evaluation: figure | None,
    table: html}; `sections[sid]` = (title, extra html: PNGs, notes, static tables).
    The plot divs sit at the top of their sections (ids plot-map, ...)."""
    slots = {"maps": "map", "dendrogram": "matrix", "network": "network",
             "evaluation": "evaluation"}
    body = []
    for sid, (title, extra) in sections.items():
        plot = ""
        if sid in slots:
            vid = slots[sid]
            plot = (f'<div id="plot-{vid}"></div><p id="none-{vid}" class="note" '
                    f'style="display:none">No {vid} for this theme.</p>')
        if sid == "topk":
            plot = '<div id="topk-table"></div>'
        body.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{plot}{extra}</section>')
    heads = list(views)
    options = "".join(f'<option value="{html.escape(h)}"{" selected" if h == default else ""}>'
                      f"{html.escape(h)}</option>" for h in heads)
    nav = " | ".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, (t, _) in sections.items())
    views_json = json.dumps(views, allow_nan=False).replace("</", "<\\/")
    page = PAGE.format(plotly_js=_plotly_js(), intro=intro, options=options, nav=nav,
                       body="\n".join(body), views=views_json, ids=json.dumps(VIEW_IDS))
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
