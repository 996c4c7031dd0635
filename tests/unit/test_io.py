"""Corpus reading: formats, relative uris, and whole-file errors naming file and line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culturesim_ray import io
from culturesim_ray.io import CorpusFormatError


def test_jsonl_csv_parquet_read_the_same_rows(tmp_path):
    rows = [{"item_id": "a", "culture": "Greek", "modality": "text", "text": "Athens, city",
             "uri": None},
            {"item_id": "b", "culture": "Persian", "modality": "image", "uri": "img/b.png"}]
    (tmp_path / "c.jsonl").write_text(
        '{"item_id": "a", "culture": "Greek", "modality": "text", "text": "Athens, city"}\n\n'
        '{"item_id": "b", "culture": "Persian", "modality": "image", "uri": "img/b.png"}\n')
    (tmp_path / "c.csv").write_text(
        'item_id,culture,modality,text,uri\na,Greek,text,"Athens, city",\n'
        "b,Persian,image,,img/b.png\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    for name, first_line in (("c.jsonl", ":1"), ("c.csv", ":2"), ("c.parquet", "#0")):
        got = io.read_corpus_rows(str(tmp_path / name))
        assert [r["item_id"] for r in got] == ["a", "b"]
        assert got[0]["text"] == "Athens, city"
        assert got[0]["_source_row"].endswith(name + first_line)
        # relative uris resolve against the corpus file's folder
        assert got[1]["uri"] == str(tmp_path / "img" / "b.png")


def test_spreadsheet_exports_read_the_same_rows_as_a_comma_csv(tmp_path):
    """What spreadsheets write: `;` where the comma is the decimal mark, tab-separated
    `.tsv`, Excel's "Unicode Text" (UTF-16 with its mark, tabs, CRLF), UTF-8 with a mark."""
    header = ["item_id", "culture", "modality", "text"]
    rows = [["a", "Greek", "text", "Athens, city; \"the\" capital"],
            ["b", "Café culture", "text", "Wien | Kaffeehaus"]]

    def write(delimiter: str) -> str:
        import csv
        import io as _io

        buf = _io.StringIO()
        w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        w.writerows([header, *rows])
        return buf.getvalue()

    files = {"comma.csv": write(",").encode("utf-8"),
             "semicolon.csv": write(";").encode("utf-8"),
             "bar.csv": write("|").encode("utf-8"),
             "tabs.tsv": write("\t").encode("utf-8"),
             "unicode.tsv": write("\t").encode("utf-16"),
             "bom.csv": write(";").encode("utf-8-sig")}
    assert files["unicode.tsv"][:2] in (b"\xff\xfe", b"\xfe\xff")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        got = io.read_corpus_rows(str(tmp_path / name))
        assert [[r[h] for h in header] for r in got] == rows, name
        assert got[1]["_source_row"].endswith(f"{name}:3")


@pytest.mark.parametrize(("header", "delimiter"), [
    ("item_id,culture,text", ","), ("item_id;culture;text", ";"), ("item_id\tculture", "\t"),
    ("item_id|culture", "|"), ("text", ","), ('"id;x",culture,text', ","),
    ('"name, full";culture', ";"), ("a;b,c;d", ";"), ("a,b;c", ","),
])
def test_csv_delimiter_is_the_one_giving_the_most_header_columns(header, delimiter):
    assert io.csv_delimiter(header) == delimiter


def test_a_file_in_a_legacy_encoding_names_the_byte_and_the_cure(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes("item_id,culture,text\na,French,Caf\u00e9\n".encode("cp1252"))
    with pytest.raises(CorpusFormatError, match=r'c.csv:2: not UTF-8 text \(byte 0xe9 at '
                       r'position 13 of the line\); save the file as UTF-8 \(Excel: "CSV UTF-8"\)'):
        io.read_corpus_rows(str(p))


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", b'{"item_id": "a"}\n{"item_id": "b",\n', r"bad.jsonl:2: not valid JSON"),
    ("list.jsonl", b'{"item_id": "a"}\n[1, 2]\n', r"list.jsonl:2: expected a JSON object"),
    ("fake.parquet", b"item_id,culture\n", r"fake.parquet: not a readable Parquet file"),
    ("c.csv", b"item_id,culture\na,Greek\nb,Persian,extra\n", r"c.csv:3: more fields"),
    ("u.jsonl", b'{"item_id": "a"}\n{"text": "\xff\xfe"}\n', r"u.jsonl:2: not UTF-8"),
])
def test_malformed_file_names_file_and_line(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(CorpusFormatError, match=message):
        io.read_corpus_rows(str(p))


def test_directory_reads_every_corpus_file_in_order(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"item_id": "b"}\n')
    (tmp_path / "a.jsonl").write_text('{"item_id": "a"}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r["item_id"] for r in io.read_corpus_rows(str(tmp_path))] == ["a", "b"]


def test_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        io.read_corpus_rows(str(tmp_path / "nope.jsonl"))


def test_existing_uris_local(tmp_path):
    (tmp_path / "x.png").write_bytes(b"1")
    found = io.existing_uris([str(tmp_path / "x.png"), str(tmp_path / "y.png")])
    assert found == {str(tmp_path / "x.png")}


def test_a_writer_killed_mid_write_leaves_the_file_whole(tmp_path):
    """SIGKILL while a file is being rewritten: readers still see the old file whole
    (an in-place write would leave it torn)."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "t.parquet"
    io.write_table(pa.table({"x": [1, 2, 3]}), str(path))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom culturesim_ray import io\n"
         "with io.atomic_open(sys.argv[1]) as fh:\n"
         "    fh.write(b'PAR1 half a file'); fh.flush(); print('ready', flush=True)\n"
         "    time.sleep(60)\n", str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["t.parquet"]
    io.write_json({"a": 1}, str(tmp_path / "m.json"))
    assert io.read_json(str(tmp_path / "m.json")) == {"a": 1}


def test_publish_dir_replaces_a_folder_whole_or_leaves_it_as_it_was(tmp_path):
    from culturesim_ray.publish import publish_dir

    target = tmp_path / "models" / "lstm"
    with publish_dir(target) as d:
        (d / "a.txt").write_text("old a")
        (d / "b.txt").write_text("old b")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(RuntimeError, match="killed"):
        with publish_dir(target) as d:
            (d / "a.txt").write_text("new a")
            raise RuntimeError("killed between two files")
    assert (target / "a.txt").read_text() == "old a"  # untouched, not half new
    with publish_dir(target) as d:
        (d / "a.txt").write_text("new a")
    assert [p.name for p in target.iterdir()] == ["a.txt"]  # the new folder, whole
    assert (target / "a.txt").read_text() == "new a"
    assert sorted(p.name for p in target.parent.iterdir()) == ["lstm"]  # no temp left


def test_jobs_that_need_local_run_directories_refuse_s3_before_doing_anything(tmp_path,
                                                                               monkeypatch,
                                                                               capsys):
    """train --out, evaluate, report, serve, align, adapt and add-theme read or write
    local files (memory-mapped, resumed from):
    an s3:// path is a clear error, not a local directory named 's3:' that the job
    writes while its summary names the bucket."""
    from culturesim_ray.io import require_local
    from culturesim_ray.pipeline.serve_deploy import run_local
    from culturesim_ray.pipeline.train import run_train
    from culturesim_ray.report.build import build_report
    from culturesim_ray.report.evaluate import run_evaluation

    monkeypatch.chdir(tmp_path)
    require_local(tmp_path / "run", "run", "reason")  # a local path passes
    with pytest.raises(ValueError, match=r"train --out s3://b/t: must be a local or mounted "
                                         r"path, not S3 \(the graph"):
        run_train(str(tmp_path / "embed"), "s3://b/t")
    with pytest.raises(ValueError, match="evaluate: run directory s3a://b/r: must be a local"):
        run_evaluation("s3a://b/r", "demo")
    with pytest.raises(ValueError, match="evaluate --out s3://b/e: must be a local"):
        run_evaluation(str(tmp_path), "demo", out="s3://b/e")
    with pytest.raises(ValueError, match="report: run directory s3://b/r: must be a local"):
        build_report("s3://b/r")
    with pytest.raises(ValueError, match="serve: run directory s3://b/r: must be a local"):
        run_local("s3://b/r", blocking=False)
    from culturesim_ray.cli_align import run_align
    from culturesim_ray.pipeline.adapt import run_adapt
    from culturesim_ray.pipeline.add_theme import run_add_theme

    with pytest.raises(ValueError, match="align --out s3://b/a: must be a local"):
        run_align("s3://b/a")
    with pytest.raises(ValueError, match="adapt --out s3://b/a: must be a local"):
        run_adapt(str(tmp_path / "corpus.jsonl"), "s3://b/a")
    with pytest.raises(ValueError, match="add-theme: run directory s3://b/r: must be a local"):
        run_add_theme("s3://b/r", "food")
    from culturesim_ray.cli import main

    assert main(["demo", "--out", "s3://b/d"]) == 2
    assert "demo --out s3://b/d: must be a local" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no 's3:' directory


def test_add_theme_item_lists_read_as_the_corpus_reader_reads_tables(tmp_path):
    from culturesim_ray.pipeline.add_theme import read_item_ids

    (tmp_path / "ids.txt").write_text("# chosen\nx-1\n\nx-2\n")
    (tmp_path / "ids.csv").write_text("culture;item_id\nGreek;x-1\nGreek;x-2\n")
    (tmp_path / "ids.tsv").write_text("item_id\tculture\nx-1\tGreek\nx-2\tGreek\n")
    pq.write_table(pa.table({"item_id": [1, 2]}), tmp_path / "ids.parquet")
    for name in ("ids.txt", "ids.csv", "ids.tsv"):
        assert read_item_ids(str(tmp_path / name)) == ["x-1", "x-2"], name
    assert read_item_ids(str(tmp_path / "ids.parquet")) == ["1", "2"]
    (tmp_path / "bad.csv").write_text("id;culture\nx-1;Greek\n")
    with pytest.raises(ValueError, match=r"bad.csv: no item_id column \(columns: \['id', "
                                         r"'culture'\]\)"):
        read_item_ids(str(tmp_path / "bad.csv"))


def test_uris_written_on_windows(tmp_path):
    """A relative path with backslashes only reads as the same path with slashes; a
    drive path is kept and its quarantine reason names the cure."""
    from culturesim_ray.ingest import missing_reason

    base = str(tmp_path)
    assert io.resolve_uri("images\\a.png", base) == str(tmp_path / "images" / "a.png")
    assert io.resolve_uri(".\\images\\a.png", base) == str(tmp_path / "images" / "a.png")
    assert io.resolve_uri("images\\a.png", "s3://b/corpus") == "s3://b/corpus/images/a.png"
    assert io.resolve_uri("odd/na\\me.png", base) == str(tmp_path / "odd" / "na\\me.png")
    for drive in ("C:\\Users\\me\\a.png", "d:/data/a.png"):
        assert io.resolve_uri(drive, base) == drive
        assert missing_reason(drive).endswith("(a Windows drive path: write it relative to "
                                              "the corpus file, or copy the files where the "
                                              "job runs)")
    assert missing_reason("/data/a.png") == "uri: file not found or not readable: /data/a.png"


def test_a_json_file_holding_one_array_reads_as_its_objects(tmp_path):
    """`json.dump(rows)` and pandas' `to_json(orient="records")`, pretty-printed or not,
    UTF-8 or UTF-16: the same rows as JSONL, each named file#index."""
    import json

    rows = [{"item_id": "a", "culture": "Greek", "modality": "text", "text": "Athens"},
            {"item_id": "b", "culture": "Persian", "modality": "image", "uri": "img/b.png"}]
    (tmp_path / "flat.json").write_text(json.dumps(rows))
    (tmp_path / "pretty.json").write_text("\n  " + json.dumps(rows, indent=2))
    (tmp_path / "wide.json").write_bytes(json.dumps(rows).encode("utf-16"))
    for name in ("flat.json", "pretty.json", "wide.json"):
        got = io.read_corpus_rows(str(tmp_path / name))
        assert [r["item_id"] for r in got] == ["a", "b"], name
        assert got[1]["_source_row"] == f"{tmp_path / name}#1"
        assert got[1]["uri"] == str(tmp_path / "img" / "b.png")
    for content, message in (('[{"item_id": "a"}, 3]', r"bad.json#1: expected a JSON object"),
                             ('[{"item_id": "a"},\n {"item_id": }]', r"bad.json:2: not valid JSON"),
                             ('[{"text": "\\ud800"}]', r"bad.json#0: not valid JSON text")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(CorpusFormatError, match=message):
            io.read_corpus_rows(str(tmp_path / "bad.json"))
