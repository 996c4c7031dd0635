"""Where the service finds a run's parts: the demo layout (RUN/embed, RUN/train,
RUN/allpairs), or a train run's own directory with the embed run its manifest names
(the graph stage's manifest for runs written before the train manifest kept it)."""

from __future__ import annotations

import json

from culturesim_ray.layout import TrainLayout
from culturesim_ray.serving.predictor import RunPaths


def test_the_demo_layout_and_a_train_directory(tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "model.pt").write_bytes(b"\0")
    paths = RunPaths.of(str(run))
    assert (paths.embed, paths.train, paths.allpairs) == (
        str(run / "embed"), str(run / "train"), None)

    train = tmp_path / "elsewhere" / "t"
    train.mkdir(parents=True)
    (train / "model.pt").write_bytes(b"\0")
    assert TrainLayout(str(train)).embed_input() is None
    assert RunPaths.of(str(train)).train == str(train / "train")  # nothing names an embed run
    (train / "graph").mkdir()
    (train / "graph" / "manifest.json").write_text(json.dumps({"job": "graph", "input": "/old/e"}))
    assert TrainLayout(str(train)).embed_input() == "/old/e"  # a run from before
    (train / "manifest.json").write_text(json.dumps({"job": "train", "input": "/data/e"}))
    paths = RunPaths.of(str(train))
    assert (paths.embed, paths.train, paths.allpairs) == ("/data/e", str(train), None)
