"""The command line: clear errors and exit codes, without starting Ray."""

from __future__ import annotations

import argparse

import pytest

from culturesim_ray.cli import build_parser, main


def test_malformed_corpus_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"item_id": "a"}\n{oops\n')
    assert main(["embed", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: not valid JSON" in err


def test_bad_config_value_is_a_clear_error(tmp_path, capsys):
    assert main(["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--actors", "0"]) == 2
    assert "num_actors" in capsys.readouterr().err


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_sise: 3\n")
    assert main(["embed", str(tmp_path), "--out", "o", "--config", str(cfg)]) == 2
    assert "batch_sise" in capsys.readouterr().err


def test_an_option_is_named_in_full(capsys):
    """`train --steps 10` (a user's guess at the step count) is an error, not silently
    --steps-per-epoch 10; every command parses its options so."""
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["train", "emb", "--out", "o", "--steps", "10"])
    assert exc.value.code == 2 and "unrecognized arguments: --steps 10" in capsys.readouterr().err
    assert parser.parse_args(["train", "emb", "--out", "o", "--steps-per-epoch", "10"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(not p.allow_abbrev for p in sub.choices.values())


def test_every_command_has_help():
    parser = build_parser()
    for cmd in ("embed", "allpairs", "train", "demo", "demo-corpus", "continue-melody", "doctor"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0


def test_the_check_reports_lines():
    from culturesim_ray.pipeline.embed_report import CheckReport

    items = {"text": {f"c{i}": 10 + i for i in range(8)} | {"tiny": 1, "two": 2},
             "image": {"c0": 3}}
    check = CheckReport(corpus="c.csv", files=1, rows_in=1_200, usable={"text": 1_100,
                        "image": 3, "sequence": 0}, done=0, reasons={"uri": 97},
                        examples=["c.csv:5: uri: file not found or not readable: x.png"],
                        items=items, encoder="minilm (auto: ...)", notes=["a note"])
    assert check.lines() == [
        "1,200 rows in 1 file(s): 1,103 usable (text 1,100, image 3), 97 would be "
        "quarantined (uri: 97)",
        "  e.g. c.csv:5: uri: file not found or not readable: x.png",
        "10 culture(s)",
        "  text: 10 culture(s), items per culture 1 to 17 (median 13); fewer than 3: "
        "'tiny' (1), 'two' (2)",
        "  image: 1 culture(s), items per culture 3 to 3 (median 3)",
        "text encoder minilm (auto: ...)", "note: a note", "nothing was embedded or written"]
    check.refused = "text: encoder: 'minilm' -> 'e5'"
    assert check.lines()[-2] == "a run into this --out would be refused: text: encoder: " \
                                "'minilm' -> 'e5'"


def test_the_embed_reports_lines():
    from culturesim_ray.pipeline.embed import EmbedReport

    def report(embedded: int, reasons: dict[str, int]) -> EmbedReport:
        q = sum(reasons.values())
        return EmbedReport(rows_in=embedded + q, embedded=embedded, quarantined=q,
                           skipped_done=0, reasons=reasons, out="o", seconds=1.0)

    ok = report(5, {"culture": 1, "uri": 2})
    assert ok.counts_line() == "embedded 5, quarantined 3 of 8 rows (culture: 1, uri: 2)"
    assert ok.nothing_embedded() is None
    assert report(2, {}).counts_line() == "embedded 2, quarantined 0 of 2 rows"
    assert report(0, {}).nothing_embedded() is None  # an empty corpus: nothing to say here
    two = report(0, {"culture": 1, "text": 3})
    assert two.nothing_embedded() == ("nothing was embedded: all 4 rows are in the quarantine "
                                      "(culture: 1, text: 3)")
    assert two.nothing_embedded("c.csv:2: text: empty for a text item") == (
        "nothing was embedded: all 4 rows are in the quarantine (culture: 1, text: 3); "
        "for example c.csv:2: text: empty for a text item")
    # every row missing one field: the column, most likely
    one = report(0, {"modality": 4}).nothing_embedded("c.csv:2: modality: missing")
    assert one.endswith("for example c.csv:2: modality: missing (in every row: does the corpus "
                        "lack a 'modality' column, or spell it otherwise? README: the corpus "
                        "contract)")
    uri = report(0, {"uri": 4}).nothing_embedded("c.csv:2: uri: x.png is outside the allowed roots")
    assert uri.endswith("for example c.csv:2: uri: x.png is outside the allowed roots")


def test_continue_melody_finds_the_model_of_a_run_and_names_what_is_missing(tmp_path, capsys):
    from culturesim_ray.layout import melody_model_dir

    lstm = tmp_path / "run" / "embed" / "models" / "lstm"
    lstm.mkdir(parents=True)
    (lstm / "config.json").write_text("{}")
    for given in (lstm, tmp_path / "run" / "embed", tmp_path / "run"):
        assert melody_model_dir(str(given)) == str(lstm)
    assert melody_model_dir("s3://bucket/models/lstm") == "s3://bucket/models/lstm"
    with pytest.raises(FileNotFoundError, match=r"train: no melody model here \(a folder with "
                                                r"lstm.pt, vocab.json and config.json"):
        melody_model_dir(str(tmp_path / "run" / "train"))
    seed = tmp_path / "tune.abc"
    assert main(["continue-melody", str(seed), "--model", str(tmp_path / "run"),
                 "--out", str(tmp_path / "x.mid")]) == 2
    assert f"seed file not found: {seed}" in capsys.readouterr().err
    seed.write_text("X:1\nK:C\nCDEF|\n")
    assert main(["continue-melody", str(seed), "--model", str(tmp_path / "run" / "train"),
                 "--out", str(tmp_path / "x.mid")]) == 2
    assert "no melody model here" in capsys.readouterr().err
