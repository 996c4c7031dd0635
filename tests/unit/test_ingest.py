"""The streaming ingest's batch functions and the fingerprints (pure: no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from culturesim_ray import fingerprint, ingest
from culturesim_ray.layout import EmbedLayout, RunLayout
from culturesim_ray.ops.pooling import finish_pool, partial_pool, pool
from culturesim_ray.schema import validate_rows

ROWS = [
    {"item_id": "a", "culture": "Greek", "modality": "text", "text": "one", "_source_row": "f:1"},
    {"item_id": "b", "culture": "", "modality": "text", "text": "two", "_source_row": "f:2"},
    {"item_id": "a", "culture": "Greek", "modality": "text", "text": "dup", "_source_row": "f:3"},
    {"item_id": "c", "culture": "Turkish", "modality": "text", "text": "three",
     "themes": ["Food"], "_source_row": "f:4"},
    {"item_id": "d", "culture": "Turkish", "modality": "text", "text": "four", "_source_row": "f:5"},
]


def _resolved(chunks: list[list[dict]], written: pa.Table | None = None,
              parts: int = 3) -> pa.Table:
    """What the job computes: chunks validated, split by item_id, each part resolved."""
    by_part: list[list[pa.Table]] = [[] for _ in range(parts)]
    pos = 0
    for rows in chunks:
        for j, t in enumerate(ingest.split_by_key(ingest.read_validated(rows, 0, pos, None), parts)):
            by_part[j].append(t)
        pos += len(rows)
    if written is not None:
        for j, t in enumerate(ingest.split_by_key(written, parts)):
            by_part[j].append(t)
    out = [ingest.resolve_partition(pa.concat_tables(ts)) for ts in by_part]
    return pa.concat_tables(out).sort_by("_order")


@pytest.mark.parametrize("chunking", [[5], [1, 4], [2, 2, 1], [1, 1, 1, 1, 1]])
def test_distributed_validation_matches_the_in_memory_rules(chunking):
    chunks, i = [], 0
    for n in chunking:
        chunks.append([dict(r) for r in ROWS[i:i + n]])
        i += n
    got = _resolved(chunks)
    ref = validate_rows([dict(r) for r in ROWS])
    todo = ingest.select(got, "todo")
    assert todo.column("item_id").to_pylist() == [r["item_id"] for r in ref.good]
    assert todo.column("themes").to_pylist() == [r["themes"] for r in ref.good]
    bad = ingest.quarantine_of_staged(got)
    assert bad.column("reason").to_pylist() == [b.record()["reason"] for b in ref.bad]
    assert bad.column("reason").to_pylist() == [
        "culture: empty", "item_id: duplicate 'a', first seen at f:1"]
    assert bad.column("source_row").to_pylist() == ["f:2", "f:3"]


def test_what_the_check_counts_from_the_staged_rows(tmp_path):
    """embed --check's partition functions: usable rows per culture and modality, the
    first bad rows in corpus order, and the image/melody files that are not there
    (a text row's uri, e.g. its source page, is no file to fetch)."""
    (tmp_path / "here.png").write_bytes(b"x")
    rows = [*ROWS,
            {"item_id": "i1", "culture": "Greek", "modality": "image",
             "uri": str(tmp_path / "here.png"), "_source_row": "f:6"},
            {"item_id": "i2", "culture": "Greek", "modality": "image",
             "uri": str(tmp_path / "gone.png"), "_source_row": "f:7"},
            {"item_id": "t9", "culture": "Greek", "modality": "text", "text": "nine",
             "uri": "https://example.org/page", "_source_row": "f:8"}]
    staged = _resolved([rows])
    assert sorted(ingest.culture_counts(staged)) == [("Greek", "image", 2), ("Greek", "text", 2),
                                                     ("Turkish", "text", 2)]
    assert ingest.first_bad(staged, 1) == [(1, "f:2: culture: empty")]
    per, first = ingest.missing_files(
        staged, lambda uris: {u for u in uris if u.endswith("here.png")}, 3)
    assert per == [("image", "Greek", 1)]
    assert first == [(6, f"f:7: uri: file not found or not readable: {tmp_path / 'gone.png'}")]


def test_resume_marks_written_rows_done_and_quarantines_earlier_failures():
    written = ingest.written_rows(pa.array(["a", "c", "d"]), pa.array(["text", "text", "image"]),
                                  pa.array([None, "text: could not encode", None]))
    got = _resolved([[dict(r) for r in ROWS]], written)
    status: dict[str, str] = {}  # the first row of each id (a's duplicate is bad)
    for item_id, st in zip(got.column("item_id").to_pylist(), got.column("_status").to_pylist(),
                           strict=True):
        status.setdefault(item_id, st)
    assert status["a"] == "done"           # written, no error
    assert status["c"] == "bad"            # written with an error: quarantined again
    assert status["d"] == "todo"           # written for another modality only
    assert "written" not in got.column("_status").to_pylist()
    q = ingest.quarantine_of_staged(got).to_pylist()
    assert {r["item_id"]: r["reason"] for r in q}["c"] == "text: could not encode"
    counts = {(s, f): n for s, _, f, n in ingest.status_counts(got)}
    assert sum(counts.values()) == len(ROWS)


def test_split_by_key_is_stable_and_complete():
    t = pa.table({"item_id": [f"id{i}" for i in range(200)] + [None]})
    parts = ingest.split_by_key(t, 4)
    again = ingest.split_by_key(t, 4)
    assert [p.num_rows for p in parts] == [p.num_rows for p in again]
    assert sum(p.num_rows for p in parts) == 201 and all(p.num_rows > 20 for p in parts)
    assert parts[0].column("item_id").null_count == 1


def test_sample_hash_ignores_row_order():
    ids = [f"x{i}" for i in range(100)]
    h = ingest.sample_hash(ids, key="k")
    assert (h >= 0).all()
    assert dict(zip(ids, h, strict=True)) == dict(zip(ids[::-1], ingest.sample_hash(ids[::-1], "k"),
                                                      strict=True))


def test_fetch_uris_quarantines_missing_files_and_raises_on_outages(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    t = pa.table({"uri": [str(tmp_path / "a.png"), str(tmp_path / "gone.png")]})

    def read(u):
        return open(u, "rb").read()

    out = ingest.fetch_uris(t, read)
    assert out.column("data").to_pylist() == [b"png", None]
    assert out.column("error").to_pylist() == [
        None, f"uri: file not found or not readable: {tmp_path / 'gone.png'}"]

    def outage(u):
        raise OSError(f"reading {u}: ConnectionError")

    with pytest.raises(OSError, match="reading .*a.png"):
        ingest.fetch_uris(t, outage)


@pytest.mark.parametrize("how", ["mean", "median"])
def test_partial_pools_combine_to_the_in_memory_pool(how):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(60, 4)).astype(np.float32)
    cs = [f"c{i % 5}" for i in range(60)]
    th = [["x"] if i % 3 == 0 else None for i in range(60)]
    ref = pool(v, cs, th, how=how, min_items=3)
    parts = [partial_pool(v[s:s + 11], cs[s:s + 11], th[s:s + 11], how) for s in range(0, 60, 11)]
    got = finish_pool(sum((p["head"] for p in parts), []), sum((p["culture"] for p in parts), []),
                      np.concatenate([p["n"] for p in parts]),
                      np.concatenate([p["vector"] for p in parts]), how, min_items=3)
    for head, (rc, rv) in ref.items():
        rows = [i for i, h in enumerate(got["head"]) if h == head]
        assert [got["culture"][i] for i in rows] == rc
        np.testing.assert_allclose(got["vector"][rows], rv, atol=1e-6)
    assert set(got["head"]) == set(ref)


def test_fingerprint_names_the_fields_that_differ():
    old = {"text": {"encoder": "minilm", "max_length": 256}, "k": 5}
    new = {"text": {"encoder": "tfidf", "tfidf_dim": 8}, "k": 5}
    assert fingerprint.differing(old, new) == ["text.encoder", "text.max_length", "text.tfidf_dim"]
    assert "text.encoder: 'minilm' -> 'tfidf'" in fingerprint.describe(old, new)
    # a field one side lacks (a setting an earlier version did not record) is named so
    assert fingerprint.describe(old, new).endswith(
        "text.max_length: 256 -> none; "
        "text.tfidf_dim: not recorded (an earlier version) -> 8")
    assert fingerprint.check(None, new, "x") is False
    assert fingerprint.check(new, dict(new), "x") is False
    with pytest.raises(fingerprint.SettingsMismatchError, match=r"OUT was written with other "
                       r"settings \(text.encoder: 'minilm' -> 'tfidf'"):
        fingerprint.check(old, new, "OUT")
    assert fingerprint.check(old, new, "OUT", overwrite=True) is True


def test_files_digest_changes_with_content(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"abc")
    first = fingerprint.files_digest(str(tmp_path / "m"))
    assert first == fingerprint.files_digest(str(tmp_path / "m"))
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    assert fingerprint.files_digest(str(tmp_path / "m")) != first


def test_run_layout_paths():
    run = RunLayout("s3://b/runs/x")
    assert run.embed.embeddings("text") == "s3://b/runs/x/embed/embeddings/text"
    assert run.embed.quarantine == "s3://b/runs/x/embed/quarantine"
    assert run.allpairs_model.pairs == "s3://b/runs/x/allpairs-model/pairs.parquet"
    assert run.train.model == "s3://b/runs/x/train/model.pt"
    assert EmbedLayout("/tmp/e").tfidf == "/tmp/e/models/tfidf.npz"


def test_the_rules_that_read_images_and_melodies_are_in_the_fingerprint():
    """A run whose images or melodies an earlier version read (sideways photos, all
    parts of a MIDI file interleaved) is refused, naming the reading, not resumed."""
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.pipeline.embed_state import vector_settings

    current = vector_settings(EmbedConfig(text_encoder="minilm"))
    assert "upright by EXIF" in current["image"]["reads"]
    assert "highest part" in current["sequence"]["reads"]
    assert "reads" not in current["text"]
    earlier = {m: {k: v for k, v in s.items() if k != "reads"} for m, s in current.items()}
    with pytest.raises(fingerprint.SettingsMismatchError,
                       match=r"reads: not recorded \(an earlier version\) -> 'upright"):
        fingerprint.check(earlier["image"], current["image"], "OUT/embeddings/image")
