"""Music reading, key-independent tokens, the melody LSTM and its encoder."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from culturesim_ray.encoders.music import (
    MusicParseError,
    Vocabulary,
    detokenize,
    parse_events,
    tokenize,
)
from culturesim_ray.encoders.sequence import (
    LSTMConfig,
    MelodyLSTM,
    SequenceEncoder,
    load_model,
    sample_continuation,
    save_model,
    train_melody_lstm,
    training_sequences,
)

TUNE = """X:1
T:test
M:2/4
L:1/8
K:G
GABc | d2 B2 | c2 A2 | G4 |
"""


def transpose(abc: str) -> str:
    return abc.replace("K:G", "K:A").replace("GABc | d2 B2 | c2 A2 | G4", "ABcd | e2 c2 | d2 B2 | A4")


def test_tokens_do_not_depend_on_the_key():
    a = tokenize(parse_events(TUNE, "t.abc"))
    b = tokenize(parse_events(transpose(TUNE), "t.abc"))
    assert a[0] == "n+0_0.5" and a[1] == "n+2_0.5" and a[4] == "n+2_1"
    # same contour; step sizes differ only where the scale's semitones fall
    assert [t.split("_")[1] for t in a] == [t.split("_")[1] for t in b]
    assert len(a) == 9


def test_rests_chords_and_roundtrip():
    ev = parse_events("X:1\nL:1/4\nK:C\nC z [EG] c/\n", "r.abc")
    assert ev == [(60, 1.0), (None, 1.0), (67, 1.0), (72, 0.5)]
    toks = tokenize(ev)
    assert toks == ["n+0_1", "r_1", "n+7_1", "n+5_0.5"]
    assert detokenize(toks, start_pitch=60) == ev


def test_unparsable_and_unknown_format():
    with pytest.raises(MusicParseError, match="unknown music format"):
        parse_events("x", "song.wav")
    with pytest.raises(MusicParseError):
        parse_events(b"MThd\x00\x00garbage", "broken.mid")


def test_vocabulary_roundtrip(tmp_path):
    v = Vocabulary.build([["a", "b", "a"], ["c"]])
    assert v.itos[4] == "a" and len(v) == 7
    ids = v.encode(["a", "zzz"])
    assert ids == [2, 4, 1, 3]
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").itos == v.itos


def test_vocabulary_from_summed_counts_equals_one_built_over_the_sequences():
    parts = [[["a", "b", "a"], ["c"]], [["b", "d"], ["a"]]]
    whole = Vocabulary.build([s for part in parts for s in part])
    counts = Counter()
    for part in parts:  # as the sample's tasks count their partitions
        counts.update(t for s in part for t in s)
    assert Vocabulary.from_counts(counts).itos == whole.itos
    assert whole.itos[4:] == ["a", "b", "c", "d"]  # most frequent first, ties by name


def test_training_sequences_cut_long_melodies_and_drop_ones_without_a_token():
    seqs = [[2, 3], [2, 5, 3], list(range(2, 400)), [2, 3, 3, 3]]
    out = training_sequences(seqs, max_len=256)
    assert out == [[2, 5, 3], list(range(2, 258)), [2, 3, 3, 3]]
    with pytest.raises(ValueError, match="no sequences"):  # BOS, EOS: no token
        train_melody_lstm([[2, 3], [2, 3]], LSTMConfig(6, 4, 8, 1), epochs=1)


def _trained(tmp_path, epochs=30):
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(40):  # a real regularity to learn: a rising scale, repeated
        start = int(rng.integers(0, 3))
        seqs.append(["n+0_1"] + ["n+2_0.5", "n+2_0.5", "n-4_1"] * (4 + start))
    vocab = Vocabulary.build(seqs)
    model, losses = train_melody_lstm([vocab.encode(s) for s in seqs],
                                      LSTMConfig(len(vocab), 16, 32, 2), epochs=epochs)
    return model, vocab, losses, save_model(model, vocab, tmp_path / "lstm")


def test_training_learns_and_sampling_continues_the_pattern(tmp_path):
    model, vocab, losses, _ = _trained(tmp_path)
    assert losses[-1] < 0.5 * losses[0]
    cont = sample_continuation(model, vocab, ["n+0_1", "n+2_0.5", "n+2_0.5"], steps=6,
                               temperature=0)
    assert cont[:4] == ["n-4_1", "n+2_0.5", "n+2_0.5", "n-4_1"]
    with pytest.raises(ValueError, match="temperature"):
        sample_continuation(model, vocab, [], temperature=-1)


def test_saved_model_loads_with_weights_only_and_encodes(tmp_path):
    model, vocab, _, path = _trained(tmp_path, epochs=3)
    again, v2 = load_model(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    (tmp_path / "a.abc").write_text(TUNE)
    (tmp_path / "b.abc").write_text(transpose(TUNE))
    (tmp_path / "bad.mid").write_bytes(b"MThd\x00\x00garbage")
    (tmp_path / "empty.abc").write_text("X:1\nL:1/4\nK:C\nz z |\n")
    enc = SequenceEncoder(str(path))
    uris = [str(tmp_path / n) for n in ("a.abc", "b.abc", "bad.mid", "empty.abc", "none.abc")]
    r = enc.encode(uris)
    assert r.vectors.shape == (5, 32)
    assert r.errors[0] is None and r.errors[1] is None
    assert r.errors[2].startswith(f"uri: cannot parse music {uris[2]}")
    assert r.errors[3] == f"uri: empty sequence (no notes) in {uris[3]}"
    assert r.errors[4].startswith(f"uri: cannot read {uris[4]}")
    np.testing.assert_allclose(np.linalg.norm(r.vectors[:2], axis=1), 1.0, atol=1e-5)
    # the embedding is the mean of the top layer's h_t, as torch.nn.LSTM computes it
    ids = torch.tensor([vocab.encode(tokenize(parse_events(TUNE, "a.abc")))])
    with torch.no_grad():
        h, _ = model.lstm(model.embed(ids))
    want = torch.nn.functional.normalize(h.mean(1), dim=-1)[0].numpy()
    np.testing.assert_allclose(r.vectors[0], want, atol=1e-5)
    # batching with a longer tune does not change a vector (padding is masked)
    alone = enc.encode([uris[0]]).vectors[0]
    np.testing.assert_allclose(alone, r.vectors[0], atol=1e-5)


def test_model_module_shapes():
    m = MelodyLSTM(LSTMConfig(10, 4, 8, 1))
    assert m(torch.randint(0, 10, (2, 5))).shape == (2, 5, 10)


def test_the_lstm_sample_is_the_first_melodies_of_the_partitions_in_order(tmp_path):
    """The embed job parses the melody LSTM's sample in one Ray task per partition:
    each takes its share of the first `lstm_sample` melodies (by corpus order) and
    leaves out a file that cannot be read."""
    import pyarrow as pa

    from culturesim_ray.encoders.sequence import read_tokens
    from culturesim_ray.pipeline.embed_state import _sample_tokens, sample_takes

    assert sample_takes([3, 4, 2], 5) == [3, 2, 0]
    assert sample_takes([3, 4, 2], 20) == [3, 4, 2]
    assert sample_takes([0, 2], 1) == [0, 1]
    good = tmp_path / "a.abc"
    good.write_text(TUNE)
    other = tmp_path / "b.abc"
    other.write_text(TUNE.replace("GABc | d2 B2", "G2 G2 | B4"))
    bad = tmp_path / "c.abc"
    bad.write_text("not a tune")
    part = pa.table({"uri": [str(bad), str(other), str(good)], "_order": [2, 1, 0]})
    first, second = read_tokens(str(good), {}), read_tokens(str(other), {})
    assert first != second
    assert _sample_tokens(part, 2, {}) == [first, second]
    assert _sample_tokens(part, 3, {}) == _sample_tokens(part, 2, {})  # the bad file left out
    assert _sample_tokens(part, 0, {}) == []


def _band(tmp_path):
    """A three-part piece: a violin melody, piano chords below it, a drum track."""
    from music21 import chord, instrument, note, stream

    melody = ["E5", "D5", "C5", "D5", "E5", "E5", "E5"]
    score = stream.Score()
    for inst, notes in ((instrument.Violin(), [note.Note(p, quarterLength=1) for p in melody]),
                        (instrument.Piano(), [chord.Chord(c, quarterLength=1)
                                              for c in [["C3", "E3", "G3"], ["G2", "B2", "D3"]] * 3
                                              + [["C3", "E3", "G3"]]]),
                        (instrument.BassDrum(), [note.Unpitched(quarterLength=1) for _ in range(7)])):
        part = stream.Part()
        part.insert(0, inst)
        for n in notes:
            part.append(n)
        score.insert(0, part)
    return score, [(note.Note(p).pitch.midi, 1.0) for p in melody]


def test_the_melody_of_a_piece_in_several_parts(tmp_path):
    """The violin line, not the three parts interleaved; the drum track (unpitched
    notes) is never melody and is no error (it raised AttributeError before)."""
    score, melody = _band(tmp_path)
    for fmt, name in (("midi", "band.mid"), ("musicxml", "band.musicxml")):
        path = tmp_path / name
        score.write(fmt, fp=str(path))
        events = [e for e in parse_events(path.read_bytes(), name) if e[0] is not None]
        assert events == melody, name


def test_an_inner_voice_under_a_held_note_is_not_melody():
    """Two voices in one part: the held E5 stays the line while the lower voice moves."""
    from music21 import note, stream

    part, top, low = stream.Part(), stream.Voice(), stream.Voice()
    top.append(note.Note("E5", quarterLength=2))
    top.append(note.Note("F5", quarterLength=1))
    for p in ("C5", "D5", "A4"):
        low.append(note.Note(p, quarterLength=1))
    part.insert(0, top)
    part.insert(0, low)
    from culturesim_ray.encoders.music import melody_events

    assert melody_events(part) == [(76, 2.0), (77, 1.0)]


def test_compressed_musicxml_and_kern(tmp_path):
    """.mxl (a zip naming its score in META-INF/container.xml) reads as the same
    piece as the plain file; Humdrum **kern reads as kern."""
    import zipfile

    score, melody = _band(tmp_path)
    plain = tmp_path / "band.musicxml"
    score.write("musicxml", fp=str(plain))
    mxl = tmp_path / "band.mxl"
    with zipfile.ZipFile(mxl, "w") as zf:
        zf.writestr("META-INF/container.xml",
                    '<?xml version="1.0"?><container><rootfiles>'
                    '<rootfile full-path="score/band.xml"/></rootfiles></container>')
        zf.writestr("score/band.xml", plain.read_bytes())
    assert parse_events(mxl.read_bytes(), "band.mxl") == parse_events(plain.read_bytes(),
                                                                        "band.musicxml")
    kern = "**kern\n*M2/4\n4c\n8d\n8e\n4r\n4g\n*-\n"
    assert parse_events(kern, "tune.krn") == [(60, 1.0), (62, 0.5), (64, 0.5), (None, 1.0),
                                              (67, 1.0)]


def test_an_abc_file_of_several_tunes_reads_them_in_order():
    """A tune book (several X: tunes in one file) gives its tunes one after another."""
    two = "X:1\nL:1/4\nK:C\nC D E F\n\nX:2\nL:1/4\nK:C\nG A B c\n"
    assert [p for p, _ in parse_events(two, "book.abc")] == [60, 62, 64, 65, 67, 69, 71, 72]
