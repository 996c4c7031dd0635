"""The encoder registry is the one place encoder names live (issue 17, item 5)."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from culturesim_ray.config import EmbedConfig
from culturesim_ray.encoders import registry
from culturesim_ray.schema import MODALITIES

ENCODERS = Path(registry.__file__).parent


def test_every_modality_has_a_registered_default():
    assert set(registry.MODALITIES) == set(MODALITIES)
    for m in MODALITIES:
        assert registry.DEFAULTS[m] in registry.names(m)
        # the text default is `auto` (DEFAULTS["text"] unless the texts need AUTO_FALLBACK)
        cfg = EmbedConfig()
        assert (cfg.text_encoder if m == "text" else cfg.encoder(m)) == (
            registry.AUTO if m == "text" else registry.DEFAULTS[m])
    assert registry.AUTO_FALLBACK in registry.names("text")


def test_config_accepts_registered_names_and_names_the_known_ones():
    for name in registry.names("text"):
        assert EmbedConfig(text_encoder=name).text_encoder == name
    with pytest.raises(ValueError, match=r"unknown text encoder 'clip' \(known: minilm"):
        EmbedConfig(text_encoder="clip")
    with pytest.raises(ValueError, match="unknown image encoder 'minilm'"):
        EmbedConfig(image_encoder="minilm")  # a text encoder is no image encoder


def test_cli_choices_are_the_registry():
    from culturesim_ray.cli import add_embed_args

    p = argparse.ArgumentParser()
    add_embed_args(p)
    choices = {a.dest: tuple(a.choices) for a in p._actions if a.choices}
    assert choices["text_encoder"] == (registry.AUTO, *registry.names("text"))
    assert choices["image_encoder"] == registry.names("image")


def test_settings_are_config_fields_and_factories_resolve():
    fields = set(EmbedConfig.model_fields)
    for spec in registry.REGISTRY.values():
        assert set(spec.settings) <= fields, spec.name
        assert set(spec.fit_settings) <= fields, spec.name
        assert callable(registry._resolve(spec.factory)), spec.name
        if spec.weights:
            assert Path(registry.weights_path(spec.name)).exists(), spec.name


def test_encoder_kwargs_from_config():
    cfg = EmbedConfig(max_length=77)
    assert registry.encoder_kwargs("minilm", cfg) == {"max_length": 77, "max_windows": 16}
    assert registry.encoder_kwargs("tfidf", cfg, "/runs/x/models/tfidf.npz") == {
        "path": "/runs/x/models/tfidf.npz"}
    assert registry.encoder_kwargs("efficientnet", cfg) == {}


def test_register_refuses_a_taken_name_and_a_bad_modality():
    spec = registry.get("minilm")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)
    with pytest.raises(ValueError, match="modality 'audio'"):
        registry.register(registry.EncoderSpec("x", "audio", "os:getcwd", 1))


def test_built_encoder_reports_its_registered_name_and_dim():
    enc = registry.build_encoder("minilm")
    spec = registry.get("minilm")
    assert (enc.name, enc.modality, enc.dim) == (spec.name, spec.modality, spec.dim)
    assert enc.encode(["Ottoman calligraphy"]).vectors.shape == (1, spec.dim)


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_no_import_cycle_between_base_registry_and_encoders():
    concrete = {f"culturesim_ray.encoders.{p.stem}" for p in ENCODERS.glob("*.py")
                if p.stem not in ("__init__", "base", "registry")}
    assert not _imports(ENCODERS / "base.py") & concrete
    assert not _imports(ENCODERS / "registry.py") & (concrete | {"culturesim_ray.encoders.base"})
    # reading the registry (a config validator, argparse) loads no model code
    code = ("import sys, culturesim_ray.config, culturesim_ray.encoders.registry as r; "
            "r.names(); print(sorted(m for m in sys.modules if m.startswith('culturesim_ray.enc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(out.stdout.strip()))
    assert not loaded & concrete, loaded
