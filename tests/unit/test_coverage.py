"""A text encoder's vocabulary against a corpus's texts (`encoders.coverage`), with
the packaged MiniLM tokenizer (no fakes)."""

from __future__ import annotations

from collections import Counter

import pytest

from culturesim_ray.encoders import registry
from culturesim_ray.encoders.coverage import (
    NOTE_SHARE,
    CoverageCount,
    main_script,
    poorly_covered,
    script_of,
    spread,
)
from culturesim_ray.encoders.text import MiniLMEncoder, minilm_coverage, minilm_lengths

READ = {  # languages MiniLM's word pieces read (Latin script)
    "en": "Paris is the capital of France and its largest city.",
    "fr": "Paris est la capitale de la France et sa plus grande ville.",
    "es": "Madrid es la capital de España y su ciudad más poblada.",
    "de": "Berlin ist die Hauptstadt der Bundesrepublik Deutschland und ihre größte Stadt.",
    "vi": "Hà Nội là thủ đô của nước Cộng hòa Xã hội chủ nghĩa Việt Nam.",
    # English with names in their own script (a tenth of the tokens unknown)
    "en-names": "Dōgen Zenji was a Japanese Zen Buddhist monk, writer, poet, philosopher, "
                "and founder of the Sōtō school of Zen in Japan. He is also known as Dōgen "
                "Kigen (道元希玄), Eihei Dōgen (永平道元), Kōso Jōyō Daishi (高祖承陽大師), and "
                "Busshō Dentō Kokushi (仏性伝東国師).",
}
CUT = {  # cut into single characters or unknown tokens
    "ru": ("Москва — столица России, крупнейший по численности населения город страны.",
           "CYRILLIC"),
    "ar": ("القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.", "ARABIC"),
    "zh": ("北京是中华人民共和国的首都，也是全国的政治和文化中心。", "CJK"),
    "ko": ("서울은 대한민국의 수도이자 최대 도시이다.", "HANGUL"),
    "th": ("กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", "THAI"),
    "hi": ("नई दिल्ली भारत की राजधानी है और यह दिल्ली राज्य का हिस्सा है।", "DEVANAGARI"),
    "el": ("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "GREEK"),
}


def test_minilm_reads_latin_script_languages_and_cuts_the_others():
    assert minilm_coverage(list(READ.values())) == [False] * len(READ)
    assert minilm_coverage([t for t, _ in CUT.values()]) == [True] * len(CUT)


def test_texts_without_letters_are_never_poorly_covered():
    assert minilm_coverage(["", "1984", "3.14 -- 2.71", "  "]) == [False] * 4


def test_the_rule_counts_characters_per_token_and_unknown_tokens():
    # "abcdef": 6 characters; 3 tokens -> 2 a token (read), 6 tokens -> 1 (cut)
    assert poorly_covered(["abcdef"], lambda ts: [[1, 2, 3]], 0) == [False]
    assert poorly_covered(["abcdef"], lambda ts: [[1] * 6], 0) == [True]
    # 2 a token but one unknown token in 3: cut
    assert poorly_covered(["abcdef"], lambda ts: [[1, 0, 2]], 0) == [True]
    assert poorly_covered(["abcdef"], lambda ts: [[1, 0, 2]], None) == [False]


def test_scripts_are_named_as_unicode_names_them():
    assert script_of("a") == "LATIN" and script_of("ж") == "CYRILLIC"
    assert script_of("1") is None and script_of(" ") is None
    for text, script in CUT.values():
        assert main_script(text) == script
    assert main_script("Moscow city: Москва") == "LATIN"  # 10 Latin letters, 6 Cyrillic
    assert main_script("123") is None


def test_counts_merge_and_the_note_names_the_scripts_and_the_flag():
    ru, ar = CUT["ru"][0], CUT["ar"][0]
    a = CoverageCount.of("minilm", [ru, READ["en"], ar], [True, False, True])
    b = CoverageCount.of("minilm", [ru, READ["fr"]], [True, False])
    total = CoverageCount.merge("minilm", [a, b])
    assert (total.sampled, total.poor) == (5, 3)
    assert total.scripts == Counter({"CYRILLIC": 2, "ARABIC": 1})
    rec = total.record()
    assert rec["share"] == pytest.approx(0.6) and rec["scripts"] == {"CYRILLIC": 2, "ARABIC": 1}
    note = total.note(registry.any_script_text_encoders())
    assert note is not None and note.startswith("60% of 5 sampled texts (cyrillic, arabic")
    assert "--text-encoder e5 or --text-encoder muse" in note and "minilm" in note


def test_long_texts_are_counted_against_the_windows_the_encoder_reads():
    texts = [READ["en"], " ".join([READ["en"]] * 10), " ".join([READ["fr"]] * 30)]
    tokens, window, most = minilm_lengths(texts, max_length=64, max_windows=3)
    assert (window, most) == (62, 3)
    # the same counts and windows as the encoder's own cut
    pieces, owner = MiniLMEncoder(max_length=64, max_windows=3).windows(texts)
    assert [owner.count(i) for i in range(3)] == [min(-(-n // 62), 3) for n in tokens]
    assert sum(map(len, pieces)) == sum(min(n, 62 * 3) for n in tokens)
    assert tokens[0] < 62 < tokens[1] <= 3 * 62 < tokens[2]
    a = CoverageCount.of("minilm", texts, [False] * 3, (tokens, window, most))
    b = CoverageCount.of("minilm", texts[2:], [False], ([tokens[2]], window, most))
    total = CoverageCount.merge("minilm", [a, b])
    assert (total.sampled, total.long, total.cut, total.window, total.max_windows) == (
        4, 3, 2, 62, 3)
    assert total.record()["length"] == {"tokens_per_window": 62, "max_windows": 3,
                                        "longer_than_one_window": 3, "longer_than_read": 2}
    note = total.length_note()
    assert note is not None and note.startswith("2 of 4 sampled texts (50%) are longer than "
                                                "the 186 tokens minilm reads")
    assert "--max-windows" in note
    # nothing cut: no note, and an encoder without windows records no length
    assert CoverageCount.of("minilm", texts[:2], [False] * 2,
                            (tokens[:2], window, most)).length_note() is None
    assert "length" not in CoverageCount.of("minilm", texts, [False] * 3).record()
    assert registry.length_check("minilm") is minilm_lengths
    # a book-length text: only a bounded prefix is tokenized, and it counts as cut
    book = "word " * 200_000
    (n,), _, _ = minilm_lengths([book], max_length=64, max_windows=3)
    assert n > 62 * 3
    enc = MiniLMEncoder(max_length=64, max_windows=3)
    assert [len(p) for p in enc.windows([book])[0]] == [62, 62, 62]
    assert registry.length_check("e5") is None


def test_no_note_below_the_share_or_without_a_sample():
    n = 100
    under = int(NOTE_SHARE * n) - 1
    c = CoverageCount("minilm", n, under, Counter({"CYRILLIC": under}))
    assert c.note(["e5"]) is None
    assert CoverageCount("minilm", n, under + 1, Counter({"CYRILLIC": under + 1})).note(["e5"])
    assert CoverageCount("minilm").note(["e5"]) is None
    assert CoverageCount("minilm").share == 0.0


def test_only_the_english_vocabulary_encoder_has_a_check():
    assert registry.coverage_check("minilm") is minilm_coverage
    for name in ("e5", "muse", "tfidf"):
        assert registry.coverage_check(name) is None
    # the notes point to the packaged encoders without a check (tfidf is fitted)
    assert registry.any_script_text_encoders() == ("e5", "muse")


def test_jobs_that_read_an_embed_run_repeat_its_notes(tmp_path):
    import json

    from culturesim_ray.runs import embed_notes

    (tmp_path / "manifest.json").write_text(json.dumps({"job": "embed", "notes": ["cut"]}))
    assert embed_notes(str(tmp_path)) == [f"the embed run {tmp_path}: cut"]
    (tmp_path / "manifest.json").write_text(json.dumps({"job": "embed"}))  # an older run
    assert embed_notes(str(tmp_path)) == []


def test_the_sample_comes_from_a_bounded_number_of_partitions_spread_over_the_corpus():
    assert spread(3, 16) == [0, 1, 2] and spread(0, 16) == [] and spread(5, 1) == [0]
    big = spread(500, 16)
    assert len(big) == 16 and big[0] == 0 and big[-1] == 499
    gaps = {b - a for a, b in zip(big, big[1:], strict=False)}
    assert gaps <= {33, 34}
