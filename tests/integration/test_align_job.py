"""`culturesim align` on a few packaged pairs, then `culturesim embed --image-align
DIR` of a tiny corpus with images: the image vectors written are the aligned ones
(384-d, in MiniLM's space), the fingerprint records the alignment's digest, and
the run's encoder (what serving rebuilds) is the aligned one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_align_then_embed_uses_the_aligned_vectors(ray_session, tmp_path):
    from culturesim_ray.cli import main
    from culturesim_ray.encoders.align import load_alignment
    from culturesim_ray.encoders.align_data import packaged_pairs
    from culturesim_ray.encoders.image import EfficientNetEncoder
    from culturesim_ray.runs import run_encoder_kwargs

    pairs = packaged_pairs()[::200][:8]
    pq.write_table(pa.table({"uri": [u for u, _ in pairs], "caption": [c for _, c in pairs]}),
                   tmp_path / "pairs.parquet")
    align = tmp_path / "align"
    assert main(["align", "--out", str(align), "--pairs", str(tmp_path / "pairs.parquet"),
                 "--steps", "20"]) == 0
    meta = json.loads((align / "align.json").read_text())["meta"]
    assert meta["pairs"] == 8 and meta["loss_last"] < meta["loss_first"]

    (tmp_path / "img").mkdir()
    images = []
    for u, _ in pairs[:4]:  # the corpus's own files, under its folder
        images.append(str(tmp_path / "img" / u.rsplit("/", 1)[-1]))
        shutil.copy(u, images[-1])
    rows = [{"item_id": f"img-{i}", "culture": ["a", "b"][i % 2], "modality": "image",
             "uri": u} for i, u in enumerate(images)]
    rows += [{"item_id": f"txt-{i}", "culture": ["a", "b"][i % 2], "modality": "text",
              "text": c} for i, (_, c) in enumerate(pairs[:4])]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "embed"
    assert main(["embed", str(corpus), "--out", str(out), "--image-align", str(align),
                 "--actors", "1", "--cpus-per-actor", "0.5"]) == 0
    table = pq.read_table(out / "embeddings" / "image").sort_by("item_id")
    assert table.num_rows == 4 and set(table.column("encoder").to_pylist()) == {
        "efficientnet-aligned"}
    written = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    assert written.shape == (4, 384)
    import torch

    with torch.no_grad():
        expected = load_alignment(str(align))(
            torch.from_numpy(EfficientNetEncoder().encode(images).vectors)).numpy()
    assert np.allclose(written, expected, atol=1e-5)
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["image"]["encoder"] == "efficientnet-aligned" and fp["image"]["align_files"]
    name, kwargs = run_encoder_kwargs(str(out), "image")
    assert name == "efficientnet-aligned" and kwargs["image_align"] == str(align)
    # another alignment into the same run is refused, never mixed
    assert main(["align", "--out", str(tmp_path / "other"), "--pairs",
                 str(tmp_path / "pairs.parquet"), "--steps", "3"]) == 0
    assert main(["embed", str(corpus), "--out", str(out), "--image-align",
                 str(tmp_path / "other"), "--actors", "1",
                 "--cpus-per-actor", "0.5"]) == 2
