"""A cross-modal query answered over real HTTP: `culturesim align` on packaged
pairs, an embed run whose flag images are aligned to MiniLM's space, a short
train run, the Serve app deployed from serve_configs/local.yaml. A text query
with `cross_modal: true` ranks the cultures by their images; the answer equals
the in-process service's, and differs from the same-modality answer."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from conftest import FLAGS, corpus_rows, served, write_jsonl

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

QUERY = "A red flag with a white crescent moon and star."


@pytest.fixture(scope="module")
def aligned_run(_ray_instance, tmp_path_factory):
    from culturesim_ray.cli import main
    from culturesim_ray.config import AllPairsConfig, EmbedConfig
    from culturesim_ray.encoders.align_data import packaged_pairs
    from culturesim_ray.pipeline.allpairs import run_allpairs
    from culturesim_ray.pipeline.embed import run_embed
    from culturesim_ray.pipeline.train import run_train

    tmp = tmp_path_factory.mktemp("cross")
    pairs = packaged_pairs()[::200][:8]
    pq.write_table(pa.table({"uri": [u for u, _ in pairs], "caption": [c for _, c in pairs]}),
                   tmp / "pairs.parquet")
    assert main(["align", "--out", str(tmp / "align"), "--pairs", str(tmp / "pairs.parquet"),
                 "--steps", "20"]) == 0
    run = tmp / "run"
    quiet = {"log": lambda *_: None}
    run_embed(str(write_jsonl(tmp / "c.jsonl", corpus_rows())), str(run / "embed"),
              EmbedConfig(batch_size=8, uri_roots=[str(FLAGS)], image_align=str(tmp / "align")),
              **quiet)
    run_train(str(run / "embed"), str(run / "train"), num_workers=1,
              stages=((1, 1), (2, 1), (3, 1)), steps_per_epoch=2, hidden=32, out_dim=16,
              queue_size=16, **quiet)
    run_allpairs(str(run / "embed"), str(run / "allpairs"), AllPairsConfig(k=2), **quiet)
    return run


@pytest.fixture(scope="module")
def service(aligned_run):
    with served(aligned_run) as url:
        yield url


def test_a_cross_modal_text_query_over_http_equals_the_in_process_answer(service, aligned_run):
    from culturesim_ray.serving.predictor import RunPaths, SimilarityService

    res = requests.post(f"{service}/v1/similar",
                        json={"text": QUERY, "k": 3, "cross_modal": True}, timeout=60)
    assert res.status_code == 200, res.text
    got = res.json()["general"]
    assert len(got) == 3
    svc = SimilarityService(RunPaths.of(str(aligned_run)))
    ref = svc.similar("text", QUERY, k=3, cross_modal=True)["general"]
    assert [g["culture"] for g in got] == [g["culture"] for g in ref]
    tol = 1e-5 if svc.encoders.encoder("text").precision == "float32" else 2e-3
    for a, b in zip(got, ref, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=tol)
    # the image slot answered it: the same text against the texts scores otherwise
    same = svc.similar("text", QUERY, k=3)["general"]
    assert [round(g["score"], 4) for g in same] != [round(g["score"], 4) for g in ref]
