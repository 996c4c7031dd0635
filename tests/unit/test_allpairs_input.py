"""What the all-pairs job reads (input kinds, messages), its heads and k: no Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culturesim_ray.allpairs_input import (
    CULTURE_FILE,
    Source,
    drop_small_heads,
    heads_from_table,
    item_vectors,
    plan_heads,
    resolve_input,
    resolve_k,
)
from culturesim_ray.config import AllPairsConfig


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def culture_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"culture": ["a", "b"], "head": ["general"] * 2,
                             "vector": [[1.0, 0.0], [0.0, 1.0]]}), path)


def test_a_file_is_read_as_it_is(tmp_path):
    f = touch(tmp_path / "items.parquet")
    assert resolve_input(str(f)) == Source(str(f), "file", f"the file {f}")


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="all-pairs input not found"):
        resolve_input(str(tmp_path / "nope"))


def test_embed_run(tmp_path):
    touch(tmp_path / "emb" / "embeddings" / "text" / "part-0.parquet")
    touch(tmp_path / "emb" / "manifest.json", "{}")
    src = resolve_input(str(tmp_path / "emb"))
    assert (src.kind, src.path, src.note) == ("embed_run", str(tmp_path / "emb"), "")


@pytest.mark.parametrize(("extra", "what"), [("model.pt", "the train run"),
                                             ("pairs.parquet", "the all-pairs output")])
def test_train_run_and_allpairs_output_read_their_culture_embeddings(tmp_path, extra, what):
    d = tmp_path / "d"
    culture_file(d / CULTURE_FILE)
    touch(d / extra)
    touch(d / "manifest.json", "{}")
    src = resolve_input(str(d))
    assert src.kind == "culture_file"
    assert src.path == str(d / CULTURE_FILE)
    assert src.what.startswith(f"{what} {d}")


def test_run_root_reads_its_embed_run_and_names_train(tmp_path):
    run = tmp_path / "run"
    touch(run / "embed" / "embeddings" / "text" / "p.parquet")
    culture_file(run / "train" / CULTURE_FILE)
    touch(run / "train" / "model.pt")
    src = resolve_input(str(run))
    assert (src.kind, src.path) == ("embed_run", str(run / "embed"))
    assert src.note == (f"all-pairs: {run} is a run directory: reading its embed run "
                        f"{run / 'embed'} (raw item vectors); pass {run / 'train'} for the "
                        f"trained model's culture vectors")


def test_run_root_without_embed_reads_train(tmp_path):
    run = tmp_path / "run"
    culture_file(run / "train" / CULTURE_FILE)
    src = resolve_input(str(run))
    assert (src.kind, src.path) == ("culture_file", str(run / "train" / CULTURE_FILE))
    assert "without an embed run" in src.note


def test_directory_of_parquet_files(tmp_path):
    touch(tmp_path / "d" / "a.parquet")
    touch(tmp_path / "d" / "_SUCCESS")
    assert resolve_input(str(tmp_path / "d")).kind == "parquet_dir"


@pytest.mark.parametrize("entries", [["manifest.json", "model.pt"], ["embed/notes.txt"], []])
def test_any_other_directory_names_what_it_holds(tmp_path, entries):
    d = tmp_path / "d"
    d.mkdir()
    for e in entries:
        touch(d / e)
    shown = {"manifest.json": "manifest.json, model.pt", "embed/notes.txt": "embed/"}
    expect = shown[entries[0]] if entries else "nothing (an empty directory)"
    with pytest.raises(ValueError) as exc:
        resolve_input(str(d))
    msg = str(exc.value)
    assert msg.startswith(f"{d}: not an all-pairs input; it holds {expect}. Accepted: ")
    assert "embed run directory (embeddings/)" in msg and CULTURE_FILE in msg


def test_item_vectors_name_bad_rows():
    t = pa.table({"item_id": ["i0", "i1"], "culture": ["a", "b"],
                  "vector": [[1.0, 2.0], [float("nan"), 0.0]]})
    with pytest.raises(ValueError, match=r"row 1 \(i1\) holds NaN or inf \(1 such rows\)"):
        item_vectors(t, "in")
    mixed = pa.table({"culture": ["a", "b"], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    with pytest.raises(ValueError, match=r"mixed vector dimensions \[2, 3\]; row 1 has 3 vs 2"):
        item_vectors(mixed, "in")


def items(themes):
    rng = np.random.default_rng(0)
    cultures = ["b", "a", "b", "c", "a", "c"]
    return pa.table({"culture": cultures,
                     "vector": rng.normal(size=(6, 3)).astype(np.float32).tolist(),
                     "themes": themes})


def test_heads_from_items_pool_and_give_set_groups():
    t = items([["x"], ["x"], [], ["y"], ["x"], []])
    src = Source("in", "file", "the file in")
    heads, groups, vecs = heads_from_table(t, src, AllPairsConfig(similarity="mmd"), "in")
    assert set(heads) == set(groups) == {"general", "x", "y"}
    for h, (cs, _, _) in groups.items():
        assert cs == heads[h][0]
    cs, idx, labels = groups["x"]
    assert cs == ["a", "b"] and idx.tolist() == [0, 1, 4] and labels.tolist() == [1, 0, 0]
    assert vecs.shape == (6, 3)
    _, none, _ = heads_from_table(t, src, AllPairsConfig(), "in")
    assert none is None


def test_set_level_on_culture_level_input_is_an_error():
    t = pa.table({"culture": ["a", "b"], "head": ["general"] * 2, "vector": [[1.0], [2.0]]})
    src = Source("run/train/culture_embeddings.parquet", "culture_file",
                 "the train run run/train (culture_embeddings.parquet)")
    with pytest.raises(ValueError) as exc:
        heads_from_table(t, src, AllPairsConfig(similarity="energy"), "run/train")
    msg = str(exc.value)
    assert "'energy' is a set-level similarity" in msg
    assert "the train run run/train (culture_embeddings.parquet) is culture-level input" in msg
    assert "Pass item-level input: an embed run directory" in msg


def test_small_heads_are_skipped_and_left_out_of_alpha():
    heads = {"general": (["a", "b", "c"], np.eye(3)), "x": (["a", "b"], np.eye(2)),
             "y": (["c"], np.eye(1))}
    plan = plan_heads(heads, AllPairsConfig(), "in")
    assert list(plan.heads) == ["general", "x"]
    assert plan.skipped == {"y": "1 culture(s) (c); all-pairs needs at least 2"}
    assert plan.alpha == {"x": 1.0}
    # an explicit alpha may name the skipped theme; it is not "unknown"
    plan = plan_heads(heads, AllPairsConfig(alpha={"x": 0.3, "y": 0.7}), "in")
    assert plan.alpha == {"x": 0.3}
    with pytest.raises(ValueError, match=r"alpha names unknown themes \['z'\]"):
        plan_heads(heads, AllPairsConfig(alpha={"z": 1.0}), "in")
    with pytest.raises(ValueError, match=r"heads \['z'\] not in the input"):
        plan_heads(heads, AllPairsConfig(heads=["z"]), "in")
    with pytest.raises(ValueError, match="in: no head has at least 2 cultures"):
        plan_heads({"general": (["a"], np.eye(1))}, AllPairsConfig(), "in")
    assert drop_small_heads({"g": []}) == ([], {"g": "0 culture(s) (none); all-pairs needs "
                                                     "at least 2"})


def test_k_default_is_clamped_explicit_k_is_not():
    assert resolve_k(None, 30, 10) == (10, "")
    assert resolve_k(None, 8, 10) == (7, "all-pairs: k=10 clamped to 7 (8 cultures)")
    assert resolve_k(7, 8, 10) == (7, "")
    with pytest.raises(ValueError, match="k=8 but the input has only 8 cultures: k must be "
                                         "at most 7"):
        resolve_k(8, 8, 10)
