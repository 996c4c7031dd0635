"""The lines `culturesim demo` ends with: each culture's nearest by the model's
culture map (its all-pairs pairs), and the model's and the raw baseline's agreement
with the gold, read back from the evaluation.csv the evaluation writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray.ops.set_pairs import PAIRS_SCHEMA
from culturesim_ray.pipeline.demo_run import agreement_line, top_lines
from culturesim_ray.report.evaluate import Method, evaluate, validate_gold, write_csv

RAW = "mean minilm (raw baseline), cosine"


def _rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(8)]
    pos = rng.normal(size=(8, 2))
    gold = validate_gold([{"culture_a": a, "culture_b": b,
                           "score": float(np.exp(-np.linalg.norm(pos[i] - pos[j])))}
                          for i, a in enumerate(names) for j, b in enumerate(names) if i < j],
                         names)
    model = np.hstack([pos, 0.05 * rng.normal(size=(8, 4))])
    raw = np.hstack([pos, 1.0 * rng.normal(size=(8, 4))])
    methods = [Method("trained model", "model", {"general": (names, model)}, "euclidean"),
               Method(RAW, "baseline", {"general": (names, raw)}, "euclidean")]
    return evaluate(gold, methods, k=2, n_boot=50, n_perm=9, reference=RAW)


def test_agreement_line_reads_the_model_and_the_raw_baseline_rows(tmp_path):
    rows = _rows()
    write_csv(rows, tmp_path / "evaluation.csv")
    by = {r["method"]: r for r in rows}
    line = agreement_line(tmp_path / "evaluation.csv")
    m, r = by["trained model"], by[RAW]
    assert m["spearman"] != r["spearman"]  # the two figures are told apart
    assert line == (
        "agreement with the demo gold (Spearman [95% CI over cultures]): model "
        f"{m['spearman']:.3f} [{m['spearman_lo']:.2f}, {m['spearman_hi']:.2f}], "
        f"raw culture means {r['spearman']:.3f} [{r['spearman_lo']:.2f}, {r['spearman_hi']:.2f}]")


def test_agreement_line_is_none_without_a_model_row(tmp_path):
    write_csv([r for r in _rows() if r["kind"] != "model"], tmp_path / "evaluation.csv")
    assert agreement_line(tmp_path / "evaluation.csv") is None


def test_top_lines_list_each_culture_s_nearest_by_the_general_head(tmp_path):
    rows = [("general", "A", "B", 0.9, 1), ("general", "A", "C", 0.5, 2),
            ("general", "B", "A", 0.9, 1), ("general", "B", "C", 0.7, 2),
            ("arts", "A", "C", 0.99, 1)]
    table = pa.table({"theme": [r[0] for r in rows], "culture_a": [r[1] for r in rows],
                      "culture_b": [r[2] for r in rows],
                      "score": pa.array([r[3] for r in rows], pa.float32()),
                      "rank": pa.array([r[4] for r in rows], pa.int32()),
                      "similarity": ["modality_cosine"] * len(rows)}, schema=PAIRS_SCHEMA)
    pq.write_table(table, tmp_path / "pairs.parquet")
    sim, lines = top_lines(tmp_path / "pairs.parquet", k=1)
    assert sim == "modality_cosine"
    assert lines == [f"  {'A':<10} B 0.900", f"  {'B':<10} A 0.900"]
