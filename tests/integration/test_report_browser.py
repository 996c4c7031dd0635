"""report.html in a real headless Chromium (Debian's `chromium`, driven over the
DevTools protocol): the page loads with no console error, the theme selector
changes what the map and the heatmap plot, and hovering a point shows a label
naming its culture. Skipped with an install hint where Chromium is absent,
except under CI (CI=true), where .ci/run installs it and its absence fails."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import INSTALL_HINT, Browser, chromium_path, in_ci

from culturesim_ray.report.build import build_report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CULTURES = ["Chinese", "Japanese", "Korean", "French", "Spanish", "Italian", "German",
            "Russian", "Persian", "Turkish"]


def _allpairs_dir(tmp_path):
    """An all-pairs output as the job writes it, each head with its own vectors."""
    rng = np.random.default_rng(0)
    emb, pairs, d = [], [], tmp_path / "allpairs"
    (d / "matrices").mkdir(parents=True)
    for head in ("general", "arts", "combined"):
        v = rng.normal(size=(len(CULTURES), 16))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        s = v @ v.T
        emb += [{"culture": c, "head": head, "vector": v[i].tolist()}
                for i, c in enumerate(CULTURES)]
        for i, a in enumerate(CULTURES):
            order = [j for j in np.argsort(-s[i]) if j != i]
            pairs += [{"theme": head, "culture_a": a, "culture_b": CULTURES[j],
                       "score": float(s[i, j]), "rank": r + 1, "similarity": "cosine"}
                      for r, j in enumerate(order[:5])]
        pq.write_table(pa.Table.from_pylist(
            [{"culture_a": a, "culture_b": b, "score": float(s[i, j])}
             for i, a in enumerate(CULTURES) for j, b in enumerate(CULTURES)]),
            d / "matrices" / f"{head}.parquet")
    pq.write_table(pa.Table.from_pylist(emb), d / "culture_embeddings.parquet")
    pq.write_table(pa.Table.from_pylist(pairs), d / "pairs.parquet")
    (tmp_path / "culture_attributes.csv").write_text(
        "culture,region\n" + "".join(f"{c},{'Asia' if i < 3 or i > 7 else 'Europe'}\n"
                                     for i, c in enumerate(CULTURES)))
    return tmp_path


@pytest.fixture(scope="module")
def browser():
    binary = chromium_path()
    if binary is None:
        if in_ci():
            pytest.fail(f"no Chromium under CI: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    b = Browser(binary)
    yield b
    b.close()


def _plotted(b: Browser, div: str, key: str) -> str:
    return b.evaluate(f"JSON.stringify(document.getElementById('{div}').data"
                      f".map(t => t.{key}))")


def test_report_in_chromium(tmp_path, browser):
    run = _allpairs_dir(tmp_path)
    res = build_report(run, map_methods=("umap",), k=3, log=lambda *_: None)
    browser.open(res["html"])
    assert browser.evaluate("typeof Plotly") == "object"  # the inlined library ran
    assert browser.evaluate("document.body.dataset.theme") == "general"
    map_before = _plotted(browser, "plot-map", "x")
    heat_before = _plotted(browser, "plot-matrix", "z")
    assert json.loads(map_before) and json.loads(heat_before)

    # the theme selector switches the plotted data
    browser.evaluate("const s = document.getElementById('theme'); s.value = 'arts';"
                     "s.dispatchEvent(new Event('change')); s.value")
    assert browser.evaluate("document.body.dataset.theme") == "arts"
    assert _plotted(browser, "plot-map", "x") != map_before
    assert _plotted(browser, "plot-matrix", "z") != heat_before
    assert browser.evaluate("document.getElementById('topk-table').innerText").count("\n") > 10

    # a real mouse over the first point of the map: the hover label names its culture
    point = browser.evaluate("""(() => {
        const gd = document.getElementById('plot-map');
        gd.scrollIntoView({block: 'center'});
        const fl = gd._fullLayout, t = gd.data[0], r = gd.getBoundingClientRect();
        return {x: r.left + fl._size.l + fl.xaxis.l2p(t.x[0]),
                y: r.top + fl._size.t + fl.yaxis.l2p(t.y[0]), culture: t.customdata[0]};
    })()""")
    label = ""
    for _ in range(20):
        for dx in (0, 1):
            browser.send("Input.dispatchMouseEvent", type="mouseMoved",
                         x=point["x"] + dx, y=point["y"])
        time.sleep(0.2)
        label = browser.evaluate(
            "(document.querySelector('#plot-map .hoverlayer') || {}).textContent || ''")
        if label:
            break
    assert point["culture"] in label and "top-3 (arts)" in label, label

    assert browser.errors() == []
