"""The image -> text alignment (encoders/align.py): contrastive training on real
packaged pairs (Twemoji images, their Unicode names) finds held-out captions'
images far better than the untrained map; a saved alignment loads back exactly;
a file that is not one is refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from culturesim_ray.encoders.align import (
    AlignConfig,
    AlignedImageEncoder,
    ImageProjection,
    clip_loss,
    load_alignment,
    save_alignment,
    train_alignment,
)
from culturesim_ray.encoders.align_data import packaged_pairs, pair_features, recall_at, split


@pytest.fixture(scope="module")
def features():
    """128 packaged pairs spread over the whole set, through the real frozen encoders."""
    from culturesim_ray.encoders import registry

    pairs = packaged_pairs()
    pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, 128).astype(int)]
    x, t, kept = pair_features(pairs, registry.build_encoder("efficientnet"),
                               registry.build_encoder("minilm"))
    assert len(kept) == 128 and x.shape == (128, 1280) and t.shape == (128, 384)
    return x, t


def _project(model: ImageProjection, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_clip_loss_matches_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    scale = torch.tensor(2.0)
    logits = (np.exp(2.0) * a.double().numpy() @ b.double().numpy().T)

    def ce(m):
        m = m - m.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(m).sum(1)) - np.diag(m)))

    ref = 0.5 * (ce(logits) + ce(logits.T))
    assert float(clip_loss(a, b, scale)) == pytest.approx(ref, rel=1e-5)
    # a perfectly matched batch at a high scale costs next to nothing
    assert float(clip_loss(a, a, torch.tensor(4.6))) < float(clip_loss(a, b, torch.tensor(4.6)))


@pytest.mark.slow
def test_alignment_finds_held_out_captions_images(features):
    x, t = features
    tr, te = split(len(x), 32, seed=0)
    model, losses = train_alignment(x[tr], t[tr], AlignConfig(steps=150))
    assert losses[-1] < 0.5 * losses[0]
    untrained = recall_at(_project(ImageProjection(AlignConfig()), x[te]), t[te], (1, 5, 10))
    aligned = recall_at(_project(model, x[te]), t[te], (1, 5, 10))
    chance5 = 5 / 32
    assert aligned[5] >= 2 * chance5, (aligned, untrained)
    assert aligned[5] > untrained[5] + 0.15 and aligned[10] > untrained[10] + 0.15
    assert recall_at(_project(model, x[tr]), t[tr], (1,))[1] > 0.9  # fits what it saw


def test_training_is_deterministic_and_checks_shapes(features):
    x, t = features
    a, la = train_alignment(x[:40], t[:40], AlignConfig(steps=5, batch=16, seed=3))
    b, lb = train_alignment(x[:40], t[:40], AlignConfig(steps=5, batch=16, seed=3))
    assert la == lb
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="do not match"):
        train_alignment(x[:40], t[:40, :100], AlignConfig(steps=1))
    with pytest.raises(ValueError, match="steps"):
        AlignConfig(steps=0)


@pytest.mark.parametrize("hidden", [0, 32])
def test_save_load_roundtrip_is_exact(tmp_path, features, hidden):
    x, t = features
    model, _ = train_alignment(x[:32], t[:32], AlignConfig(steps=3, hidden=hidden))
    save_alignment(model, str(tmp_path), {"pairs": 32})
    back = load_alignment(str(tmp_path))
    assert back.cfg == model.cfg
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert np.array_equal(_project(model, x), _project(back, x))
    assert json.loads((tmp_path / "align.json").read_text())["meta"] == {"pairs": 32}


def test_a_bad_alignment_is_refused(tmp_path, features):
    x, t = features
    model, _ = train_alignment(x[:16], t[:16], AlignConfig(steps=1))
    save_alignment(model, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not an alignment"):
        load_alignment(str(tmp_path / "missing"))
    # a pickle carrying code is refused by weights_only loading, named
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"net.weight": Evil()}, tmp_path / "align.pt")
    with pytest.raises(ValueError, match="align.pt: not the weights"):
        load_alignment(str(tmp_path))
    # weights of another shape (a 2-layer map's) under a linear config
    other, _ = train_alignment(x[:16], t[:16], AlignConfig(steps=1, hidden=8))
    torch.save(other.state_dict(), tmp_path / "align.pt")
    with pytest.raises(ValueError, match="not the weights"):
        load_alignment(str(tmp_path))
    (tmp_path / "align.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not the weights"):
        load_alignment(str(tmp_path))
    (tmp_path / "align.json").write_text(json.dumps({"config": {"steps": 1, "bogus": 2}}))
    with pytest.raises(ValueError, match="bogus"):
        load_alignment(str(tmp_path))


def test_aligned_encoder_gives_the_projected_features(tmp_path, features):
    from culturesim_ray.encoders import registry
    from culturesim_ray.encoders.image import EfficientNetEncoder

    x, t = features
    model, _ = train_alignment(x[:32], t[:32], AlignConfig(steps=3))
    save_alignment(model, str(tmp_path))
    enc = registry.build_encoder("efficientnet-aligned", image_align=str(tmp_path))
    assert isinstance(enc, AlignedImageEncoder) and enc.dim == registry.get(enc.name).dim
    uris = [u for u, _ in packaged_pairs()[:3]] + [str(tmp_path / "missing.png")]
    res = enc.encode(uris)
    base = EfficientNetEncoder().encode(uris[:3]).vectors
    assert np.allclose(res.vectors[:3], _project(model, base), atol=1e-6)
    assert np.allclose(np.linalg.norm(res.vectors[:3], axis=1), 1.0, atol=1e-5)
    assert res.errors[3] and np.isnan(res.vectors[3]).all() and res.errors[:3] == [None] * 3


def test_pairs_files_read_as_the_corpus_reader_reads_tables(tmp_path):
    from culturesim_ray.cli_align import read_pairs

    (tmp_path / "p.csv").write_text("uri;caption\nimg/a.png;A red flag\n/abs/b.png; Blue \n")
    assert read_pairs(str(tmp_path / "p.csv")) == [(str(tmp_path / "img" / "a.png"), "A red flag"),
                                                   ("/abs/b.png", "Blue")]
    (tmp_path / "q.tsv").write_text("uri\tcaption\ns3://b/a.png\tA\nx.png\t \n")
    with pytest.raises(ValueError, match=r"q.tsv:3: empty uri or caption"):
        read_pairs(str(tmp_path / "q.tsv"))
    (tmp_path / "r.csv").write_text("uri,text\na.png,A\n")
    with pytest.raises(ValueError, match=r"pairs need the columns uri, caption \(missing caption\)"):
        read_pairs(str(tmp_path / "r.csv"))
