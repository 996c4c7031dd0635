"""The embed job's default text encoder `auto` on real corpora: English texts are
embedded with minilm, a corpus mostly in scripts its vocabulary cannot read with e5;
the choice is printed, recorded, and kept when the run is resumed."""

from __future__ import annotations

import json

from conftest import FLAGS, corpus_rows, write_jsonl
from culturesim_ray.config import EmbedConfig
from culturesim_ray.pipeline.embed import run_embed

CFG = EmbedConfig(num_actors=1, batch_size=8, blocks=2)
RU = ["Москва — столица России и крупнейший город страны.",
      "Борщ — суп из свёклы, капусты и других овощей.",
      "Балалайка — русский народный струнный инструмент.",
      "Эрмитаж — один из крупнейших художественных музеев мира."]


def _rows(extra: int) -> list[dict]:
    rows = corpus_rows(with_image=False)
    return rows + [{"item_id": f"ru-{i}", "culture": "Russian", "modality": "text",
                    "text": RU[i % len(RU)] + f" ({i})"} for i in range(extra)]


def test_auto_reads_english_with_minilm_and_cyrillic_with_e5(ray_session, tmp_path):
    lines: list[str] = []
    report = run_embed(str(write_jsonl(tmp_path / "en.jsonl", _rows(0))), str(tmp_path / "en"),
                       CFG, log=lines.append)
    manifest = json.loads((tmp_path / "en" / "manifest.json").read_text())
    assert manifest["encoders"]["text"]["name"] == "minilm"
    assert manifest["text_encoder_choice"]["chosen"] == "minilm"
    assert manifest["config"]["text_encoder"] == "minilm"
    assert manifest["text_coverage"]["poorly_covered"] == 0  # the sample auto looked at
    assert any(m.startswith("text encoder minilm (auto: 0 of ") for m in lines)
    assert report.notes == []

    corpus = write_jsonl(tmp_path / "ru.jsonl", _rows(12))
    lines.clear()
    report = run_embed(str(corpus), str(tmp_path / "ru"), CFG, log=lines.append)
    manifest = json.loads((tmp_path / "ru" / "manifest.json").read_text())
    assert manifest["encoders"]["text"] == {"name": "e5", "dim": 384}
    choice = manifest["text_encoder_choice"]
    assert choice["chosen"] == "e5" and "(cyrillic script)" in choice["why"]
    fingerprint = json.loads((tmp_path / "ru" / "fingerprint.json").read_text())
    assert fingerprint["text"]["encoder"] == "e5"
    assert report.notes == []  # nothing to tell: the texts were read by an encoder that can
    assert any(m.startswith("text encoder e5 (auto: 12 of ") for m in lines)
    # resumed with auto again: the run keeps e5 and has nothing left to embed
    lines.clear()
    again = run_embed(str(corpus), str(tmp_path / "ru"), CFG, log=lines.append)
    assert again.skipped_done == report.embedded and again.embedded == report.embedded
    assert "text encoder e5 (auto: the encoder this run was embedded with)" in lines


def test_auto_on_a_corpus_without_texts(ray_session, tmp_path):
    rows = [r for r in corpus_rows(with_image=True) if r["modality"] == "image"]
    cfg = CFG.model_copy(update={"uri_roots": [str(FLAGS)]})
    report = run_embed(str(write_jsonl(tmp_path / "img.jsonl", rows)), str(tmp_path / "out"),
                       cfg, log=lambda _m: None)
    assert report.embedded == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["text_encoder_choice"] == {"given": "auto", "chosen": "minilm",
                                              "why": "no texts to sample"}
    assert set(manifest["encoders"]) == {"image"}
