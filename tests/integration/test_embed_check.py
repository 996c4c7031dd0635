"""`culturesim embed --check`: the corpus read and validated by the job's own
stages, nothing embedded or written, and the counts a run then gives."""

from __future__ import annotations

from conftest import FLAGS, corpus_rows, write_jsonl
from culturesim_ray.cli import main
from culturesim_ray.config import EmbedConfig
from culturesim_ray.pipeline.embed import run_embed
from culturesim_ray.pipeline.embed_check import run_check

CFG = EmbedConfig(num_actors=1, batch_size=8, blocks=2, uri_roots=[str(FLAGS)])


def _messy(tmp_path):
    rows = corpus_rows()
    rows += [{**rows[0], "text": "the same id again"},  # duplicate item_id
             {"item_id": "gone", "culture": "Greek", "modality": "image",
              "uri": str(FLAGS / "atlantis.png")},  # a file that is not there
             {"item_id": "web", "culture": "Greek", "modality": "image",
              "uri": "https://example.org/flag.png"},
             {"item_id": "lower", "culture": "greek", "modality": "text", "text": "Olive groves."}]
    return write_jsonl(tmp_path / "corpus.jsonl", rows)


def test_the_check_counts_what_a_run_then_embeds_and_writes_nothing(ray_session, tmp_path,
                                                                    capsys):
    corpus, out = _messy(tmp_path), tmp_path / "out"
    check = run_check(str(corpus), str(out), CFG, log=lambda _: None)
    assert not out.exists()
    assert (check.rows_in, check.usable) == (16, {"text": 10, "image": 3, "sequence": 0})
    assert check.reasons == {"item_id": 1, "uri": 2}
    assert [e.split(": ", 1)[1].split(":")[0] for e in check.examples] == ["item_id", "uri",
                                                                            "uri"]
    assert check.items["image"] == {"Greek": 1, "Persian": 1, "Turkish": 1}
    assert check.items["text"]["greek"] == 1 and check.cultures == 4
    assert check.encoder.startswith("minilm (auto: 0 of 10 sampled texts")
    assert any("'Greek' and 'greek'" in n for n in check.notes)
    report = run_embed(str(corpus), str(out), CFG, log=lambda _: None)
    assert (report.embedded, report.quarantined) == (sum(check.usable.values()),
                                                     sum(check.reasons.values()))
    assert report.reasons == check.reasons
    # after the run: a check says a run resumes; other settings would be refused
    again = run_check(str(corpus), str(out), CFG, log=lambda _: None)
    assert again.done == 13 and again.refused is None
    args = ["embed", str(corpus), "--out", str(out), "--check", "--uri-root", str(FLAGS),
            "--text-encoder", "tfidf"]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "a run into this --out would be refused: text: encoder: 'minilm' -> 'tfidf'" in printed
    assert printed.rstrip().endswith("embed --check: nothing was embedded or written")
