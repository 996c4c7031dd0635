"""The Ray Data embedding job on a real local Ray instance."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import FLAGS, corpus_rows, write_jsonl
from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import build_encoder
from culturesim_ray.pipeline.embed import read_embeddings, read_quarantine, run_embed, scan_written
from culturesim_ray.schema import StrictModeError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

# the fixtures' images are the shipped flags, outside the tmp corpus folders
CFG = EmbedConfig(num_actors=2, batch_size=4, blocks=4, rows_per_file=3, uri_roots=[str(FLAGS)])


def quiet(*_a, **_k):
    return None


def _all_ids(out: Path) -> list[str]:
    ids = []
    for m in ("text", "image", "sequence"):
        ids += scan_written(str(out), m, CFG).column("item_id").to_pylist()
    return ids


def test_embed_small_corpus_matches_plain_encoder(ray_session, small_corpus, tmp_path):
    out = tmp_path / "out"
    report = run_embed(str(small_corpus), str(out), CFG, log=quiet)
    assert (report.rows_in, report.embedded, report.quarantined) == (12, 12, 0)
    emb = read_embeddings(str(out))
    assert set(emb) == {"text", "image"}
    text = emb["text"]
    assert text.schema.field("vector").type.list_size == 384
    assert set(text.column("encoder").to_pylist()) == {"minilm"}
    assert emb["image"].schema.field("vector").type.list_size == 1280
    # the vectors are the encoder's own, whichever actor made them
    rows = {r["item_id"]: r for r in corpus_rows()}
    ids = text.column("item_id").to_pylist()
    want = build_encoder("minilm").encode([rows[i]["text"] for i in ids]).vectors
    got = np.stack(text.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, want, atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["balanced"] is True
    assert manifest["counts"]["per_modality"] == {"text": 9, "image": 3}
    assert manifest["encoders"]["text"] == {"name": "minilm", "dim": 384}
    assert manifest["encoders"]["image"] == {"name": "efficientnet", "dim": 1280}
    assert "ray" in manifest["versions"] and manifest["config"]["batch_size"] == 4


def test_bad_rows_are_quarantined_and_counted(ray_session, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    rows = corpus_rows() + [
        {"item_id": "x1", "culture": "", "modality": "text", "text": "no culture"},
        {"item_id": "x2", "culture": "Greek", "modality": "video", "text": "?"},
        {"item_id": "x3", "culture": "Greek", "modality": "text", "text": "  "},
        {"item_id": "x4", "culture": "Greek", "modality": "image", "uri": str(tmp_path / "gone.png")},
        {"item_id": "x5", "culture": "Greek", "modality": "image", "uri": str(broken)},
        {"item_id": "turkish-0", "culture": "Turkish", "modality": "text", "text": "dup"},
        {"item_id": "x6", "culture": "Greek", "modality": "text", "text": "ok", "era_start": "x"},
        {"item_id": "x7", "culture": "Greek", "modality": "sequence", "uri": str(FLAGS / "greece.png")},
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    report = run_embed(str(corpus), str(out), CFG, log=quiet)
    assert report.rows_in == len(rows) == report.embedded + report.quarantined
    assert report.embedded == 12
    assert report.counts_line() == (  # what `culturesim embed` prints, counts by field
        f"embedded 12, quarantined 8 of {len(rows)} rows (culture: 1, era_start: 1, "
        "item_id: 1, modality: 1, text: 1, uri: 3)")
    q = read_quarantine(str(out)).to_pylist()
    reasons = {r["item_id"]: r["reason"] for r in q}
    assert set(reasons) == {"x1", "x2", "x3", "x4", "x5", "turkish-0", "x6", "x7"}
    assert reasons["x1"] == "culture: empty"
    assert reasons["x2"].startswith("modality: unknown value 'video'")
    assert reasons["x3"] == "text: empty for a text item"
    assert reasons["x4"].startswith("uri: file not found")
    assert reasons["x5"].startswith(f"uri: cannot read image {broken}")
    assert "duplicate 'turkish-0'" in reasons["turkish-0"]
    assert reasons["x6"].startswith("era_start: wrong type")
    assert reasons["x7"].startswith("uri: cannot parse music")
    assert "unknown music format" in reasons["x7"]
    by_id = {r["item_id"]: r for r in q}
    assert json.loads(by_id["x2"]["row_json"])["modality"] == "video"  # the row as given
    assert by_id["x1"]["source_row"].endswith("c.jsonl:13")
    assert "x5" not in read_embeddings(str(out))["image"].column("item_id").to_pylist()


def test_strict_mode_fails_on_first_bad_row(ray_session, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_rows() + [
        {"item_id": "x1", "culture": "Greek", "modality": "text", "text": ""}])
    with pytest.raises(StrictModeError, match=r"c.jsonl:13: text: empty"):
        run_embed(str(corpus), str(tmp_path / "out"), CFG.model_copy(update={"strict": True}),
                  log=quiet)


def test_resume_skips_written_rows_and_redoes_broken_files(ray_session, small_corpus, tmp_path):
    out = tmp_path / "out"
    run_embed(str(small_corpus), str(out), CFG, log=quiet)
    text_dir = out / "embeddings" / "text"
    files = sorted(text_dir.glob("*.parquet"))
    assert len(files) >= 3
    # a crash: one file never written, one cut short mid-write
    lost = pq.read_table(files[0]).num_rows + pq.read_table(files[1]).num_rows
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:50])
    report = run_embed(str(small_corpus), str(out), CFG, log=quiet)
    assert report.skipped_done == 12 - lost
    assert report.embedded == 12 and report.balanced
    ids = _all_ids(out)
    assert len(ids) == len(set(ids)) == 12  # every row exactly once
    # and a third run has nothing left to do
    again = run_embed(str(small_corpus), str(out), CFG, log=quiet)
    assert again.skipped_done == 12 and sorted(_all_ids(out)) == sorted(ids)


def test_tfidf_encoder_through_the_job(ray_session, small_corpus, tmp_path):
    cfg = CFG.model_copy(update={"text_encoder": "tfidf", "tfidf_dim": 4})
    out = tmp_path / "out"
    report = run_embed(str(small_corpus), str(out), cfg, log=quiet)
    assert report.embedded == 12
    text = read_embeddings(str(out), "text")["text"]
    assert text.schema.field("vector").type.list_size == 4
    assert (out / "models" / "tfidf.npz").exists()


def test_s3_corpus_and_output(ray_session, s3_server, tmp_path):
    fs, bucket = s3_server["fs"], s3_server["bucket"]
    rows = corpus_rows(with_image=False)
    rows.append({"item_id": "greek-flag", "culture": "Greek", "modality": "image",
                 "uri": "images/greece.png"})  # relative to the corpus file on S3
    rows.append({"item_id": "lost-flag", "culture": "Greek", "modality": "image",
                 "uri": "images/none.png"})
    for i, tune in enumerate(["GABc|d2B2|c2A2|G4|", "cBAG|F2A2|G2E2|C4|"]):
        (tmp_path / f"t{i}.abc").write_text(f"X:{i}\nT:t{i}\nM:2/4\nL:1/8\nK:C\n{tune}\n")
        fs.put(str(tmp_path / f"t{i}.abc"), f"{bucket}/corpora/demo/music/t{i}.abc")
        rows.append({"item_id": f"tune-{i}", "culture": "Greek", "modality": "sequence",
                     "uri": f"music/t{i}.abc"})
    local = write_jsonl(tmp_path / "c.jsonl", rows)
    fs.put(str(local), f"{bucket}/corpora/demo/c.jsonl")
    fs.put(str(FLAGS / "greece.png"), f"{bucket}/corpora/demo/images/greece.png")
    cfg = EmbedConfig.model_validate({**CFG.model_dump(), "s3": {
        "endpoint_url": s3_server["endpoint_url"], "key": "testing", "secret": "testing"},
        "lstm_epochs": 2})
    out = f"s3://{bucket}/runs/emb"
    temps = _lstm_temps()
    report = run_embed(f"s3://{bucket}/corpora/demo/c.jsonl", out, cfg, log=quiet)
    assert (report.rows_in, report.embedded, report.quarantined) == (13, 12, 1)
    emb = read_embeddings(out, cfg=cfg)
    assert emb["text"].num_rows == 9 and emb["image"].num_rows == 1
    assert emb["sequence"].num_rows == 2  # melody LSTM trained, saved to S3, loaded by actors
    assert fs.exists(f"{bucket}/runs/emb/models/lstm/lstm.pt")
    assert fs.exists(f"{bucket}/runs/emb/manifest.json")
    q = read_quarantine(out, cfg).to_pylist()
    assert q[0]["item_id"] == "lost-flag" and q[0]["reason"].startswith("uri: file not found")
    # resume on S3 too
    again = run_embed(f"s3://{bucket}/corpora/demo/c.jsonl", out, cfg, log=quiet)
    assert again.skipped_done == 12 and again.embedded == 12
    # the model was saved to and loaded from the bucket without local copies left behind
    assert _lstm_temps() == temps


def test_s3_melody_lstm_with_ray_train_workers(ray_session, s3_server, tmp_path):
    """lstm_workers > 0 on S3: the parsing tasks write the sample to the bucket, and
    the Ray Train workers read their shards of it there (their config carries its
    path, not the melodies); the model lands in the bucket and encodes the tunes."""
    fs, bucket = s3_server["fs"], s3_server["bucket"]
    tunes = ["GABc|d2B2|c2A2|G4|", "cBAG|F2A2|G2E2|C4|", "EFGA|B2G2|A2F2|E4|",
             "dcBA|G2B2|A2c2|d4|", "CDEF|G2E2|F2D2|C4|", "AGFE|D2F2|E2C2|D4|"]
    rows = []
    for i, tune in enumerate(tunes):
        (tmp_path / f"t{i}.abc").write_text(f"X:{i}\nT:t{i}\nM:2/4\nL:1/8\nK:C\n{tune}\n")
        fs.put(str(tmp_path / f"t{i}.abc"), f"{bucket}/tunes/music/t{i}.abc")
        rows.append({"item_id": f"tune-{i}", "culture": ["Greek", "Irish", "Chinese"][i % 3],
                     "modality": "sequence", "uri": f"music/t{i}.abc"})
    fs.put(str(write_jsonl(tmp_path / "c.jsonl", rows)), f"{bucket}/tunes/c.jsonl")
    cfg = EmbedConfig.model_validate({**CFG.model_dump(), "s3": {
        "endpoint_url": s3_server["endpoint_url"], "key": "testing", "secret": "testing"},
        "lstm_epochs": 2, "lstm_workers": 2})
    out = f"s3://{bucket}/runs/tunes"
    temps = _lstm_temps()
    report = run_embed(f"s3://{bucket}/tunes/c.jsonl", out, cfg, log=quiet)
    assert (report.embedded, report.quarantined) == (6, 0)
    sample = sorted(f for f in fs.find(f"{bucket}/runs/tunes/models/lstm-sample")
                    if f.endswith(".parquet"))
    assert sample and sum(pq.ParquetFile(fs.open(f, "rb")).metadata.num_rows
                          for f in sample) == 6
    assert fs.exists(f"{bucket}/runs/tunes/models/lstm/lstm.pt")
    seq = read_embeddings(out, "sequence", cfg=cfg)["sequence"]
    assert seq.num_rows == 6 and set(seq.column("encoder").to_pylist()) == {"lstm"}
    assert _lstm_temps() == temps  # Ray Train's local folder (and checkpoints) removed


def _lstm_temps() -> set[str]:
    """The melody model's temporary folders on this machine (Ray's workers share it)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("culturesim-lstm-*")}


def test_demo_corpus_runs_through_the_job(ray_session, tmp_path):
    from culturesim_ray.demo import CULTURES, build_demo_corpus

    corpus = build_demo_corpus(tmp_path / "corpus", per_culture_per_lang=1, tunes_per_culture=4)
    table = pq.read_table(corpus)
    assert set(table.column("culture").to_pylist()) == set(CULTURES)
    assert set(table.column("lang").drop_null().to_pylist()) == {"en", "fr", "es"}
    assert table.column("modality").to_pylist().count("sequence") == 12
    out = tmp_path / "out"
    report = run_embed(str(corpus), str(out), CFG.model_copy(update={"lstm_epochs": 2}),
                       log=quiet)
    assert report.quarantined == 0 and report.embedded == table.num_rows
    seq = read_embeddings(str(out), "sequence")["sequence"]
    assert seq.num_rows == 12 and set(seq.column("encoder").to_pylist()) == {"lstm"}
    assert (out / "models" / "lstm" / "lstm.pt").exists()
    # the LSTM's sample: written by the parsing tasks, every tune (in the staged
    # partitions' order); the vocabulary summed from their counts is the one built
    # over the sample
    from culturesim_ray.encoders.music import Vocabulary
    from culturesim_ray.encoders.sequence import read_tokens
    from culturesim_ray.pipeline.train_lstm import read_sample_tokens

    sample = read_sample_tokens(str(out / "models" / "lstm-sample"))
    uris = [r["uri"] for r in table.to_pylist() if r["modality"] == "sequence"]
    assert sorted(sample) == sorted(read_tokens(str(tmp_path / "corpus" / u)) for u in uris)
    assert Vocabulary.load(out / "models" / "lstm" / "vocab.json").itos == \
        Vocabulary.build(sample).itos
    # the music reaches the all-pairs output
    from culturesim_ray.config import AllPairsConfig
    from culturesim_ray.pipeline.allpairs import run_allpairs

    run_allpairs(str(out), str(tmp_path / "ap"), AllPairsConfig(k=2, modality="sequence"),
                 log=quiet)
    pairs = pq.read_table(tmp_path / "ap" / "pairs.parquet").to_pylist()
    assert {r["culture_a"] for r in pairs} == {"Chinese", "German", "Russian"}
    # and the trained model continues a melody from the command line
    from culturesim_ray.cli import main

    tune = next((tmp_path / "corpus" / "music").glob("*.abc"))
    assert main(["continue-melody", str(tune), "--model", str(out / "models" / "lstm"),
                 "--out", str(tmp_path / "more.mid"), "--steps", "8"]) == 0
    from culturesim_ray.encoders.music import parse_events

    longer = parse_events((tmp_path / "more.mid").read_bytes(), "more.mid")
    assert len(longer) >= len(parse_events(tune.read_text(), tune.name))


def test_rerun_with_other_settings_is_refused_naming_the_field(ray_session, small_corpus,
                                                               tmp_path):
    from culturesim_ray.fingerprint import SettingsMismatchError

    cfg = CFG.model_copy(update={"text_encoder": "tfidf", "tfidf_dim": 4})
    out = tmp_path / "out"
    run_embed(str(small_corpus), str(out), cfg, log=quiet)
    with pytest.raises(SettingsMismatchError, match=r"embeddings/text was written with other settings \(encoder: 'tfidf' -> 'minilm'"):
        run_embed(str(small_corpus), str(out), CFG.model_copy(update={"text_encoder": "minilm"}),
                  log=quiet)
    with pytest.raises(SettingsMismatchError, match=r"tfidf_dim: 4 -> 6"):
        run_embed(str(small_corpus), str(out), cfg.model_copy(update={"tfidf_dim": 6}), log=quiet)
    # nothing was mixed: the vectors are still the 4-d ones
    assert read_embeddings(str(out), "text")["text"].schema.field("vector").type.list_size == 4
    # --overwrite replaces the text vectors only (the images were made the same way)
    report = run_embed(str(small_corpus), str(out), cfg.model_copy(update={"tfidf_dim": 6}),
                       log=quiet, overwrite=True)
    assert report.embedded == 12 and report.skipped_done == 3
    assert read_embeddings(str(out), "text")["text"].schema.field("vector").type.list_size == 6


def test_a_broken_file_in_a_corpus_folder_fails_naming_file_and_line(ray_session, tmp_path):
    from culturesim_ray.tables import CorpusFormatError

    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", corpus_rows(with_image=False))
    (folder / "b.jsonl").write_text('{"item_id": "z", "culture": "Greek"}\n{not json\n')
    with pytest.raises(CorpusFormatError, match=r"b.jsonl:2: not valid JSON"):
        run_embed(str(folder), str(tmp_path / "out"), CFG, log=quiet)
    assert not (tmp_path / "out" / "embeddings").exists()  # failed before any vector


def test_texts_the_english_encoder_cuts_into_characters_get_a_note(ray_session, small_corpus,
                                                                   tmp_path):
    ru = ["Москва — столица России и крупнейший город страны.",
          "Борщ — суп из свёклы, капусты и других овощей.",
          "Балалайка — русский народный струнный инструмент."]
    rows = corpus_rows() + [{"item_id": f"ru-{i}", "culture": "Russian", "modality": "text",
                             "text": t} for i, t in enumerate(ru * 2)]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    minilm = CFG.model_copy(update={"text_encoder": "minilm"})  # given: `auto` would pick e5
    report = run_embed(str(corpus), str(out), minilm, log=quiet)
    assert report.quarantined == 0
    cov = json.loads((out / "manifest.json").read_text())["text_coverage"]
    assert (cov["encoder"], cov["sampled"], cov["poorly_covered"]) == ("minilm", 15, 6)
    assert cov["scripts"] == {"CYRILLIC": 6}
    assert len(report.notes) == 1 and report.notes[0].startswith("40% of 15 sampled texts")
    # the English texts alone get none
    report = run_embed(str(small_corpus), str(tmp_path / "en"), CFG, log=quiet)
    assert report.notes == []
    assert json.loads((tmp_path / "en" / "manifest.json").read_text())["text_coverage"][
        "poorly_covered"] == 0


def test_integer_ids_are_embedded_and_a_corpus_nothing_survives_exits_1(ray_session, tmp_path,
                                                                          capsys):
    """An int64 item_id column is read as strings; a corpus whose every row fails on one
    field (here a CSV without a modality column) exits 1 and names that field."""
    import pyarrow as pa

    from culturesim_ray.cli import main

    pq.write_table(pa.table({"item_id": [3, 1, 2], "culture": ["A", "B", "C"],
                             "modality": ["text"] * 3,
                             "text": ["olive oil", "rye bread", "rice wine"]}),
                   tmp_path / "ids.parquet")
    report = run_embed(str(tmp_path / "ids.parquet"), str(tmp_path / "ids"),
                       CFG.model_copy(update={"text_encoder": "tfidf"}), log=quiet)
    assert (report.embedded, report.quarantined) == (3, 0)
    assert sorted(read_embeddings(str(tmp_path / "ids"))["text"].column("item_id").to_pylist()) \
        == ["1", "2", "3"]
    (tmp_path / "nomod.csv").write_text("item_id,culture,text\n1,A,olive oil\n2,B,rye bread\n")
    capsys.readouterr()
    assert main(["embed", str(tmp_path / "nomod.csv"), "--out", str(tmp_path / "nomod"),
                 "--text-encoder", "tfidf"]) == 1
    out = capsys.readouterr().out
    assert "embedded 0, quarantined 2 of 2 rows (modality: 2)" in out
    assert ("embed: error: nothing was embedded: all 2 rows are in the quarantine (modality: 2); "
            f"for example {tmp_path / 'nomod.csv'}:2: modality: missing (in every row: does the "
            "corpus lack a 'modality' column") in out


def test_texts_longer_than_the_encoder_reads_get_a_note(ray_session, tmp_path):
    """A text past max_windows windows: the job says its end is not read, records the
    counts in the manifest and the window settings in the fingerprint."""
    long = " ".join(["The Ottoman Empire ruled Anatolia and the Balkans from Istanbul."] * 40)
    rows = corpus_rows(with_image=False) + [
        {"item_id": "long-1", "culture": "Turkish", "modality": "text", "text": long}]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = CFG.model_copy(update={"max_windows": 1})
    report = run_embed(str(corpus), str(tmp_path / "out"), cfg, log=quiet)
    assert report.quarantined == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    length = manifest["text_coverage"]["length"]
    assert length == {"tokens_per_window": 254, "max_windows": 1, "longer_than_one_window": 1,
                      "longer_than_read": 1}
    assert [n for n in report.notes if "longer than the 254 tokens minilm reads" in n]
    fp = json.loads((tmp_path / "out" / "fingerprint.json").read_text())
    assert fp["text"]["max_windows"] == 1
