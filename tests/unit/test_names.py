"""Culture names written several ways: found without case, accents, Unicode form,
spacing or punctuation."""

from __future__ import annotations

import unicodedata

from culturesim_ray.names import alike, alike_note, name_key


def test_names_alike_without_case_unicode_form_or_spacing():
    composed, decomposed = "Québécois", unicodedata.normalize("NFD", "québécois")
    assert composed != decomposed and name_key(composed) == name_key(decomposed)
    names = ["Chinese", "chinese", "Greek", "GREEK", "Cc  x", "Cc x", composed, decomposed,
             "Persian", "Persians"]
    assert alike(names) == [["Cc  x", "Cc x"], ["Chinese", "chinese"], ["GREEK", "Greek"],
                            sorted([composed, decomposed])]
    note = alike_note(names, shown=2)
    assert note.startswith("4 culture name(s) are written several ways")
    assert "'Cc  x' and 'Cc x'; 'Chinese' and 'chinese'; and 2 more." in note
    assert alike_note(["Persian", "Persians", "Greek"]) is None


def test_resolver_reads_a_name_as_the_one_known_name_it_folds_to():
    from culturesim_ray.names import resolver

    meaning = resolver(["Greek", "Irish", "irish ", "Côte d'Ivoire"])
    assert meaning("Greek") == "Greek" and meaning(" GREEK ") == "Greek"
    assert meaning("Irish") == "Irish"  # itself, though another folds to it too
    assert meaning("IRISH") is None  # two known names fold to it: none is chosen
    assert meaning("co\u0302te  d'ivoire") == "Côte d'Ivoire"  # another Unicode form, spacing
    assert meaning("Welsh") is None


def test_names_alike_without_accents_or_punctuation():
    pairs = [("Côte d\u2019Ivoire", "Cote d'Ivoire"), ("Guinea-Bissau", "Guinea Bissau"),
             ("St. Lucia", "St Lucia"), ("São Tomé", "Sao Tome"), ("Ελλάδα", "ΕΛΛΑΔΑ"),
             ("Ёлка", "елка"), ("Indo_European", "indo \u2013 european"), ("Ｆｉｊｉ", "Fiji")]
    for a, b in pairs:
        assert name_key(a) == name_key(b), (a, b)
    # a combining mark outside Latin, Greek and Cyrillic can tell two words apart
    assert name_key("ガーナ") != name_key("カーナ")
    assert name_key("\u0939\u093f\u0928\u094d\u0926\u0940") != name_key("\u0939\u093f\u0928\u0926\u0940")
    assert name_key("Persian") != name_key("Persians")
    assert name_key("Inuit") != name_key("Inuit (Greenland)")
    note = alike_note(["Côte d'Ivoire", "Cote d'Ivoire", "Greek"])
    assert "differing only in case, accents, spacing or punctuation" in note
