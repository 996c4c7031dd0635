"""`culturesim adapt` (Ray Train, real MiniLM) then `culturesim embed --text-model DIR`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TEXTS

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_adapt_then_embed_with_the_adapted_encoder(ray_session, tmp_path):
    from culturesim_ray.cli import main
    from culturesim_ray.encoders.text import MiniLMEncoder
    from culturesim_ray.pipeline.adapt import run_adapt
    from culturesim_ray.progress import Stage
    from culturesim_ray.runs import run_encoder_kwargs
    from culturesim_ray.training.adapt import AdaptConfig

    rows = [{"item_id": f"{c}-{i}", "culture": c, "modality": "text", "text": t}
            for c, texts in TEXTS.items() for i, t in enumerate(texts)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model = tmp_path / "adapted"
    args = ["adapt", str(corpus), "--out", str(model), "--max-steps", "6", "--batch-size",
            "4", "--max-length", "32", "--lr", "1e-4"]
    with Stage("adapt", unit="steps") as st:  # as `main(args)` runs it
        run_adapt(str(corpus), str(model), AdaptConfig(max_steps=6, batch_size=4,
                                                       max_length=32, lr=1e-4), log=st.log)
    assert (st.done, st.total) == (6, 6)  # the bar: the worker's steps of the total
    meta = json.loads((model / "adapt.json").read_text())
    assert meta["steps"] == 6 and len(meta["history"]) == 6
    assert (model / "model.safetensors").exists() and (model / "tokenizer.json").exists()
    assert main(args) == 0  # a rerun of a finished adaptation does nothing
    # a run that died after its last checkpoint: the rerun resumes there, trains no step
    checkpoints = sorted((model / "checkpoints").rglob("checkpoint_*"))
    (model / "adapt.json").unlink()
    (model / "model.safetensors").unlink()
    assert main(args) == 0
    assert sorted((model / "checkpoints").rglob("checkpoint_*")) == checkpoints
    assert json.loads((model / "adapt.json").read_text())["history"] == meta["history"]
    assert main([*args[:-1], "5e-5"]) == 2  # other settings into the same DIR: refused

    out = tmp_path / "embed"
    assert main(["embed", str(corpus), "--out", str(out), "--text-model", str(model),
                 "--actors", "1", "--cpus-per-actor", "0.5"]) == 0
    table = pq.read_table(out / "embeddings" / "text")
    assert table.num_rows == len(rows)
    by_id = dict(zip(table.column("item_id").to_pylist(),
                     np.stack(table.column("vector").to_numpy(zero_copy_only=False)),
                     strict=True))
    # the run's encoder (what serving rebuilds) is the adapted one, not the packaged one
    name, kwargs = run_encoder_kwargs(str(out), "text")
    assert name == "minilm" and kwargs["text_model"] == str(model)
    query = MiniLMEncoder(**kwargs).encode([rows[0]["text"]]).vectors[0]
    base = MiniLMEncoder().encode([rows[0]["text"]]).vectors[0]
    assert float(query @ by_id[rows[0]["item_id"]]) > 0.999
    assert float(base @ by_id[rows[0]["item_id"]]) < 0.999  # adaptation moved the vector
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["text"]["text_model"] == str(model)
