"""Gold files as people have them: a square culture x culture matrix (full or
triangular, as published cultural-distance tables come), a score column named
`distance` or `similarity`, and the line `culturesim evaluate` prints when the gold
looks the wrong way round."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from culturesim_ray.report.evaluate import Method, evaluate, kind_warning
from culturesim_ray.report.gold_file import GoldError, read_gold_rows, validate_gold

NAMES = ["Aa", "Bb", "Cc", "Dd"]
DIST = np.array([[0, 1.5, 4.0, 7.25],
                 [1.5, 0, 2.0, 5.0],
                 [4.0, 2.0, 0, 3.5],
                 [7.25, 5.0, 3.5, 0]])
PAIRS = [(NAMES[i], NAMES[j], float(DIST[i, j]), "general")
         for i in range(4) for j in range(i + 1, 4)]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _matrix(path: Path, cells=None, corner: str = "culture", order=(0, 1, 2, 3)) -> Path:
    """The matrix as a CSV, rows in `order`; cells(i, j) gives each cell's text."""
    cells = cells or (lambda i, j: DIST[i, j])
    return _write(path, [corner, *NAMES], [[NAMES[i], *(cells(i, j) for j in range(4))]
                                            for i in order])


def test_a_square_matrix_reads_as_its_pairs_with_the_kind_from_its_diagonal(tmp_path):
    gold = validate_gold(read_gold_rows(_matrix(tmp_path / "m.csv")), NAMES)
    assert sorted(gold.pairs) == PAIRS
    assert (gold.kind, gold.kind_from) == ("distance", "a matrix with a zero diagonal")
    assert gold.skipped == {}  # the diagonal and the mirrored cells are the layout, not skips
    # rows in another order, a blank corner and the upper half blank (triangular)
    tri = _matrix(tmp_path / "t.csv", lambda i, j: DIST[i, j] if j <= i else "", "",
                  order=(2, 0, 3, 1))
    assert sorted(validate_gold(read_gold_rows(tri), NAMES).pairs) == PAIRS
    # a given kind wins over the diagonal, and is not reported as read from the file
    given = validate_gold(read_gold_rows(tri), NAMES, gold_kind="similarity")
    assert (given.kind, given.kind_from) == ("similarity", "")
    # a similarity matrix (ones on the diagonal) stays a similarity
    sim = _matrix(tmp_path / "s.csv", lambda i, j: 1.0 if i == j else 1 / (1 + DIST[i, j]))
    gold = validate_gold(read_gold_rows(sim), NAMES)
    assert (gold.kind, len(gold.pairs)) == ("similarity", 6)
    # cultures the run lacks are skipped as in the pairs layout
    gold = validate_gold(read_gold_rows(_matrix(tmp_path / "m.csv")), NAMES[:3])
    assert len(gold.pairs) == 3 and gold.skipped == {"unknown culture 'Dd'": 3}


def test_an_asymmetric_matrix_reads_each_pair_as_the_mean_of_its_two_cells(tmp_path):
    # a directed measure (e.g. intelligibility of b's language to a's speakers)
    asym = _matrix(tmp_path / "a.csv", lambda i, j: 9 if (i, j) == (0, 3) else DIST[i, j])
    gold = validate_gold(read_gold_rows(asym), NAMES, source=str(asym))
    want = [(a, b, (9 + 7.25) / 2 if (a, b) == ("Aa", "Dd") else s, t) for a, b, s, t in PAIRS]
    assert sorted(gold.pairs) == want and gold.kind == "distance"
    assert gold.asymmetric == {("Aa", "Dd", "general"): (9.0, 7.25)}
    assert "(Aa, Dd) 9 / (Dd, Aa) 7.25" in gold.asymmetric_note()
    # a matrix written out row by row, both halves: the same pairs and means
    long = _write(tmp_path / "l.csv", ["culture_a", "culture_b", "distance"],
                  [[NAMES[i], NAMES[j], 9 if (i, j) == (0, 3) else DIST[i, j]]
                   for i in range(4) for j in range(4) if i != j])
    again = validate_gold(read_gold_rows(long), NAMES)
    assert sorted(again.pairs) == want and again.asymmetric == gold.asymmetric


def test_matrix_errors_name_the_cell_or_the_names(tmp_path):
    bad = _matrix(tmp_path / "b.csv", lambda i, j: "far" if (i, j) == (2, 1) else DIST[i, j])
    with pytest.raises(GoldError, match=r"b.csv: row 'Cc', column 'Bb': field 'score' is not "
                                        r"a number: 'far'"):
        validate_gold(read_gold_rows(bad), NAMES, source=str(bad))
    other = _write(tmp_path / "o.csv", ["culture", *NAMES],
                   [[n if n != "Bb" else "Bee", *DIST[i]] for i, n in enumerate(NAMES)])
    with pytest.raises(GoldError, match=r"rows and columns name different cultures: rows only "
                                        r"\['Bee'\], columns only \['Bb'\]"):
        validate_gold(read_gold_rows(other), NAMES, source=str(other))


def test_a_matrix_from_a_spreadsheet_in_a_decimal_comma_locale(tmp_path):
    """`;`-separated (the corpus reader's delimiter detection) reads as the comma CSV;
    its decimal commas are refused with the fix named, never read as something else."""
    path = tmp_path / "eu.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows(
            [["culture", *NAMES], *([NAMES[i], *DIST[i]] for i in range(4))])
    assert sorted(validate_gold(read_gold_rows(path), NAMES).pairs) == PAIRS
    comma = tmp_path / "comma.csv"
    with open(comma, "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows(
            [["culture", *NAMES], *([NAMES[i], *(str(v).replace(".", ",") for v in DIST[i])]
                                    for i in range(4))])
    with pytest.raises(GoldError, match=r"row 'Bb', column 'Aa': field 'score' is not a "
                                        r"number: '1,5' \(a decimal comma\? write 1.5\)"):
        validate_gold(read_gold_rows(comma), NAMES, source=str(comma))


def test_gold_scores_as_a_spreadsheet_formats_them():
    from culturesim_ray.report.gold_file import gold_score

    assert gold_score("45%") == pytest.approx(0.45) and gold_score(" 7.5 % ") == 0.075
    assert gold_score("1e3") == 1000.0 and gold_score(2) == 2.0
    for text, hint in [("1,5", "(a decimal comma? write 1.5)"),
                       ("7,542", "(a thousands separator or a decimal comma? write 7542 "
                                 "or 7.542)"),
                       ("12,345,678", "(a thousands separator? write 12345678)"),
                       ("far", "")]:
        with pytest.raises(ValueError) as err:
            gold_score(text)
        assert str(err.value) == (f" {hint}" if hint else "")
    rows = [{"culture_a": a, "culture_b": b, "score": f"{100 / (1 + s):.1f}%"}
            for a, b, s, _ in PAIRS]
    assert [p[2] for p in validate_gold(rows, NAMES).pairs] == pytest.approx(
        [round(100 / (1 + s), 1) / 100 for _, _, s, _ in PAIRS])
    with pytest.raises(GoldError, match=r"row 1: field 'score' is not a number: '7,542' "
                                        r"\(a thousands separator or a decimal comma\?"):
        validate_gold([{**rows[0], "score": "7,542"}], NAMES)


def test_a_score_column_named_distance_or_similarity_says_the_kind(tmp_path):
    rows = [{"culture_a": a, "culture_b": b, "distance": s} for a, b, s, _ in PAIRS]
    gold = validate_gold(rows, NAMES)
    assert sorted(gold.pairs) == PAIRS
    assert (gold.kind, gold.kind_from) == ("distance", "its score column is named 'distance'")
    with pytest.raises(GoldError, match="named 'distance' but the gold kind given is "
                                        "'similarity'"):
        validate_gold(rows, NAMES, gold_kind="similarity")
    sim = [{"culture_a": a, "culture_b": b, "similarity": -s} for a, b, s, _ in PAIRS]
    assert validate_gold(sim, NAMES).kind == "similarity"
    both = [{**r, "similarity": 1} for r in rows]
    with pytest.raises(GoldError, match="both distance and similarity columns"):
        validate_gold(both, NAMES)
    # a score column wins; the others are extra columns, as in the shipped demo gold
    scored = [{**r, "score": 1.0 - r["distance"]} for r in rows]
    assert validate_gold(scored, NAMES).kind == "similarity"


def test_the_kind_warning_fires_only_on_a_clearly_flipped_gold():
    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(10)]
    pos = rng.normal(size=(10, 2))
    vec = np.hstack([pos, np.ones((10, 1)) * 3]).astype(np.float64)
    dist = [{"culture_a": names[i], "culture_b": names[j],
             "score": float(np.linalg.norm(pos[i] - pos[j]))}
            for i in range(10) for j in range(i + 1, 10)]
    raw = Method("raw", "baseline", {"general": (names, vec)}, "cosine")
    for kind, warn in (("similarity", True), ("distance", False)):
        rows = evaluate(validate_gold(dist, names, gold_kind=kind), [raw], k=2, n_boot=50,
                        n_perm=199)
        lines = kind_warning(rows, "raw", kind)
        assert bool(lines) == warn, (kind, rows[0]["spearman"], rows[0]["mantel_p"])
    assert "rerun with --gold-kind distance" in kind_warning(
        evaluate(validate_gold(dist, names), [raw], k=2, n_boot=50, n_perm=199), "raw",
        "similarity")[0]
    assert kind_warning([], None, "similarity") == []


def test_gold_names_differing_only_in_case_or_spacing_are_the_run_cultures(tmp_path):
    """'aa', ' BB ' and 'Cc  x' mean the run's 'Aa', 'Bb' and 'Cc x', and the note
    names them; a name two run cultures fold to alike stays unknown (skipped)."""
    rows = [["aa", " BB ", "1.5"], ["AA", "Cc  x", "4"], ["bb", "cc x", "2"],
            ["aa", "Dd", "7.25"], ["Bb", "Dd", "5"], ["Cc x", "dd", "3.5"], ["aa", "ee", "1"]]
    path = _write(tmp_path / "g.csv", ["culture_a", "culture_b", "distance"], rows)
    cultures = ["Aa", "Bb", "Cc x", "Dd", "Ee", "EE"]
    gold = validate_gold(read_gold_rows(path), cultures)
    assert [(a, b, s) for a, b, s, _ in gold.pairs] == [
        ("Aa", "Bb", 1.5), ("Aa", "Cc x", 4.0), ("Bb", "Cc x", 2.0), ("Aa", "Dd", 7.25),
        ("Bb", "Dd", 5.0), ("Cc x", "Dd", 3.5)]
    assert gold.renamed == {"aa": "Aa", "BB": "Bb", "AA": "Aa", "Cc  x": "Cc x", "bb": "Bb",
                            "cc x": "Cc x", "dd": "Dd"}
    assert gold.renamed_note(2).startswith("7 gold culture name(s) read as the run's")
    assert gold.renamed_note(2).endswith("'aa' -> 'Aa', 'BB' -> 'Bb', and 5 more")
    assert list(gold.skipped) == ["unknown culture 'ee' (did you mean 'EE' or 'Ee'?)"]
    assert validate_gold(read_gold_rows(path), ["aa", "BB", "Cc  x", "dd"]).renamed == {
        "AA": "aa", "bb": "BB", "cc x": "Cc  x", "Dd": "dd", "Bb": "BB", "Cc x": "Cc  x"}


def test_gold_column_names_as_a_spreadsheet_writes_them():
    rows = [{"Culture_A": a, " culture_b ": b, "Distance": s} for a, b, s, _ in PAIRS]
    gold = validate_gold(rows, NAMES)
    assert sorted(gold.pairs) == PAIRS
    assert gold.kind == "distance"
    with pytest.raises(GoldError, match=r"no culture_b, score columns \(the file has Culture_A, Other;"):
        validate_gold([{"Culture_A": "Aa", "Other": "Bb"}], NAMES)


def test_gold_themes_are_read_as_the_run_heads_they_name(tmp_path):
    rows = [{"culture_a": a, "culture_b": b, "score": s, "theme": t}
            for a, b, s, _ in PAIRS for t in ("Food", "", "Cuisine")]
    gold = validate_gold(rows, NAMES, themes=["food", "music"])
    assert sorted(gold.by_theme()) == ["food", "general"]  # `Food` is the run's `food`
    assert gold.skipped == {"theme 'Cuisine', which the run does not have (its heads: food, "
                            "general, music)": 6}
    with pytest.raises(GoldError, match=r"row 3: theme 'Cuisine', which the run does not"):
        validate_gold(rows, NAMES, strict=True, themes=["food", "music"])
    with pytest.raises(GoldError, match=r"no usable gold pairs \(skipped: \{\"theme 'Food'"):
        validate_gold(rows[:1], NAMES, themes=[])
    # without the run's heads (fit-metric reads the general pairs alone) nothing is checked
    assert sorted(validate_gold(rows, NAMES).by_theme()) == ["Cuisine", "Food", "general"]
