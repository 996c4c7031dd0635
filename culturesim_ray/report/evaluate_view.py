"""How an evaluation is shown: the bar chart (Spearman with its interval, nDCG)
and the text table. Pure: matplotlib / numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from culturesim_ray.ops.pooling import GENERAL


def plot_evaluation(rows: Sequence[dict[str, Any]], path: str | Path, k: int,
                    theme: str = GENERAL) -> Path:
    """Horizontal bars: Spearman (with its 95% bootstrap interval as error bars)
    and nDCG@k per method for one theme, best on top; pair-level CV rows (the gold
    of a scored pair's own cultures fitted them: interpolation) at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    sel = sorted((r for r in rows if r["theme"] == theme),
                 key=lambda r: (r["cv"] != "pairs", r["spearman"]))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(sel) + 1.5))
    y = np.arange(len(sel))
    colors = {"model": "#c0392b", "baseline": "#7f8c8d", "similarity": "#2980b9", "set": "#27ae60",
              "readout": "#8e44ad"}
    rho = np.array([r["spearman"] for r in sel])
    err = np.array([[max(0.0, r["spearman"] - r["spearman_lo"]) for r in sel],
                    [max(0.0, r["spearman_hi"] - r["spearman"]) for r in sel]]).reshape(2, -1)
    ax.barh(y - 0.2, rho, height=0.4, color=[colors[r["kind"]] for r in sel],
            xerr=err, error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.barh(y + 0.2, [r[f"ndcg@{k}"] for r in sel], height=0.4, color="#f1c40f")
    ax.set_yticks(y, [r["method"] for r in sel], fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    n_pairs = sum(r["cv"] == "pairs" for r in sel)  # at the bottom (sorted first)
    if 0 < n_pairs < len(sel):
        ax.axhline(n_pairs - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("agreement with the gold pairs\n(Spearman: 95% bootstrap interval over "
                  "cultures)", fontsize=9)
    ax.set_title(f"Which similarity agrees best with the experts?\n(theme: {theme})",
                 fontsize=10)
    handles = [Patch(color=colors[kind], label=f"Spearman ({kind})")
               for kind in ("model", "baseline", "similarity", "set", "readout")
               if any(r["kind"] == kind for r in sel)]
    handles.append(Patch(color="#f1c40f", label=f"nDCG@{k}"))
    if 0 < n_pairs < len(sel):
        handles.append(Line2D([], [], color="grey", lw=0.8, ls="--",
                              label="below: pair-level CV, fitted on\nthe pairs it scores "
                              "(interpolation)"))
    # outside the axes: inside, it hid the bottom rows' bars
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long method names and the legend whole
    plt.close(fig)
    return path


def format_table(rows: Sequence[dict[str, Any]], k: int) -> str:
    """Fixed-width table, per theme best Spearman first: Spearman [95% interval],
    Kendall, Mantel p, recall@k, nDCG@k, the CV label of fitted methods and, when
    the rows were compared with a reference method, the Spearman difference to it
    with its paired 95% interval (named below the table). Pair-level CV rows come
    last in their theme: the gold of a scored pair's own cultures fitted them, so
    they interpolate the gold and are not a method's figure (leave-cultures-out is)."""
    vs = next((r["vs"] for r in rows if "vs" in r), None)
    w = max([50, *(len(r["method"]) + 1 for r in rows)])
    head = (f"{'method':<{w}}{'cv':<10}{'theme':<12}{'pairs':>6}  {'spearman [95% CI]':<22}"
            f"{'kendall':>8}{'mantel p':>10}{f'recall@{k}':>10}{f'ndcg@{k}':>9}"
            + (f"  {'- reference [95% CI]':<24}" if vs else ""))
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["theme"], r["cv"] == "pairs", -r["spearman"])):
        ci = f"{r['spearman']:.3f} [{r['spearman_lo']:.2f}, {r['spearman_hi']:.2f}]"
        flag = "*" if r.get("degenerate") else ""
        delta = (f"  {r['delta_spearman']:+.3f} [{r['delta_lo']:+.2f}, {r['delta_hi']:+.2f}]"
                 if "delta_spearman" in r else "")
        lines.append(f"{r['method']:<{w - 1}} {r['cv']:<10}{r['theme']:<12}{r['pairs']:>6}  "
                     f"{ci + flag:<22}{r['kendall']:>8.3f}{r['mantel_p']:>10.3f}"
                     f"{r[f'recall@{k}']:>10.3f}{r[f'ndcg@{k}']:>9.3f}{delta}")
    if vs:
        lines.append(f"reference: {vs} (the difference's interval is paired: the same "
                     "culture resamples score both)")
    if any(r["cv"] == "pairs" for r in rows):
        lines.append("cv: fitted on this gold (not a read-out without it): cv cultures is "
                     "the figure (cultures the fit never saw); cv pairs, listed last, is "
                     "pair-level CV (a held-out pair's own cultures trained it: interpolation)")
    if any(r.get("degenerate") for r in rows):
        lines.append("* degenerate: a constant side, correlations set to 0")
    return "\n".join(lines)
