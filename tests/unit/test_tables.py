"""The tables users give (culturesim_ray.tables): formats, delimiters, encodings, relative
uris, and whole-file errors naming file and line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culturesim_ray import tables
from culturesim_ray.tables import CorpusFormatError


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
        got = tables.read_corpus_rows(str(tmp_path / name))
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
        got = tables.read_corpus_rows(str(tmp_path / name))
        assert [[r[h] for h in header] for r in got] == rows, name
        assert got[1]["_source_row"].endswith(f"{name}:3")


@pytest.mark.parametrize(("header", "delimiter"), [
    ("item_id,culture,text", ","), ("item_id;culture;text", ";"), ("item_id\tculture", "\t"),
    ("item_id|culture", "|"), ("text", ","), ('"id;x",culture,text', ","),
    ('"name, full";culture', ";"), ("a;b,c;d", ";"), ("a,b;c", ","),
])
def test_csv_delimiter_is_the_one_giving_the_most_header_columns(header, delimiter):
    assert tables.csv_delimiter(header) == delimiter


def test_a_file_in_a_legacy_encoding_names_the_byte_and_the_cure(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes("item_id,culture,text\na,French,Caf\u00e9\n".encode("cp1252"))
    with pytest.raises(CorpusFormatError, match=r'c.csv:2: not UTF-8 text \(byte 0xe9 at '
                       r'position 13 of the line\); save the file as UTF-8 \(Excel: "CSV UTF-8"\)'):
        tables.read_corpus_rows(str(p))


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
        tables.read_corpus_rows(str(p))


def test_directory_reads_every_corpus_file_in_order(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"item_id": "b"}\n')
    (tmp_path / "a.jsonl").write_text('{"item_id": "a"}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "~$c.xlsx").write_bytes(b"\x00owner")  # Excel's lock file beside an open workbook
    assert [r["item_id"] for r in tables.read_corpus_rows(str(tmp_path))] == ["a", "b"]


def test_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        tables.read_corpus_rows(str(tmp_path / "nope.jsonl"))


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
    from culturesim_ray.uris import resolve_uri

    base = str(tmp_path)
    assert resolve_uri("images\\a.png", base) == str(tmp_path / "images" / "a.png")
    assert resolve_uri(".\\images\\a.png", base) == str(tmp_path / "images" / "a.png")
    assert resolve_uri("images\\a.png", "s3://b/corpus") == "s3://b/corpus/images/a.png"
    assert resolve_uri("odd/na\\me.png", base) == str(tmp_path / "odd" / "na\\me.png")
    for drive in ("C:\\Users\\me\\a.png", "d:/data/a.png"):
        assert resolve_uri(drive, base) == drive
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
        got = tables.read_corpus_rows(str(tmp_path / name))
        assert [r["item_id"] for r in got] == ["a", "b"], name
        assert got[1]["_source_row"] == f"{tmp_path / name}#1"
        assert got[1]["uri"] == str(tmp_path / "img" / "b.png")
    for content, message in (('[{"item_id": "a"}, 3]', r"bad.json#1: expected a JSON object"),
                             ('[{"item_id": "a"},\n {"item_id": }]', r"bad.json:2: not valid JSON"),
                             ('[{"text": "\\ud800"}]', r"bad.json#0: not valid JSON text")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(CorpusFormatError, match=message):
            tables.read_corpus_rows(str(tmp_path / "bad.json"))


def test_an_excel_workbook_reads_its_first_sheet_with_excel_s_row_numbers(tmp_path):
    import datetime

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["item_id", "culture", "modality", "text", "uri", "era_start", None])
    sheet.append([7, "Greek", "text", "Athens, city", None, 1800, None])
    sheet.append([None, None, None, None, None, None, None])  # a blank row is skipped
    sheet.append(["b", "Persian", "Image", None, "img/b.png", datetime.datetime(1900, 1, 1)])
    book.create_sheet("notes").append(["not", "read"])
    book.save(tmp_path / "c.xlsx")
    got = tables.read_corpus_rows(str(tmp_path / "c.xlsx"))
    assert [r["_source_row"] for r in got] == [f"{tmp_path / 'c.xlsx'}:2",
                                               f"{tmp_path / 'c.xlsx'}:4"]
    assert got[0]["item_id"] == 7 and got[0]["text"] == "Athens, city"
    assert got[0]["era_start"] == 1800 and got[0]["uri"] is None
    assert got[1]["uri"] == str(tmp_path / "img" / "b.png")
    assert got[1]["era_start"] == datetime.datetime(1900, 1, 1)  # the contract names it
    assert set(got[1]) == {"item_id", "culture", "modality", "text", "uri", "era_start",
                           "_source_row"}
    # a folder reads workbooks beside the other formats
    assert len(tables.read_corpus_rows(str(tmp_path))) == 2
    sheet.append(["c", "Greek", "text", "x", None, None, "stray"])
    book.save(tmp_path / "stray.xlsx")
    with pytest.raises(CorpusFormatError, match=r"stray.xlsx:5: more fields than the header"):
        tables.read_corpus_rows(str(tmp_path / "stray.xlsx"))
    (tmp_path / "fake.xlsx").write_text("item_id,culture\n")
    with pytest.raises(CorpusFormatError, match=r"fake.xlsx: not a readable .xlsx workbook"):
        tables.read_corpus_rows(str(tmp_path / "fake.xlsx"))


def test_a_uri_column_named_as_a_spreadsheet_writes_it_is_resolved_too(tmp_path):
    (tmp_path / "c.csv").write_text("Item_ID,Culture,Modality,URI\na,Greek,Image,img\\a.png\n")
    (row,) = tables.read_corpus_rows(str(tmp_path / "c.csv"))
    assert row["URI"] == str(tmp_path / "img" / "a.png")


def test_workbooks_as_pandas_and_published_tables_write_them(tmp_path):
    """pandas' `to_excel` (an index column under a blank header) reads as its CSV
    does; a gold matrix with a blank corner reads as the same pairs as its CSV."""
    import pandas as pd

    from culturesim_ray.report.gold_file import read_gold_rows, validate_gold

    frame = pd.DataFrame({"item_id": ["a", "b"], "culture": ["Greek", "Irish"],
                          "modality": ["text", "text"], "text": ["x", "y"]})
    frame.to_excel(tmp_path / "c.xlsx")
    frame.to_csv(tmp_path / "c.csv")
    strip = [{k: v for k, v in r.items() if k != "_source_row"}
             for r in tables.read_corpus_rows(str(tmp_path / "c.csv"))]
    assert [{k: v for k, v in r.items() if k != "_source_row"}
            for r in tables.read_corpus_rows(str(tmp_path / "c.xlsx"))] == [
        {**r, "": int(r[""])} for r in strip]
    names = ["Aa", "Bb", "Cc"]
    matrix = pd.DataFrame([[0, 1.5, 4.0], [1.5, 0, 2.0], [4.0, 2.0, 0]], index=names,
                          columns=names)
    matrix.to_excel(tmp_path / "g.xlsx")
    matrix.to_csv(tmp_path / "g.csv")
    pairs = [sorted(validate_gold(read_gold_rows(tmp_path / f), names).pairs)
             for f in ("g.xlsx", "g.csv")]
    assert pairs[0] == pairs[1] and len(pairs[0]) == 3


def test_spreadsheets_and_utf16_read_from_s3(s3_server, tmp_path):
    """The workbook (zip: the reader seeks) and the byte-order-mark sniffing (it reads
    ahead and seeks back) on an S3 object, through moto's real HTTP endpoint."""
    import pandas as pd

    from culturesim_ray.config import S3Config

    fs, bucket = s3_server["fs"], s3_server["bucket"]
    frame = pd.DataFrame({"Item_ID": ["a", "b"], "Culture": ["Greek", "Irish"],
                          "Modality": ["text", "image"], "Text": ["x", None],
                          "URI": [None, "img\\b.png"]})
    frame.to_excel(tmp_path / "c.xlsx", index=False)
    (tmp_path / "c.tsv").write_bytes(frame.to_csv(sep="\t", index=False).encode("utf-16"))
    s3 = S3Config(endpoint_url=s3_server["endpoint_url"], key="testing", secret="testing")
    for name in ("c.xlsx", "c.tsv"):
        fs.put(str(tmp_path / name), f"{bucket}/sheets/{name}")
        rows = tables.read_corpus_rows(f"s3://{bucket}/sheets/{name}", s3)
        assert [r["Item_ID"] for r in rows] == ["a", "b"], name
        assert rows[1]["URI"] == f"s3://{bucket}/sheets/img/b.png"


def test_a_utf16_stream_is_let_go_of_without_leaks_or_errors(tmp_path):
    """The UTF-16 reader's text wrapper neither closes the caller's stream nor leaks:
    read whole, the stream stays open; abandoned after the caller closed the stream
    (a generator collected late), closing it raises nothing."""
    import gc
    import warnings

    from culturesim_ray.tables import _decoded_lines

    path = tmp_path / "u16.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ResourceWarning or an unraisable error fails it
        with path.open("rb") as fh:
            assert list(_decoded_lines(fh, "u16.csv")) == ["a,b\n", "1,2\n"]
            assert not fh.closed
        fh = path.open("rb")
        lines = _decoded_lines(fh, "u16.csv")
        assert next(lines) == "a,b\n"
        fh.close()
        lines.close()
        del lines
        gc.collect()
