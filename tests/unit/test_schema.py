"""Every validation rule of the corpus contract; nothing dropped silently."""

from __future__ import annotations

import pytest

from culturesim_ray.schema import CORPUS_SCHEMA, StrictModeError, validate_rows


def row(**kw):
    base = {"item_id": "a", "culture": "Greek", "modality": "text", "text": "Athens",
            "_source_row": "c.jsonl:1"}
    base.update(kw)
    return base


CASES = [
    (row(culture=None), "culture", "missing"),
    (row(culture="   "), "culture", "empty"),
    (row(culture=7), "culture", "wrong type"),
    ({"item_id": "a", "modality": "text", "text": "x"}, "culture", "missing"),
    (row(item_id=None), "item_id", "missing"),
    (row(item_id=12.0), "item_id", "wrong type"),
    (row(item_id=True), "item_id", "wrong type"),
    (row(modality="video"), "modality", "unknown value 'video'"),
    (row(text=""), "text", "empty"),
    (row(text="   \n"), "text", "empty"),
    (row(text=None), "text", "empty"),
    (row(text=["a"]), "text", "wrong type"),
    (row(modality="image", text=None, uri=None), "uri", "missing"),
    (row(era_start="long ago"), "era_start", "integer"),
    (row(era_start="1800.5"), "era_start", "integer"),
    (row(era_start="c. 1800"), "era_start", "integer"),
    (row(era_start=True), "era_start", "bool"),
    (row(era_start=1500, era_end=1400), "era_end", "before era_start"),
    (row(themes="[broken"), "themes", "JSON list"),
    (row(themes="[__import__('os')]"), "themes", "JSON list"),
    (row(themes="['art', 3]"), "themes", "JSON list"),
    (row(themes=[1, "art"]), "themes", "non-empty string"),
    (row(themes={"a": 1}), "themes", "wrong type"),
    (row(lang=3), "lang", "wrong type"),
]


@pytest.mark.parametrize(("bad", "field", "words"), CASES)
def test_each_rule_quarantines_with_field_and_reason(bad, field, words):
    good = row(item_id="ok")
    out = validate_rows([good, bad])
    assert len(out.good) + len(out.bad) == 2
    assert [r["item_id"] for r in out.good] == ["ok"]
    (b,) = out.bad
    rec = b.record()
    assert rec["field"] == field
    assert rec["reason"].startswith(f"{field}: ")
    assert words in rec["reason"]
    assert rec["source_row"] in ("c.jsonl:1", "row 1")
    # the row as given survives in the quarantine
    assert rec["row_json"]


def test_an_integer_item_id_is_its_decimal_string():
    """An int64 Parquet column or a JSON number: the id as a string, and an integer
    and the same digits as a string are one id (a duplicate)."""
    out = validate_rows([row(item_id=12, _source_row="f:1"), row(item_id=-3, _source_row="f:2"),
                         row(item_id="12", _source_row="f:3"), row(item_id=2**70, _source_row="f:4")])
    assert [r["item_id"] for r in out.good] == ["12", "-3", str(2**70)]
    (dup,) = out.bad
    assert "duplicate '12', first seen at f:1" in dup.record()["reason"]


def test_duplicate_item_id_keeps_first_and_names_it():
    rows = [row(_source_row="f:1"), row(_source_row="f:2", text="other")]
    out = validate_rows(rows)
    assert [r["text"] for r in out.good] == ["Athens"]
    assert "duplicate 'a', first seen at f:1" in out.bad[0].record()["reason"]


def test_uri_check_quarantines_missing_files():
    rows = [row(item_id="i1", modality="image", text=None, uri="/data/here.png"),
            row(item_id="i2", modality="image", text=None, uri="/data/gone.png")]
    out = validate_rows(rows, uri_exists=lambda uris: {u for u in uris if "here" in u})
    assert [r["item_id"] for r in out.good] == ["i1"]
    assert out.bad[0].record()["reason"] == "uri: file not found or not readable: /data/gone.png"


def test_types_are_normalised():
    out = validate_rows([row(era_start="1453", era_end=1922.0, themes="Art; Religion")])
    (g,) = out.good
    assert (g["era_start"], g["era_end"], g["themes"]) == (1453, 1922, ["art", "religion"])
    table = out.good_table()
    assert table.schema == CORPUS_SCHEMA
    assert out.bad_table().num_rows == 0
    # themes as people write them in a CSV cell: commas and bars separate them too
    for cell in ("Music, Dance", "music|dance", " music ;dance; ", '["Music", "dance"]'):
        (g,) = validate_rows([row(themes=cell)]).good
        assert g["themes"] == ["music", "dance"], cell


def test_good_rows_keep_corpus_order_with_uri_checks():
    rows = [row(item_id="img", modality="image", text=None, uri="/x.png"), row(item_id="t")]
    out = validate_rows(rows, uri_exists=lambda uris: set(uris))
    assert [r["item_id"] for r in out.good] == ["img", "t"]


def test_strict_raises_naming_row_and_field():
    with pytest.raises(StrictModeError, match=r"row c.jsonl:1: culture: missing"):
        validate_rows([row(culture=None)], strict=True)


def test_reasons_counts():
    out = validate_rows([row(culture=None), row(item_id="b", text=""), row(item_id="c", text="")])
    assert out.reasons() == {"culture": 1, "text": 2}


def test_a_modality_in_any_case_or_spacing_is_the_contract_s():
    out = validate_rows([row(item_id="a", modality="Text"), row(item_id="b", modality=" TEXT "),
                         row(item_id="c", modality="Image", text=None, uri="/x.png")])
    assert [r["modality"] for r in out.good] == ["text", "text", "image"] and not out.bad


def test_a_year_written_as_pandas_writes_an_integer_column_with_gaps():
    out = validate_rows([row(item_id="a", era_start="-100.0", era_end=" -44 "),
                         row(item_id="b", era_start="+1900.00", era_end="1950")])
    assert [(r["era_start"], r["era_end"]) for r in out.good] == [(-100, -44), (1900, 1950)]


def test_themes_as_pandas_writes_a_list_column_to_csv():
    out = validate_rows([row(item_id="a", themes="['Food', \"Kings' crowns\"]"),
                         row(item_id="b", themes="[]")])
    assert [r["themes"] for r in out.good] == [["food", "kings' crowns"], []]


def test_column_names_as_a_spreadsheet_writes_them():
    """`Culture`, ` Item_ID ` are the contract's culture, item_id; the exact name wins
    when both are there; the quarantine keeps the row as given."""
    given = {"Item_ID ": "a", "Culture": "Greek", "MODALITY": "Text", "Text": "Athens",
             "Themes": "Art; Food", "_source_row": "c.csv:2"}
    out = validate_rows([given, {"item_id": "b", "Culture": "Irish", "culture": "Irish",
                                 "modality": "text", "text": "Dublin"},
                         {"Item_ID": "c", "Culture": "", "Modality": "text", "Text": "x"}])
    assert [(r["item_id"], r["culture"], r["modality"], r["text"]) for r in out.good] == [
        ("a", "Greek", "text", "Athens"), ("b", "Irish", "text", "Dublin")]
    assert out.good[0]["themes"] == ["art", "food"]
    rec = out.bad[0].record()
    assert rec["field"] == "culture" and '"Culture": ""' in rec["row_json"]


def test_a_missing_year_as_r_and_spreadsheets_write_it():
    out = validate_rows([row(item_id=f"r{i}", era_start=v, era_end=1900)
                         for i, v in enumerate(["NA", " n/a ", "NaN", "NULL", "None", ""])])
    assert [r["era_start"] for r in out.good] == [None] * 6 and not out.bad
