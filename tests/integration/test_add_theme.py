"""`culturesim add-theme` (SPEC M6, issue 17 item 4) on a copy of the shared small
run: one new head trained on the frozen backbone, every other parameter and
buffer bit-identical, and the new head in the exported culture embeddings, in
all-pairs, in the report and in a served answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from culturesim_ray.cli import main
from culturesim_ray.layout import TrainLayout

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def themed_run(trained_run, tmp_path_factory):
    """A copy of the shared run (its embed/ and train/) with an 'architecture' theme
    added from an item-id file; (run, model state before, model state after)."""
    run = tmp_path_factory.mktemp("add_theme") / "run"
    shutil.copytree(trained_run / "embed", run / "embed")
    shutil.copytree(trained_run / "train", run / "train")
    layout = TrainLayout(str(run / "train"))
    before = torch.load(layout.model, weights_only=True)
    # two text items of each culture (the corpus tags them 'history' only)
    texts = pq.read_table(run / "train" / "graph" / "text" / "items.parquet").to_pylist()
    ids = [r["item_id"] for r in texts if r["item_id"].endswith(("-0", "-1", "-2", "-3"))]
    items = run / "architecture.txt"
    items.write_text("# the architecture theme\n" + "\n".join(ids) + "\n")
    assert main(["add-theme", str(run), "--theme", "architecture", "--items", str(items),
                 "--steps", "4"]) == 0
    after = torch.load(layout.model, weights_only=True)
    return run, before, after


def test_every_other_head_and_the_backbone_stay_bit_identical(themed_run):
    _, before, after = themed_run
    new = {k for k in after if k.startswith("theme_heads.heads.architecture.")}
    assert new and not new & set(before)
    assert set(after) - new == set(before)
    for key, old in before.items():
        if key.startswith("theme_heads.gate"):  # the gate gains a row and is refitted
            assert after[key].shape[0] == old.shape[0] + 1
            assert torch.isfinite(after[key]).all() and not torch.equal(
                after[key][:len(old)], old), key
        else:
            assert torch.equal(after[key], old), key
    # the new head trained: it moved away from any other head's weights
    w = after["theme_heads.heads.architecture.net.0.weight"]
    assert torch.isfinite(w).all() and not torch.equal(
        w, after["theme_heads.heads.history.net.0.weight"])


def test_new_head_is_exported_and_recorded(themed_run):
    run, _, _ = themed_run
    layout = TrainLayout(str(run / "train"))
    emb = pq.read_table(layout.culture_embeddings).to_pylist()
    arch = [r for r in emb if r["head"] == "architecture"]
    assert sorted(r["culture"] for r in arch) == ["Greek", "Persian", "Turkish"]
    manifest = json.loads(open(layout.manifest).read())
    assert manifest["added_themes"][-1]["theme"] == "architecture"
    assert "architecture" in manifest["config"]["model_config"]["themes"]
    # the gate refitted over every theme, the new one included, and recorded
    assert manifest["gate"]["themes"][-1] == "architecture"
    serving = json.loads(open(Path(layout.serving) / "manifest.json").read())
    assert serving["gate"] == manifest["gate"]
    assert json.loads(open(layout.model_config).read())["themes"][-1] == "architecture"


def test_new_head_in_allpairs_report_and_served_answer(themed_run):
    run, _, _ = themed_run
    from culturesim_ray.serving.predictor import RunPaths, SimilarityService

    out = run / "allpairs-model"  # the report's first choice: the model's heads
    assert main(["allpairs", str(run / "train"), "--out", str(out), "-k", "2"]) == 0
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert len([p for p in pairs if p["theme"] == "architecture"]) == 3 * 2
    assert main(["report", str(run)]) == 0
    html = next(run.rglob("report.html")).read_text(encoding="utf-8")
    assert "architecture" in html
    svc = SimilarityService(RunPaths.of(str(run)))
    ans = svc.similar("text", "A domed mosque with slender minarets", k=3)
    assert "architecture" in ans["themes"]
    ranking = ans["themes"]["architecture"]["ranking"]
    assert sorted(r["culture"] for r in ranking) == sorted(g["culture"] for g in ans["general"])


def test_a_theme_the_model_has_is_refused(themed_run, capsys):
    run, _, _ = themed_run
    assert main(["add-theme", str(run), "--theme", "history"]) == 2
    assert "has a 'history' head already" in capsys.readouterr().err
