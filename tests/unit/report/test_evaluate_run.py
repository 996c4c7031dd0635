"""`culturesim evaluate` on a run directory: which modality it reads by default, and the
clear errors for runs or gold with fewer than three cultures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from culturesim_ray.report.evaluate import GoldError


def _write_items(embed: Path, modality: str, n: int, cultures: int, seed: int) -> None:
    """n embedded rows of `modality` over `cultures` cultures as the embed job writes
    them, plus one failed row (error set) of another culture, which counts for nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray.layout import EmbedLayout

    x = np.random.default_rng(seed).normal(size=(n + 1, 8)).astype(np.float32)
    rows = [{"item_id": f"{modality}-{j}", "culture": f"c{j % cultures}", "modality": modality,
             "vector": x[j].tolist(), "themes": ["t"], "error": None} for j in range(n)]
    rows.append({"item_id": f"{modality}-bad", "culture": "c-failed", "modality": modality,
                 "vector": None, "themes": [], "error": "unreadable"})
    d = Path(EmbedLayout(str(embed)).embeddings(modality))
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / "part-0.parquet")


def test_the_default_modality_covers_the_most_cultures(tmp_path):
    from culturesim_ray.report.run_methods import default_modality

    embed = tmp_path / "embed"
    with pytest.raises(FileNotFoundError, match="no embedded items"):
        default_modality(str(embed))
    _write_items(embed, "sequence", 60, 3, 1)
    _write_items(embed, "image", 6, 6, 0)
    assert default_modality(str(embed)) == "image"  # 6 cultures (one image each) over 3
    _write_items(embed, "text", 6, 6, 2)
    assert default_modality(str(embed)) == "text"  # as many cultures: text
    from culturesim_ray.runs import read_embeddings

    cols = read_embeddings(str(embed), "image", columns=["culture"])["image"]
    assert cols.column_names == ["item_id", "culture"] and cols.num_rows == 6  # no vectors


def test_evaluate_needs_three_cultures_in_the_run_and_in_the_gold(tmp_path, fast_learned):
    """A rank correlation over culture pairs needs at least 3 cultures (3 pairs): fewer,
    in the run or among the usable gold pairs, is a clear error, not an empty table."""
    import json

    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.report.evaluate import run_evaluation

    two, three = tmp_path / "two", tmp_path / "three"
    _write_items(two / "embed", "text", 8, 2, 0)
    gold = tmp_path / "gold.csv"
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\n")
    with pytest.raises(GoldError, match=r"name 2 of the run's 2 cultures \['c0', 'c1'\]; a "
                                        r"rank correlation over culture pairs needs pairs over "
                                        r"at least 3"):
        run_evaluation(str(two), tmp_path / "gold.csv")
    _write_items(three / "embed", "text", 12, 3, 1)
    Path(EmbedLayout(str(three / "embed")).manifest).write_text(
        json.dumps({"encoders": {"text": {"name": "test"}}}))
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\nc0,c9,0.1\n")
    with pytest.raises(GoldError, match=r"name 2 of the run's 3 cultures \['c0', 'c1'\]"):
        run_evaluation(str(three), gold, n_boot=20, n_perm=9)
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\nc0,c2,0.1\nc1,c2,0.3\n")
    res = run_evaluation(str(three), gold, n_boot=20, n_perm=9, log=lambda _m: None)
    assert res["rows"] and all(r["pairs"] == 3 for r in res["rows"])
    # the same pairs as a distance matrix (blank corner, one half blank): same pairs, and
    # the kind read from its zero diagonal is said and recorded
    gold.write_text(",c0,c1,c2\nc0,0,,\nc1,0.5,0,\nc2,0.9,0.7,0\n")
    res = run_evaluation(str(three), gold, n_boot=20, n_perm=9, log=lambda _m: None)
    assert res["notes"][0] == "evaluate: gold kind distance (a matrix with a zero diagonal)"
    assert res["rows"] and all(r["pairs"] == 3 for r in res["rows"]) and not res["skipped"]
    saved = json.loads((three / "evaluation" / "evaluation.json").read_text())
    assert saved["gold_kind"] == "distance"


def test_the_tfidf_baseline_reads_the_embedded_items_only():
    """The corpus rows of the embedded items, found by their source row: quarantined
    rows (no culture, a duplicate id) have no embedded item. Texts in corpus order,
    with their positions in the embeddings."""
    from culturesim_ray.report.run_methods import embedded_texts

    rows = [
        {"item_id": "a", "culture": None, "text": "no culture", "_source_row": "c.jsonl:1"},
        {"item_id": "a", "culture": "X", "text": "alpha", "_source_row": "c.jsonl:2"},
        {"item_id": "a", "culture": "Y", "text": "a duplicate", "_source_row": "c.jsonl:3"},
        {"item_id": 7, "culture": "Y", "text": "seven", "_source_row": "c.jsonl:4"},
        {"Item_ID": "d", "Culture": "Z", " Text": "delta", "_source_row": "c.jsonl:5"},
    ]  # the last as a spreadsheet names its columns (the embed job reads it so)
    keep, texts = embedded_texts(rows, ["c.jsonl:4", "c.jsonl:2", "c.jsonl:5", "other:1"])
    assert keep == [1, 0, 2] and texts == ["alpha", "seven", "delta"]


def test_a_missing_gold_file_fails_before_any_method_runs(tmp_path):
    from culturesim_ray.report.evaluate import run_evaluation
    from culturesim_ray.report.gold_file import read_gold_rows

    with pytest.raises(GoldError, match=r"^gold file not found: .*nope\.csv$"):
        read_gold_rows(tmp_path / "nope.csv")
    bad = tmp_path / "gold.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(GoldError, match=r"^gold file .*gold\.jsonl:1: not valid JSON"):
        read_gold_rows(bad)
    # no run here at all: the gold file is what the error names
    with pytest.raises(GoldError, match="gold file not found"):
        run_evaluation(str(tmp_path / "no-run"), tmp_path / "nope.csv")


def test_an_embed_run_without_source_rows_leaves_the_tfidf_row_out(tmp_path, fast_learned):
    """Embeddings written before each item kept its corpus row: the TF-IDF baseline
    cannot tell the embedded rows, so it is left out with a line; the rest evaluates."""
    import json

    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.report.evaluate import run_evaluation

    run = tmp_path / "run"
    _write_items(run / "embed", "text", 12, 3, 1)  # no source_row column
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"item_id": "text-0", "culture": "c0", "modality": "text",
                                  "text": "x"}) + "\n")
    Path(EmbedLayout(str(run / "embed")).manifest).write_text(
        json.dumps({"encoders": {"text": {"name": "test"}}, "corpus": str(corpus)}))
    gold = tmp_path / "gold.csv"
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\nc0,c2,0.1\nc1,c2,0.3\n")
    logs: list[str] = []
    res = run_evaluation(str(run), gold, n_boot=20, n_perm=9, log=logs.append)
    assert any("records no source rows (an older embed run); TF-IDF baseline left out" in m
               for m in logs)
    assert res["rows"] and not any("TF-IDF" in r["method"] for r in res["rows"])


def test_the_evaluate_bar_counts_each_method_when_it_is_done(tmp_path, fast_learned):
    import json

    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.progress import Stage
    from culturesim_ray.report.evaluate import run_evaluation

    run = tmp_path / "run"
    _write_items(run / "embed", "text", 12, 3, 1)
    Path(EmbedLayout(str(run / "embed")).manifest).write_text(
        json.dumps({"encoders": {"text": {"name": "test"}}}))
    gold = tmp_path / "gold.csv"
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\nc0,c2,0.1\nc1,c2,0.3\n")
    seen: list[tuple[str, int]] = []
    with Stage("evaluate", unit="methods") as st:
        def log(msg: str) -> None:
            if msg.startswith("evaluate ["):
                seen.append((msg, st.done))

        run_evaluation(str(run), gold, n_boot=20, n_perm=9, log=log)
    assert len(seen) >= 3 and st.total == len(seen)
    assert [d for _, d in seen] == list(range(len(seen)))  # method i starts with i done
    assert st.done == st.total



def test_evaluate_reads_the_items_of_the_gold_cultures_alone(tmp_path, fast_learned):
    """A gold over 3 of a run's 6 cultures scores every method as on a run of those 3
    cultures' items alone: the other cultures' items are not read (memory grows with
    the gold, not the corpus), so item-level read-outs (confusion: retrieved among
    the gold's cultures) compare the gold's cultures with each other."""
    import json

    import pyarrow.parquet as pq

    from culturesim_ray.layout import EmbedLayout
    from culturesim_ray.report.evaluate import run_evaluation

    big, small = tmp_path / "big", tmp_path / "small"
    _write_items(big / "embed", "text", 60, 6, 3)
    part = Path(EmbedLayout(str(big / "embed")).embeddings("text")) / "part-0.parquet"
    table = pq.read_table(part)
    keep = [c in ("c0", "c1", "c2", "c-failed") for c in table.column("culture").to_pylist()]
    d = Path(EmbedLayout(str(small / "embed")).embeddings("text"))
    d.mkdir(parents=True)
    pq.write_table(table.filter(keep), d / "part-0.parquet")
    for run in (big, small):
        Path(EmbedLayout(str(run / "embed")).manifest).write_text(
            json.dumps({"encoders": {"text": {"name": "test"}}}))
    gold = tmp_path / "gold.csv"
    gold.write_text("culture_a,culture_b,score\nc0,c1,0.5\nc0,c2,0.1\nc1,c2,0.3\n")
    got = {run: run_evaluation(str(run), gold, n_boot=20, n_perm=9, log=lambda _m: None)
           for run in (big, small)}
    rows = {run: {r["method"]: r["spearman"] for r in got[run]["rows"]} for run in got}
    assert any("confusion" in m for m in rows[big])
    assert rows[big] == rows[small]
    # a name the run lacks is still matched against every culture of the run
    gold.write_text(gold.read_text() + "c0,c55,0.2\n")
    res = run_evaluation(str(big), gold, n_boot=20, n_perm=9, log=lambda _m: None)
    assert res["skipped"] == {"unknown culture 'c55' (did you mean 'c5'?)": 1}
