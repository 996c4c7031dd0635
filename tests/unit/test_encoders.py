"""Encoders with their real packaged weights: dimension, normalisation,
determinism, and a float64 or library reference for the maths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from culturesim_ray.encoders import build_encoder
from culturesim_ray.encoders.text import passes
from culturesim_ray.encoders.tfidf import TfidfEncoder, tokenize

FLAGS = Path(__file__).resolve().parents[2] / "culturesim_ray" / "data" / "flags"

TEXTS = [
    "The Ottoman Empire ruled Anatolia and the Balkans from Istanbul for six centuries.",
    "Istanbul was the capital of the Ottoman state, which controlled Anatolia.",
    "Rice paddies need a lot of water during the growing season.",
    "Byzantine mosaics show saints on golden backgrounds.",
]


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


def test_minilm_shape_norm_and_meaning(minilm):
    r = minilm.encode(TEXTS)
    assert r.vectors.shape == (4, 384) and r.vectors.dtype == np.float32
    assert r.errors == [None] * 4
    np.testing.assert_allclose(np.linalg.norm(r.vectors, axis=1), 1.0, atol=1e-5)
    sims = r.vectors @ r.vectors.T
    # real weights: the paraphrase is nearer than the unrelated sentence
    assert sims[0, 1] > sims[0, 2] + 0.3


def test_minilm_deterministic_and_batch_independent(minilm):
    a = minilm.encode(TEXTS).vectors
    b = minilm.encode(TEXTS).vectors
    np.testing.assert_array_equal(a, b)
    alone = minilm.encode([TEXTS[2]]).vectors[0]  # no padding at all
    np.testing.assert_allclose(alone, a[2], atol=1e-5)


def test_passes_cover_every_window_once_in_length_order_within_the_budget():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 258, size=500).tolist()
    runs = passes(lengths, 2048)
    flat = [i for run in runs for i in run]
    assert sorted(flat) == list(range(500))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(len(run) * max(lengths[i] for i in run) <= 2048 for run in runs)
    # each run is as long as the budget allows: one more window would overflow it
    for run, nxt in zip(runs, runs[1:], strict=False):
        assert (len(run) + 1) * lengths[nxt[0]] > 2048
    assert passes([300, 5], 100) == [[1], [0]]  # a window over the budget goes alone
    assert passes([], 100) == []


def test_minilm_vectors_do_not_depend_on_the_tokens_per_pass():
    texts = TEXTS + ["A short one.", "word " * 900, ""]
    small = build_encoder("minilm", tokens_per_pass=256)  # one full window a pass
    large = build_encoder("minilm", tokens_per_pass=1 << 16)  # everything in one pass
    assert small.tokens_per_pass == 256 and large.tokens_per_pass == 1 << 16
    np.testing.assert_allclose(small.encode(texts).vectors, large.encode(texts).vectors,
                               atol=1e-5)


def test_minilm_matches_float64_reference(minilm):
    ref = build_encoder("minilm")
    ref.model = ref.model.double()
    got = minilm.encode(TEXTS).vectors.astype(np.float64)
    want = ref.encode(TEXTS).vectors  # cast to float32 at the end, computed in float64
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_minilm_bfloat16_stays_in_the_float32_space(minilm):
    texts = TEXTS + ["Kente cloth is woven in strips on narrow looms in Ghana.",
                     "Gamelan ensembles tune their bronze instruments as a set."]
    bf = build_encoder("minilm", precision="bfloat16")
    assert bf.precision == "bfloat16" and bf.model.dtype == torch.bfloat16
    got, want = bf.encode(texts).vectors, minilm.encode(texts).vectors
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # pooled in fp32
    cos = (got * want).sum(1)
    assert cos.min() > 0.99, cos
    # the nearest other text is the same one in both precisions
    np.testing.assert_array_equal(np.argsort(-(got @ want.T), 1)[:, 0], np.arange(len(texts)))


LONG = " ".join(TEXTS[i % 4] for i in range(50))  # ~612 tokens: three windows of 256


def _window_reference(encoder, ids: list[int]) -> np.ndarray:
    """Pooled over every token of every 254-token window, each window run alone (no
    batch, no padding), in the model's precision; normalised."""
    tok, total, count = encoder.tokenizer, 0.0, 0
    for start in range(0, len(ids), 254):
        w = torch.tensor([[tok.cls_token_id, *ids[start:start + 254], tok.sep_token_id]])
        with torch.inference_mode():
            h = encoder.model(input_ids=w, attention_mask=torch.ones_like(w),
                              token_type_ids=torch.zeros_like(w)).last_hidden_state[0]
        total, count = total + h.double().sum(0).numpy(), count + w.shape[1]
    v = total / count
    return v / np.linalg.norm(v)


def test_minilm_reads_a_long_text_whole_in_windows():
    ref = build_encoder("minilm")
    ref.model = ref.model.double()
    ids = ref.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert 2 * 254 < len(ids) <= 3 * 254
    want = _window_reference(ref, ids)
    enc = build_encoder("minilm")
    got = enc.encode([TEXTS[0], LONG, ""]).vectors  # batched with a short and an empty text
    np.testing.assert_allclose(got[1], want, atol=2e-5)
    np.testing.assert_allclose(enc.encode([LONG]).vectors[0], got[1], atol=1e-5)
    pieces, owner = enc.windows([TEXTS[0], LONG, ""])
    assert owner == [0, 1, 1, 1, 2] and [len(p) for p in pieces][1:4] == [254, 254, len(ids) - 508]
    # the first window alone is not the whole text: the rest is read
    assert float(got[1] @ enc.encode([LONG[:len(LONG) // 3]]).vectors[0]) < 0.9999


def test_minilm_windows_cap_and_truncation():
    from culturesim_ray.encoders.text import MiniLMEncoder

    enc = build_encoder("minilm")
    # a text that fits: the tokenizer's own truncating encoding, pooled as before
    batch = enc.tokenizer(TEXTS, padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
    with torch.inference_mode():
        h = enc.model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    before = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(TEXTS).vectors, before, atol=1e-5)
    # max_windows=1: plain truncation at 256 tokens, as the tokenizer would cut it
    cut = enc.tokenizer([LONG], truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        h1 = enc.model(**cut).last_hidden_state.mean(1)
    first = torch.nn.functional.normalize(h1, dim=-1).numpy()[0]
    np.testing.assert_allclose(MiniLMEncoder(max_windows=1).encode([LONG]).vectors[0], first,
                               atol=1e-5)
    # max_windows=2: the first 2 x 254 tokens read whole, the rest unread
    two = MiniLMEncoder(max_windows=2)
    ids = enc.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    ref = build_encoder("minilm")
    ref.model = ref.model.double()
    np.testing.assert_allclose(two.encode([LONG]).vectors[0],
                               _window_reference(ref, ids[:508]), atol=2e-5)
    with pytest.raises(ValueError, match="max_windows"):
        MiniLMEncoder(max_windows=0)


def test_precision_resolution():
    from culturesim_ray.encoders import resolve_precision

    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_precision("fp8", "cpu")


def test_e5_multilingual():
    e5 = build_encoder("e5")
    r = e5.encode(["Osmanlı İmparatorluğu", "The Ottoman Empire", "Recette de la pizza"])
    assert r.vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(r.vectors, axis=1), 1.0, atol=1e-5)
    s = r.vectors @ r.vectors.T
    assert s[0, 1] > s[0, 2]
    np.testing.assert_allclose(e5.encode(["The Ottoman Empire"]).vectors[0], r.vectors[1],
                               atol=1e-6)


def test_efficientnet_features_and_bad_file(tmp_path):
    enc = build_encoder("efficientnet")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    uris = [str(FLAGS / "italy.png"), str(broken), str(FLAGS / "france.png"),
            str(FLAGS / "japan.png"), str(tmp_path / "missing.png")]
    r = enc.encode(uris)
    assert r.vectors.shape == (5, 1280)
    assert r.errors[0] is None and r.errors[2] is None and r.errors[3] is None
    assert r.errors[1].startswith(f"uri: cannot read image {broken}")
    assert "missing.png" in r.errors[4]
    assert np.isnan(r.vectors[1]).all() and np.isnan(r.vectors[4]).all()
    ok = r.vectors[[0, 2, 3]]
    np.testing.assert_allclose(np.linalg.norm(ok, axis=1), 1.0, atol=1e-5)
    # pretrained features: two tricolours are nearer each other than a red disc on white
    assert ok[0] @ ok[1] > ok[0] @ ok[2]
    again = enc.encode([uris[0]]).vectors[0]
    np.testing.assert_allclose(again, ok[0], atol=1e-5)


def test_images_are_read_as_a_viewer_shows_them():
    """A photo stored sideways with an EXIF orientation tag is turned upright; 16-bit
    grey keeps its gradations (a plain RGB conversion clipped 99% of this ramp to
    white); transparent pixels are white, whatever colour lies under them."""
    import io

    from PIL import Image

    from culturesim_ray.encoders.image import load_image

    def saved(img: Image.Image, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    photo = Image.new("RGB", (300, 200), (200, 30, 30))  # blue above, red below
    photo.paste((30, 30, 200), (0, 0, 300, 100))
    tag = Image.Exif()
    tag[0x0112] = 6  # stored turned 90 degrees; a viewer turns it back
    sideways = saved(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=tag)
    upright = load_image(saved(photo, "JPEG", quality=95))
    assert np.abs(load_image(sideways) - upright).max() < 0.05  # JPEG noise only
    assert np.abs(load_image(saved(photo.transpose(Image.Transpose.ROTATE_90), "JPEG",
                                   quality=95)) - upright).max() > 0.5

    ramp = np.linspace(0, 65535, 300 * 300).reshape(300, 300).astype(np.uint16)
    grey = load_image(saved(Image.fromarray(ramp), "PNG"))
    expected = (np.rint(ramp / 257.0) - 127.0) / 128.0  # 8-bit grey, before the resize
    assert grey.shape == (224, 224, 3) and (grey > 0.99).mean() < 0.05
    assert abs(float(grey.mean()) - float(expected.mean())) < 0.02

    cutout = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    cutout.paste((255, 200, 0, 255), (100, 100, 200, 200))
    x = load_image(saved(cutout, "PNG"))
    assert np.allclose(x[0, 0], 1.0) and np.allclose(x[112, 112], [1.0, 73 / 128, -127 / 128])
    palette = cutout.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert np.allclose(load_image(saved(palette, "PNG", transparency=palette.getpixel((0, 0))))[0, 0],
                       1.0)


def test_a_large_jpeg_is_decoded_at_a_reduced_size():
    """A 1,600 x 1,200 photo is decoded at half size (both sides still >= 448) and
    gives nearly the pixels of the full decode, turned upright as well."""
    import io

    from PIL import Image

    from culturesim_ray.encoders.image import load_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1200, 0:1600]
    photo = np.stack([xx / 1600 * 255, yy / 1200 * 255, (xx + yy) % 400 / 400 * 255], -1)
    photo = np.clip(photo + rng.normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        assert img.draft(None, (448, 448)) is not None and img.size == (800, 600)
    full, drafted = load_image(data, draft=False), load_image(data)
    assert 0 < np.abs(full - drafted).max() < 0.1 and np.abs(full - drafted).mean() < 0.01
    tag = Image.Exif()
    tag[0x0112] = 8  # stored turned 270 degrees
    buf = io.BytesIO()
    Image.fromarray(photo).transpose(Image.Transpose.ROTATE_270).save(buf, "JPEG", quality=90,
                                                                       exif=tag)
    assert np.abs(load_image(buf.getvalue()) - drafted).mean() < 0.01


def test_efficientnet_chunks_give_the_same_vectors_and_errors(tmp_path):
    from culturesim_ray.encoders.image import EfficientNetEncoder

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    uris = [str(FLAGS / f) for f in ("italy.png", "france.png", "japan.png")]
    uris = uris[:2] + [str(broken)] + uris[2:]
    whole = EfficientNetEncoder(chunk=64, decode_threads=1).encode(uris)
    pieces = EfficientNetEncoder(chunk=2).encode(uris)  # a chunk boundary after the bad file
    threads = EfficientNetEncoder(chunk=64, decode_threads=3).encode(uris)  # decoded in parallel
    for r in (whole, pieces, threads):
        assert [e is None for e in r.errors] == [True, True, False, True]
        np.testing.assert_allclose(r.vectors, whole.vectors, atol=1e-5)  # nan rows equal too
    assert threads.errors[2].startswith(f"uri: cannot read image {broken}: UnidentifiedImageError")


def test_efficientnet_weights_are_the_packaged_ones():
    from culturesim_ray.encoders.image import efficientnet_weights_path

    enc = build_encoder("efficientnet")
    state = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
    for name, tensor in enc.model.state_dict().items():
        torch.testing.assert_close(tensor, state[name])


CORPUS = [
    "ottoman tiles and ottoman mosques in istanbul",
    "byzantine mosaics and byzantine churches",
    "persian carpets persian poetry hafez",
    "tiles mosaics carpets crafts of istanbul",
    "poetry of hafez and rumi",
]


def test_tfidf_matches_scikit_learn_float64():
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    enc = TfidfEncoder.fit(CORPUS, dim=3)
    vec = sk.TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w\w+\b",
                             dtype=np.float64)
    ref = vec.fit_transform(CORPUS).toarray()  # (n, V) float64
    ours = enc._sparse(CORPUS).to_dense().numpy()
    cols = [enc.index[t] for t in vec.get_feature_names_out()]
    np.testing.assert_allclose(ours[:, cols], ref, atol=1e-6)


def test_tfidf_lsa_captures_the_top_singular_subspace():
    enc = TfidfEncoder.fit(CORPUS, dim=3)
    x = enc._sparse(CORPUS).to_dense().numpy().astype(np.float64)
    comps = enc.components.astype(np.float64)  # (V, 3)
    np.testing.assert_allclose(comps.T @ comps, np.eye(3), atol=1e-5)
    s = np.linalg.svd(x, compute_uv=False)
    captured = np.linalg.norm(x @ comps) ** 2
    np.testing.assert_allclose(captured, (s[:3] ** 2).sum(), rtol=1e-4)


def test_tfidf_deterministic_roundtrip_and_unknown_words(tmp_path):
    a, b = TfidfEncoder.fit(CORPUS, dim=3), TfidfEncoder.fit(CORPUS, dim=3)
    np.testing.assert_array_equal(a.components, b.components)
    path = tmp_path / "tfidf.npz"
    a.save(str(path))
    c = TfidfEncoder.load(str(path))
    v = c.encode(["ottoman poetry", "zzz qqq"]).vectors
    np.testing.assert_allclose(v, a.encode(["ottoman poetry", "zzz qqq"]).vectors)
    assert v.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(v[0]), 1.0, atol=1e-6)
    assert not v[1].any()  # no known word: no direction


def test_tokenize_any_script():
    assert tokenize("Osmanlı İmparatorluğu, 1453 — حافظ") == ["osmanlı", "i̇mparatorluğu", "حافظ"]


def test_unknown_encoder_name():
    with pytest.raises(ValueError, match="unknown encoder 'clip'"):
        build_encoder("clip")


def test_tokenize_keeps_combining_marks():
    assert tokenize("भारतीय संस्कृति") == ["भारतीय", "संस्कृति"]
