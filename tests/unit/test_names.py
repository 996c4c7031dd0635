"""Culture names written several ways: found without case, Unicode form or spacing."""

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
