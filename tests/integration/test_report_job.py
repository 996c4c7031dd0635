"""`culturesim evaluate` and `culturesim report` on a real (small) run: the
trained model, the baselines and every similarity function scored against gold
pairs derived from countryinfo, and the HTML report over the run's outputs."""

from __future__ import annotations

import csv
import json
import re

import pytest

from culturesim_ray.cli import main
from culturesim_ray.ops.similarity import NAMES
from culturesim_ray.report.gold import derive_gold, write_gold

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def gold(trained_run, tmp_path_factory):
    rows = derive_gold({"Turkish": "Turkey", "Greek": "Greece", "Persian": "Iran",
                        "Egyptian": "Egypt"})  # Egyptian is not in the run: skipped
    path = write_gold(rows, tmp_path_factory.mktemp("gold") / "gold.csv")
    with path.open("a", encoding="utf-8") as fh:  # themed pairs for the theme heads
        fh.write("Greek,Turkish,0.9,,,\nGreek,Persian,0.1,,,\nPersian,Turkish,0.5,,,\n")
    text = path.read_text().replace("capital_distance_km\n", "capital_distance_km,theme\n")
    lines = text.splitlines()
    lines = [lines[0]] + [ln + "," for ln in lines[1:7]] + [ln + ",history" for ln in lines[7:]]
    path.write_text("\n".join(lines) + "\n")
    return path


# the model's row: plain cosine, or the culture map with its learned weight (fitted to
# a share of the raw spread by default) and whitened raw means
MODEL_ROW = re.compile(r"trained model \(heads, (cosine|modality cosine(, learned x[0-9.e-]+"
                       r"( \(0\.05 of the raw spread\))?)?(, whitened raw means)?)\)")


def test_evaluate_scores_every_method(trained_run, gold, capsys):
    assert main(["evaluate", str(trained_run), "--gold", str(gold), "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 gold pair(s): unknown culture 'Egyptian'" in out
    rows = list(csv.DictReader((trained_run / "evaluation" / "evaluation.csv").open()))
    general = {r["method"] for r in rows if r["theme"] == "general"}
    model = [m for m in general if MODEL_ROW.fullmatch(m)]
    assert len(model) == 1, general  # modality cosine where the cultures' shares differ
    assert "0.05 of the raw spread" in model[0] and "whitened raw means" in model[0]
    assert "TF-IDF (LSA) mean, cosine" in general
    assert {r["similarity"] for r in rows if r["theme"] == "general"} >= set(NAMES)
    history = [r for r in rows if r["theme"] == "history"]
    assert any(r["kind"] == "model" for r in history)  # the history head scored the themed rows
    for r in rows:
        assert int(r["pairs"]) == 3
        assert -1 <= float(r["spearman"]) <= 1 or r["spearman"] == "nan"
        assert 0 <= float(r["recall@1"]) <= 1 and 0 <= float(r["ndcg@1"]) <= 1
    saved = json.loads((trained_run / "evaluation" / "evaluation.json").read_text())
    assert saved["skipped"] == {"unknown culture 'Egyptian'": 3}
    assert (trained_run / "evaluation" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_bad_gold_is_a_clear_error(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("culture_a,culture_b,score\nGreek,Turkish,high\n")
    assert main(["evaluate", str(trained_run), "--gold", str(bad)]) == 2
    assert "row 1: field 'score' is not a number: 'high'" in capsys.readouterr().err
    assert main(["evaluate", str(trained_run), "--gold", str(bad).replace("bad", "none")]) == 2


def test_report_over_the_run(trained_run, gold, tmp_path):
    main(["evaluate", str(trained_run), "--gold", str(gold), "-k", "1"])
    attrs = tmp_path / "attrs.csv"
    # as a spreadsheet saves it where the comma is the decimal mark
    # (a header and names in other case: the run's Greek is `greek` there)
    attrs.write_text("Culture;Region\nTurkish;Asia\ngreek;Europe\nPersian;Asia\n")
    assert main(["report", str(trained_run), "--attributes", str(attrs), "-k", "1",
                 "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    for sid in ("maps", "dendrogram", "network", "topk", "combined", "evaluation"):
        assert f'id="{sid}"' in page
    assert "fewer than 4 cultures" in page  # 3 cultures: no map, said so
    assert (tmp_path / "rep" / "dendrogram_general.png").exists()
    assert "Europe" in page and MODEL_ROW.search(page)
    # the evaluation table prints its numbers with 3 decimals, not as the CSV stores them
    section = page[page.index('id="evaluation"'):]
    section = section[:section.index("</table>")]
    rows = list(csv.DictReader((trained_run / "evaluation" / "evaluation.csv").open()))
    assert f"<td>{float(rows[0]['spearman']):.3f}</td>" in section
    assert rows[0]["spearman"] not in section or len(rows[0]["spearman"]) <= 5
    assert re.search(r"<td>-?\d\.\d{4,}</td>", section) is None
