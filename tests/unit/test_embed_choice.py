"""The text encoder `auto` (`pipeline.embed_choice`): the rule on the vocabulary
sample, and what needs no sample (adapted weights, a run's recorded encoder); the
encoder pool's sizes (`pipeline.embed.pool_sizes`)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.encoders.coverage import NOTE_SHARE, CoverageCount
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.pipeline.embed import pool_sizes
from culturesim_ray.pipeline.embed_choice import choose, resolve_text_encoder


def test_auto_picks_the_multilingual_encoder_from_the_notes_share_on():
    n = 200
    at = int(NOTE_SHARE * n)
    chosen, why = choose(CoverageCount("minilm", n, at, Counter({"CYRILLIC": at - 5,
                                                                 "ARABIC": 5})))
    assert chosen == registry.AUTO_FALLBACK == "e5"
    assert why == ("40 of 200 sampled texts (20%) are cut by minilm's vocabulary into single "
                   "characters or unknown tokens (cyrillic, arabic script)")
    chosen, why = choose(CoverageCount("minilm", n, at - 1, Counter({"CYRILLIC": at - 1})))
    assert chosen == "minilm" and why.startswith("39 of 200 sampled texts (20%) poorly")
    assert choose(None) == ("minilm", "no texts to sample")
    assert choose(CoverageCount("minilm")) == ("minilm", "no texts to sample")


def test_auto_is_the_default_and_must_be_resolved_before_use():
    cfg = EmbedConfig()
    assert cfg.text_encoder == registry.AUTO
    with pytest.raises(ValueError, match="resolved by the embed job"):
        cfg.encoder("text")
    assert cfg.encoder("image") == "efficientnet"
    assert cfg.with_text_encoder("e5").encoder("text") == "e5"
    with pytest.raises(ValueError, match="unknown text encoder 'efficientnet'"):
        cfg.with_text_encoder("efficientnet")
    with pytest.raises(ValueError, match="unknown image encoder 'auto'"):
        EmbedConfig(image_encoder="auto")
    # adapted MiniLM weights work with auto (they mean minilm), and not with e5
    assert EmbedConfig(text_model="/w").auto_text_encoder_fixed == "minilm"
    assert EmbedConfig().auto_text_encoder_fixed is None
    assert EmbedConfig(text_encoder="e5").auto_text_encoder_fixed is None
    with pytest.raises(ValueError, match="text_model applies"):
        EmbedConfig(text_encoder="e5", text_model="/w")


def test_what_auto_resolves_to_without_a_sample(tmp_path):
    layout = EmbedLayout(str(tmp_path / "run"))
    given = EmbedConfig(text_encoder="muse")
    assert resolve_text_encoder(given, layout, None) == (given, None, None)
    # nothing recorded and no sample yet: still auto
    cfg, choice, sample = resolve_text_encoder(EmbedConfig(), layout, None)
    assert (cfg.text_encoder, choice, sample) == (registry.AUTO, None, None)
    # a run that recorded its encoder keeps it
    (tmp_path / "run").mkdir()
    with open(layout.fingerprint, "w") as fh:
        json.dump({"text": {"encoder": "e5"}, "image": {"encoder": "efficientnet"}}, fh)
    cfg, choice, _ = resolve_text_encoder(EmbedConfig(), layout, None)
    assert cfg.text_encoder == "e5"
    assert choice == {"given": "auto", "chosen": "e5",
                      "why": "the encoder this run was embedded with"}
    # adapted weights mean minilm, even over a run of e5 (its fingerprint then refuses)
    cfg, choice, _ = resolve_text_encoder(EmbedConfig(text_model="/w"), layout, None)
    assert cfg.text_encoder == "minilm" and choice["chosen"] == "minilm"


def test_the_notes_come_from_the_chosen_encoders_sample():
    """The sample `auto` took with minilm gives the job's (and the check's) notes
    when minilm is chosen; when e5 is chosen, minilm's 'cut into characters' note is
    not the run's (e5 has no vocabulary check: no sample, no note)."""
    from culturesim_ray.pipeline.embed_choice import choice_line, coverage_notes

    sample = CoverageCount("minilm", 100, 60, Counter({"CYRILLIC": 60}))
    minilm = EmbedConfig(text_encoder="minilm")
    coverage, notes = coverage_notes(sample, [], minilm)
    assert coverage is sample and len(notes) == 1 and "CYRILLIC".lower() in notes[0].lower()
    assert coverage_notes(sample, [], EmbedConfig(text_encoder="e5")) == (None, [])
    assert choice_line({"chosen": "e5", "why": "60 of 100"}) == "e5 (auto: 60 of 100)"


def test_the_encoder_pool_starts_with_an_actor_per_batch_up_to_num_actors():
    cfg = EmbedConfig(num_actors=4, min_actors=1, batch_size=64)
    assert pool_sizes(720, cfg) == {"min_size": 1, "max_size": 4, "initial_size": 4}
    assert pool_sizes(130, cfg)["initial_size"] == 3  # three batches
    assert pool_sizes(12, cfg)["initial_size"] == 1  # one batch: one model loaded
    fixed = EmbedConfig(num_actors=2, min_actors=2)
    assert pool_sizes(1, fixed) == {"min_size": 2, "max_size": 2, "initial_size": 2}
    # min_actors above num_actors is capped, as the pool always was
    assert pool_sizes(10_000, EmbedConfig(num_actors=2, min_actors=5))["min_size"] == 2
