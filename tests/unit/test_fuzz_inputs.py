"""Property-based fuzzing (hypothesis) of every input a user or client controls,
through the pure validators: corpus files (random bytes, wrong encodings, BOMs,
huge fields, nested and wrong types, NaN/inf, empty files, mixed schemas across
a folder), gold files, relations files, config YAML and HTTP request bodies.

Invariants: nothing raises but the input error the callers turn into a message
(CorpusFormatError, GoldError, RelationsError, ValueError naming the file/row/field);
corpus rows in = good + quarantined, each quarantined row naming its field, reason
and source row; a request body is parsed or answered with a 4xx naming its part."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturesim_ray import ingest, tables
from culturesim_ray.config import AllPairsConfig, EmbedConfig, load_yaml
from culturesim_ray.graph.hetero import RelationsError, read_relations
from culturesim_ray.report.evaluate import GoldError, read_gold_rows, validate_gold
from culturesim_ray.serving.api import SimilarRequest, parse_similar
from culturesim_ray.uris import UriRoots

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- strategies
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\ufeff", "\u0000", "\ud800", "\U0001f600" * 3, "é" * 5,
                     "\u202e" + "x", "a\r\nb", "..", "../../etc/passwd", "/etc/passwd",
                     "x" * 200_000, "NaN", "1e999", "null", "[", "{}"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30),
                                                          max_value=10 ** 30),
                    st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
FIELDS = ["item_id", "culture", "modality", "text", "uri", "lang", "era_start", "era_end",
          "themes", "artifact_id", "source", "extra"]
GOOD_VALUES = {"item_id": st.text(min_size=1, max_size=6), "culture": st.sampled_from(["A", "B"]),
               "modality": st.sampled_from(["text", "image", "sequence", "video", " text "]),
               "text": st.text(max_size=30), "themes": st.lists(st.text(max_size=5), max_size=3)}
ROW = st.fixed_dictionaries({}, optional={
    f: st.one_of(GOOD_VALUES.get(f, SCALARS), JSONISH) for f in FIELDS})
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]


def _dump_jsonl(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r, allow_nan=True) for r in rows) + "\n"


def _dump_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io as stdio

    buf = stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                         for k, v in r.items()})
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def ingest_folder(folder: Path) -> tuple[int, pa.Table] | str:
    """The embed job's pure read path over a folder: every file read in small chunks
    and validated, then duplicates resolved. (rows read, staged rows), or the
    CorpusFormatError message of an unreadable file."""
    roots = UriRoots.of(str(folder))
    rows_in, parts = 0, []
    try:
        for index, file in enumerate(tables.list_corpus_files(str(folder))):
            pos = 0
            for chunk in tables.iter_corpus_file(file, chunk_rows=3):
                parts.append(ingest.read_validated(chunk, index, pos, roots))
                pos += len(chunk)
                rows_in += len(chunk)
    except tables.CorpusFormatError as exc:
        return str(exc)
    if not parts:
        return rows_in, ingest.STAGED_SCHEMA.empty_table()
    return rows_in, ingest.resolve_partition(pa.concat_tables(parts))


def check_balanced(folder: Path) -> None:
    result = ingest_folder(folder)
    if isinstance(result, str):  # a file that cannot be read: named, with its line
        assert str(folder) in result, result
        return
    rows_in, staged = result
    assert staged.num_rows == rows_in  # rows in = to embed + quarantined
    bad = ingest.quarantine_of_staged(staged)
    good = ingest.select(staged, "todo").num_rows
    assert good + bad.num_rows == rows_in
    for rec in bad.to_pylist():
        assert rec["field"] and rec["reason"], rec
        assert rec["source_row"].startswith(str(folder)), rec  # file:line or file#row


# ---------------------------------------------------------------- corpus files
@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
def test_random_bytes_as_a_corpus_file(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), "c" + suffix, data)
        check_balanced(Path(d))


@FUZZ
@given(rows=st.lists(ROW, max_size=8), fmt=st.sampled_from(["jsonl", "csv"]),
       encoding=st.sampled_from(ENCODINGS), bom=st.booleans())
def test_rows_of_any_shape_in_any_encoding(rows: list[dict[str, Any]], fmt: str,
                                           encoding: str, bom: bool) -> None:
    text = _dump_jsonl(rows) if fmt == "jsonl" else _dump_csv(rows)
    data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf")
                       else "replace")
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), f"c.{fmt}", (b"\xef\xbb\xbf" if bom else b"") + data)
        check_balanced(Path(d))


@FUZZ
@given(lines=st.lists(st.one_of(
    st.sampled_from(["[" * 5000 + "]" * 5000, '{"a": ' * 3000 + "1" + "}" * 3000,
                     '{"item_id": ' + "9" * 5000 + "}", '{"item_id": "\\ud800"}',
                     '{"item_id": "x", "culture": NaN}', "1e999", "[]", "null", "",
                     '{"item_id": "n", "culture": "A", "modality": "image", "uri": "a\\u0000b"}',
                     '{"item_id": "a", "culture": "A", "modality": "text", "text": "t", '
                     '"era_start": 1e30, "themes": "[' + "[" * 3000 + '"}',
                     '{"item_id": "b", "culture": "A", "modality": "text", "text": "t", '
                     '"era_start": ' + "9" * 30 + "}"]),
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True))), max_size=5))
def test_hostile_json_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), "c.jsonl", "\n".join(lines).encode("utf-8", "surrogatepass"))
        check_balanced(Path(d))


@FUZZ
@given(columns=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from([
    pa.array(["a", None, "\u00e9"]), pa.array([1, 2, 3]), pa.array([1.5, math.nan, math.inf]),
    pa.array([[1, 2], None, []]), pa.array([["x"], ["y", ""], None]),
    pa.array([{"a": 1}, {"a": 2}, None]), pa.array([True, False, None]),
    pa.array([b"\xff", b"", None]), pa.array(["text", "image", "sequence"]),
    pa.array(["x" * 100_000, "", " "])]), max_size=8))
def test_parquet_files_of_any_schema(columns: dict[str, pa.Array]) -> None:
    with tempfile.TemporaryDirectory() as d:
        if columns:
            pq.write_table(pa.table(columns), Path(d) / "c.parquet")
        else:
            (Path(d) / "c.parquet").write_bytes(b"")
        check_balanced(Path(d))


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from(["jsonl", "csv"]), st.lists(ROW, max_size=4)),
                      min_size=2, max_size=4))
def test_mixed_schemas_across_the_files_of_a_folder(
        files: list[tuple[str, list[dict[str, Any]]]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        for i, (fmt, rows) in enumerate(files):
            text = _dump_jsonl(rows) if fmt == "jsonl" else _dump_csv(rows)
            _write(Path(d), f"part-{i}.{fmt}", text.encode("utf-8", "surrogatepass"))
        pq.write_table(pa.table({"item_id": ["p1", "p1"], "culture": ["A", None],
                                 "modality": ["text", "text"], "text": ["t", "u"]}), Path(d) / "part-p.parquet")
        check_balanced(Path(d))


def test_an_empty_corpus_file_and_huge_csv_field_are_named() -> None:
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), "empty.jsonl", b"")
        rows_in, staged = ingest_folder(Path(d))
        assert rows_in == staged.num_rows == 0
        _write(Path(d), "big.csv", b"item_id,culture\n" + b"x" * 300_000 + b",A\n")
        message = ingest_folder(Path(d))
        assert isinstance(message, str) and "big.csv:" in message and "field" in message


# ---------------------------------------------------------------- gold, relations, config
@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({}, optional={
    "culture_a": st.one_of(st.sampled_from(["A", "B", "C"]), SCALARS),
    "culture_b": st.one_of(st.sampled_from(["A", "B", "C"]), SCALARS),
    "score": SCALARS, "theme": SCALARS}), max_size=6),
    fmt=st.sampled_from(["jsonl", "csv", "parquet", "bytes"]), junk=st.binary(max_size=64))
def test_gold_files(rows: list[dict[str, Any]], fmt: str, junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        if fmt == "jsonl":
            path = _write(Path(d), "g.jsonl", _dump_jsonl(rows).encode("utf-8", "surrogatepass"))
        elif fmt == "csv":
            path = _write(Path(d), "g.csv", junk + b"culture_a,culture_b,score\nA,B,1\n")
        elif fmt == "parquet":
            path = Path(d) / "g.parquet"
            pq.write_table(pa.table({"culture_a": ["A", "B"], "culture_b": ["B", None],
                                     "score": [1.0, math.inf]}), path)
        else:
            path = _write(Path(d), "g.parquet", junk)
        try:
            gold = validate_gold(read_gold_rows(path), ["A", "B", "C"], source=str(path))
        except GoldError as exc:
            assert str(path) in str(exc), exc
            return
        assert all(math.isfinite(s) for _, _, s, _ in gold.pairs)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({}, optional={
    "src_item": st.one_of(st.sampled_from(["t1", "i1", "zz"]), SCALARS),
    "dst_item": st.one_of(st.sampled_from(["t1", "i1"]), SCALARS),
    "relation": st.one_of(st.sampled_from(["depicts", "Bad Name", "self"]), SCALARS)}),
    max_size=6), junk=st.one_of(st.none(), st.binary(max_size=64)))
def test_relations_files(rows: list[dict[str, Any]], junk: bytes | None) -> None:
    items = {"t1": ("text", 0), "i1": ("image", 0)}
    with tempfile.TemporaryDirectory() as d:
        data = junk if junk is not None else _dump_jsonl(rows).encode("utf-8", "surrogatepass")
        path = _write(Path(d), "rel.jsonl", data)
        try:
            rel = read_relations(str(path), items)
        except RelationsError as exc:
            assert str(path) in str(exc), exc
            return
        for q in rel.quarantined:
            assert q["source_row"].startswith(str(path)) and q["reason"], q


@FUZZ
@given(doc=st.one_of(
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True)),
    st.dictionaries(st.sampled_from(["num_actors", "batch_size", "uri_roots", "k", "similarity",
                                     "text_encoder", "max_length", "s3", "nope", "block_rows"]),
                    JSONISH, max_size=4).map(lambda v: json.dumps(v, allow_nan=True)),
    st.sampled_from(["a: [", "{{{", "- - -\n  x: :", "!!python/object:os.system {}",
                     "a: &x [*x]", "\t- x", "num_actors: .inf"]),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_config_yaml(doc: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = _write(Path(d), "cfg.yaml", doc.encode("utf-8", "surrogatepass"))
        for model in (EmbedConfig, AllPairsConfig):
            try:
                model(**load_yaml(path))
            except ValueError as exc:  # pydantic's ValidationError names the field
                assert str(path) in str(exc) or "validation error" in str(exc), exc


# ---------------------------------------------------------------- HTTP bodies
BODIES = st.one_of(
    st.binary(max_size=300),
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.fixed_dictionaries({}, optional={
        "text": st.one_of(ODD_TEXT, JSONISH), "k": SCALARS, "themes": JSONISH,
        "image": st.one_of(ODD_TEXT, SCALARS), "sequence": ODD_TEXT,
        "sequence_format": st.one_of(st.sampled_from(["abc", "musicxml", "midi"]), SCALARS),
        "surplus": SCALARS}).map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.sampled_from([b"[" * 100_000, b'{"k": ' + b"9" * 5000 + b"}", b'{"text": "\\ud800"}',
                     b'{"text": "\xff\xfe"}', b"\xef\xbb\xbf{}", b'{"k": 1e999}', b"",
                     b'{"text": "a", "k": 1e400}', b'{"themes": [' + b"[" * 5000 + b"]}"]))
CTYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                          "", None, "APPLICATION/JSON", "application/x-www-form-urlencoded",
                          "multipart/form-data; boundary=x"])


@FUZZ
@given(body=BODIES, ctype=CTYPES)
def test_request_bodies_parse_or_name_the_part_at_fault(body: bytes, ctype: str | None) -> None:
    result = parse_similar(ctype, body, limit=50_000)
    if isinstance(result, SimilarRequest):
        assert (ctype or "").split(";")[0].strip().lower() == "application/json"
        result.model_dump_json()  # every accepted string is valid Unicode
        return
    assert 400 <= result.status_code < 500
    err = json.loads(result.body)["error"]
    assert err["field"] and err["message"]


@pytest.mark.parametrize("body,field", [
    (b"[" * 100_000, "body"), (b'{"k": ' + b"9" * 5000 + b"}", "body"),
    (b'{"text": "\\ud800"}', "text"), (b"\xff\xfe", "body"), (b'{"k": 1e999}', "k"),
])
def test_known_hostile_bodies_are_4xx(body: bytes, field: str) -> None:
    result = parse_similar("application/json", body, limit=1_000_000)
    assert not isinstance(result, SimilarRequest)
    assert 400 <= result.status_code < 500
    assert json.loads(result.body)["error"]["field"] == field
