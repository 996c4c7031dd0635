"""Continued MLM pretraining (training/adapt.py) with the real packaged MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from culturesim_ray.training.adapt import (
    AdaptConfig,
    collate,
    lr_at,
    mask_tokens,
    mlm_loss,
    mlm_model,
    mlm_step,
    optimizer,
    save_encoder,
    token_windows,
)

TEXTS = ["Thou art more lovely and more temperate: rough winds do shake the darling buds of May.",
         "And God said, Let there be light: and there was light.",
         "Now is the winter of our discontent made glorious summer by this sun of York.",
         "In the beginning was the Word, and the Word was with God, and the Word was God."]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from culturesim_ray.encoders.text import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def test_masking_follows_bert_rules():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 200))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    special[:, 150:] = True  # padding
    masked, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, mask_rate=0.15,
                                 generator=g)
    chosen = labels != -100
    assert not chosen[special].any()  # CLS / SEP / padding never chosen
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original tokens
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    rate = chosen.sum().item() / (~special).sum().item()
    assert 0.13 < rate < 0.17
    as_mask = (masked[chosen] == 103).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert 0.75 < as_mask < 0.85 and 0.06 < kept < 0.14  # 80% [MASK], ~10% unchanged


def test_every_row_with_tokens_gets_a_prediction():
    g = torch.Generator().manual_seed(1)
    ids = torch.full((50, 4), 1500)
    special = torch.tensor([[True, False, True, True]] * 49 + [[True, True, True, True]])
    _, labels = mask_tokens(ids, special, 103, 30522, 0.01, g)
    assert ((labels != -100).sum(1)[:49] == 1).all()  # one real token: always chosen
    assert (labels[49] == -100).all()  # an all-special row has nothing to predict


def test_windows_cover_the_whole_text(tokenizer):
    long = " ".join(TEXTS * 5)
    windows = token_windows(tokenizer, [long, "  ", None], max_length=16)  # type: ignore[list-item]
    full = tokenizer(long, add_special_tokens=False)["input_ids"]
    assert [t for w in windows for t in w] == full
    assert max(len(w) for w in windows) == 14
    batch = collate(windows[:3], tokenizer)
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
    assert batch["special"][0, 0] and not batch["special"][0, 1]


def test_config_is_checked():
    with pytest.raises(ValueError, match="mask_rate"):
        AdaptConfig(mask_rate=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        AdaptConfig(max_steps=0)
    cfg = AdaptConfig(max_steps=10, warmup=0.2, lr=1.0)
    assert [round(lr_at(s, cfg), 3) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]


def test_mlm_steps_lower_the_loss_and_the_saved_encoder_embeds(tokenizer, tmp_path):
    from culturesim_ray.config import EmbedConfig
    from culturesim_ray.encoders import build_encoder
    from culturesim_ray.encoders.text import minilm_path
    from culturesim_ray.pipeline.embed_state import vector_settings

    torch.manual_seed(0)
    model = mlm_model(minilm_path(), seed=0)
    head = model.cls.predictions
    assert head.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(head.transform.dense.weight, torch.eye(384))  # head from the embeddings
    cfg = AdaptConfig(max_steps=8, lr=2e-4, batch_size=4, max_length=32, warmup=0.0)
    batch = collate(token_windows(tokenizer, TEXTS, cfg.max_length), tokenizer)

    def held_loss() -> float:  # the same masks before and after
        model.eval()
        with torch.no_grad():
            return float(mlm_loss(model, batch, tokenizer.mask_token_id, 0.3,
                                  torch.Generator().manual_seed(7)))

    before = held_loss()
    opt = optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    losses = [mlm_step(model, opt, batch, s, cfg, tokenizer.mask_token_id, g)
              for s in range(cfg.max_steps)]
    after = held_loss()
    assert after < 0.8 * before, (before, after, losses)

    out = save_encoder(model, tokenizer, minilm_path(), tmp_path / "adapted", {"steps": 8})
    assert json.loads((out / "adapt.json").read_text()) == {"steps": 8}
    adapted = build_encoder("minilm", text_model=str(out))  # the embed job's path
    base = build_encoder("minilm")
    a, b = adapted.encode(TEXTS).vectors, base.encode(TEXTS).vectors
    assert a.shape == (4, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) < 0.9999  # other weights, other vectors
    ecfg = EmbedConfig(text_model=str(out), text_encoder="minilm")
    settings = vector_settings(ecfg)["text"]
    assert settings["text_model"] == str(out)
    packaged = vector_settings(EmbedConfig(text_encoder="minilm"))["text"]["model_files"]
    assert settings["model_files"] != packaged
    with pytest.raises(ValueError, match="text_model"):
        EmbedConfig(text_model=str(out), text_encoder="e5")


def test_adapt_reads_the_texts_the_embed_job_would_embed(tmp_path):
    """The contract's own check on each row: a spreadsheet's `Text` columns and
    modality read, rows the embed job quarantines (no culture) and images left out."""
    from culturesim_ray.pipeline.adapt import _texts_of_file

    (tmp_path / "c.csv").write_text("Item_ID;Culture;Modality;Text;URI\n"
                                    "a;Greek;Text;Olive groves;\n"
                                    "b;;text;no culture;\n"
                                    "c;Greek;image;;g.png\n"
                                    "d;Irish;text;Fiddle reels;\n")
    got = [r["text"] for r in _texts_of_file({"file": str(tmp_path / "c.csv")}, None)]
    assert got == ["Olive groves", "Fiddle reels"]
